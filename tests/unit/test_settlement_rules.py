"""Settlement's pure rules: prices, rounding, netting (the worked example of
docs/settlement.md, figure for figure) and the reconciliation matcher."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from gateway.domain.errors import InvalidArgument
from settlement.domain import reconcile as dr
from settlement.domain.netting import Statement, netting
from settlement.domain.periods import Period, parse_period, parse_period_name
from settlement.domain.pricing import (
    Bucket,
    Component,
    PriceList,
    figures,
    line_exact,
    parse_fx_rate,
    parse_price,
    plain,
    round_minor,
    to_base,
)

T = datetime(2026, 1, 1, tzinfo=UTC)


def prices(pid: str, currency: str = "USD", **kw: object) -> PriceList:
    return PriceList(pid, pid, T, currency, **kw)  # type: ignore[arg-type]


WORKED = {
    # partner: (price list, buckets, currency, fx rate)
    "hotel": (
        prices(
            "hotel",
            issue_price=Decimal("0.0125"),
            fee_per_transaction_minor=2,
            fee_percent=Decimal("0.5"),
        ),
        [
            Bucket(Component.ISSUED, "hotel", False, 10_000, 0, 4),
            Bucket(Component.ISSUED, "hotel", False, -1_000, 0, 0),
        ],
        "USD",
        Decimal(1),
    ),
    "taxi": (
        prices("taxi", redemption_rate=Decimal("0.0092"), fee_percent=Decimal("0.5")),
        [Bucket(Component.REDEEMED, "taxi", False, -6_000, 0, 3)],
        "USD",
        Decimal(1),
    ),
    "air": (
        prices("air", conversion_price=Decimal("0.014")),
        [Bucket(Component.CONVERTED, "air", False, -2_000, 1_000, 0)],
        "USD",
        Decimal(1),
    ),
    "maple": (
        prices("maple", "CAD", issue_price=Decimal("0.016"), redemption_rate=Decimal("0.0125")),
        [
            Bucket(Component.ISSUED, "maple", False, 2_000, 0, 2),
            Bucket(Component.REDEEMED, "maple", False, -500, 0, 1),
        ],
        "CAD",
        Decimal("1.38"),
    ),
    "ocean": (
        prices("ocean", charity_value=Decimal("0.01")),
        [Bucket(Component.DONATED, "ocean", False, -1_000, 0, 0)],
        "USD",
        Decimal(1),
    ),
}
EXPECTED = {  # (owed, due, net, net in USD), minor units: the table in docs/settlement.md
    "hotel": (11_314, 0, -11_314, -11_314),
    "taxi": (28, 5_520, 5_492, 5_492),
    "air": (0, 1_400, 1_400, 1_400),
    "maple": (3_200, 625, -2_575, -1_866),
    "ocean": (0, 1_000, 1_000, 1_000),
}


def _statement(pid: str) -> Statement:
    price_list, buckets, currency, rate = WORKED[pid]
    f = figures(buckets, {pid: price_list}, 2)
    return Statement(
        "2026-03",
        pid,
        currency,
        2,
        f.points_issued,
        f.points_redeemed,
        f.points_converted,
        f.units_converted,
        f.points_donated,
        f.points_matched,
        f.points_expired,
        f.issue_minor,
        f.redemption_minor,
        f.conversion_minor,
        f.donation_minor,
        f.fee_minor,
        f.adjustment_minor,
        f.late_minor,
        f.owed_minor,
        f.due_minor,
        f.net_minor,
        rate,
        to_base(f.net_minor, rate, 2, 2),
        0,
        1,
        T,
    )


@pytest.mark.parametrize("pid", sorted(WORKED))
def test_worked_example_statements(pid: str) -> None:
    s = _statement(pid)
    assert (s.owed_minor, s.due_minor, s.net_minor, s.net_base_minor) == EXPECTED[pid]


def test_worked_example_netting() -> None:
    n = netting("2026-03", [_statement(p) for p in WORKED], "USD", 2, T)
    m = n.margin
    assert m.total == 5_288
    assert sum(s.net_base_minor for s in n.positions) + m.total == 0
    parts = (
        m.issue_revenue,
        m.fee_revenue,
        m.redemption_cost,
        m.conversion_cost,
        m.charity_payouts,
        m.adjustments,
        m.fx_rounding,
    )
    assert parts == (13_569, 92, -5_973, -1_400, -1_000, 0, 0)
    assert sum(parts) == m.total
    assert dict(n.margins_by_currency) == {"CAD": 2_575, "USD": 11_314 - 5_492 - 1_400 - 1_000}


def test_rounding_is_half_to_even_once_per_bucket() -> None:
    p = prices("p", issue_price=Decimal("0.00005"))  # half a cent for 100 points
    one = figures([Bucket(Component.ISSUED, "p", False, 100, 0, 0)], {"p": p}, 2)
    three = figures([Bucket(Component.ISSUED, "p", False, 300, 0, 0)], {"p": p}, 2)
    assert (one.issue_minor, three.issue_minor) == (0, 2)  # 0.5 -> 0, 1.5 -> 2
    # Three lines of 100 points: per-line rounding would give 0; the bucket gives 2.
    assert sum(round_minor(line_exact(Component.ISSUED, 100, 0, p, 2, False)) for _ in "abc") == 0


def test_late_buckets_and_adjustments_are_reported_apart() -> None:
    p = prices("p", issue_price=Decimal("0.01"), redemption_rate=Decimal("0.01"))
    f = figures(
        [
            Bucket(Component.ISSUED, "p", False, 1_000, 0, 0),
            Bucket(Component.REDEEMED, "p", True, -200, 0, 0),
        ],
        {"p": p},
        2,
        [500, -125],
    )
    assert (f.issue_minor, f.redemption_minor, f.late_minor) == (1_000, 200, 200)
    assert (f.manual_due_minor, f.manual_owed_minor) == (500, 125)
    assert f.adjustment_minor == 500 - 125 + 200
    assert f.net_minor == 200 + 500 - 1_000 - 125


def test_expired_points_cost_nothing_and_show_breakage() -> None:
    p = prices("p", issue_price=Decimal("0.02"))
    f = figures([Bucket(Component.EXPIRED, "p", False, -700, 0, 0)], {"p": p}, 2)
    assert (f.points_expired, f.net_minor, f.breakage_minor) == (700, 0, 1_400)


@pytest.mark.parametrize(
    "raw", ["-1", "abc", "1e3", " 1", "NaN", "Infinity", "0.0000000000001", "1000001"]
)
def test_bad_prices_are_refused(raw: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_price(raw, "issue")
    assert caught.value.reason == "INVALID_PRICE"


def test_prices_and_rates() -> None:
    assert parse_price("", "x") == 0 and parse_price("0.0125", "x") == Decimal("0.0125")
    assert plain(Decimal("1E+2")) == "100" and plain(Decimal("0.01250")) == "0.0125"
    with pytest.raises(InvalidArgument):
        parse_fx_rate("0")
    assert to_base(-2_575, Decimal("1.38"), 2, 2) == -1_866
    assert to_base(1_000, Decimal("150"), 0, 2) == 667  # JPY 1,000 at 150 per USD


def test_periods() -> None:
    march = parse_period_name("settlementPeriods/2026-03")
    assert (march.start, march.end) == (T.replace(month=3), T.replace(month=4))
    assert parse_period("2026-12").next() == Period(2027, 1)
    assert Period(2027, 1).previous() == Period(2026, 12)
    for bad in ("2026-13", "2026-3", "settlementPeriods/2026-03", "9999-12"):
        with pytest.raises(InvalidArgument):
            parse_period(bad)


async def _ledger(*entries: tuple[str, int]) -> AsyncIterator[dr.LedgerEntry]:
    for reference, points in entries:
        yield dr.LedgerEntry(reference, points, (f"members/m/transactions/{reference}",))


async def test_matcher_finds_each_kind_and_nothing_else() -> None:
    file = dr.parse_file(
        "\ufeffpartner_reference,points,note\r\nA,10,x\r\nB,5,\r\nB,-2,\r\nD,7,\r\n\r\n".encode()
    )
    result = await dr.match(file, _ledger(("A", 10), ("B", 4), ("C", -3)))
    assert (result.matched_count, result.discrepancy_count) == (1, 3)
    assert [
        (d.kind, d.partner_reference, d.ledger_points, d.file_points, d.file_lines)
        for d in result.discrepancies
    ] == [
        (dr.Kind.AMOUNT_MISMATCH, "B", 4, 3, (3, 4)),
        (dr.Kind.MISSING_IN_FILE, "C", -3, 0, ()),
        (dr.Kind.MISSING_IN_LEDGER, "D", 0, 7, (5,)),
    ]
    assert (result.file_points_total, result.ledger_points_total) == (20, 11)


@pytest.mark.parametrize(
    ("content", "field"),
    [
        (b"reference,points\nA,1\n", "file_content"),
        (b"partner_reference,points\nA,one\n", "file_content[line 2]"),
        (b"partner_reference,points\n,1\n", "file_content[line 2]"),
        (b"\xff\xfe", "file_content"),
    ],
    ids=["no-column", "not-a-number", "empty-reference", "not-utf8"],
)
def test_bad_files_name_the_line(content: bytes, field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        dr.parse_file(content)
    assert caught.value.reason == "INVALID_FILE"
    assert caught.value.violations[0].field == field
