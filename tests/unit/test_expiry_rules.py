"""Points expiry and reward rules: policies, lots, voucher codes and reward drafts. Pure, no I/O."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest
from stdnum import luhn

from gateway.domain import expiry as de
from gateway.domain import rewards as drw
from gateway.domain.errors import InvalidArgument
from gateway.domain.expiry import ExpiryKind, ExpiryPolicy, ExpiryPolicyError, Lot

ALPHABET = drw.VOUCHER_ALPHABET
CODE_DRAWS = 2_000
"""Codes drawn where a property must hold for every fresh code."""


def t(iso: str) -> datetime:
    return datetime.fromisoformat(iso).replace(tzinfo=UTC)


def code_from(body: str) -> str:
    """A valid code for a 15-character body: the oracle is python-stdnum's Luhn mod N."""
    return body + luhn.calc_check_digit(body, alphabet=ALPHABET)


def rejected(raw: str) -> bool:
    try:
        drw.parse_voucher_code(raw)
    except InvalidArgument as err:
        assert err.reason == "INVALID_VOUCHER_CODE"
        return True
    return False


# -- policies --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("none", ExpiryPolicy(), id="none"),
        pytest.param("", ExpiryPolicy(), id="empty-is-none"),
        pytest.param("  NONE ", ExpiryPolicy(), id="case-and-space"),
        pytest.param("fixed:24", ExpiryPolicy(ExpiryKind.FIXED, 24), id="fixed-24"),
        pytest.param("Fixed:1", ExpiryPolicy(ExpiryKind.FIXED, 1), id="fixed-lowest"),
        pytest.param("fixed:120", ExpiryPolicy(ExpiryKind.FIXED, 120), id="fixed-highest"),
        pytest.param("fixed:012", ExpiryPolicy(ExpiryKind.FIXED, 12), id="leading-zero"),
        pytest.param("inactivity:18", ExpiryPolicy(ExpiryKind.INACTIVITY, 18), id="inactivity-18"),
    ],
)
def test_parse_policy_accepts(raw: str, expected: ExpiryPolicy) -> None:
    assert de.parse_policy(raw) == expected


def test_parse_policy_passes_reminder_days_through() -> None:
    assert de.parse_policy("fixed:12", 7) == ExpiryPolicy(ExpiryKind.FIXED, 12, 7)
    assert de.parse_policy("fixed:12", 0).reminder_days == 0


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("fixed", id="fixed-without-months"),
        pytest.param("fixed:", id="fixed-empty-months"),
        pytest.param("fixed:0", id="zero-months"),
        pytest.param("fixed:121", id="over-max-months"),
        pytest.param("fixed:-1", id="negative-months"),
        pytest.param("fixed:1.5", id="fractional-months"),
        pytest.param("fixed:twelve", id="months-in-words"),
        pytest.param("inactivity", id="inactivity-without-months"),
        pytest.param("none:3", id="none-with-months"),
        pytest.param("monthly:12", id="unknown-kind"),
        pytest.param("fixed 12", id="no-colon"),
        pytest.param("fixed:²", id="superscript-digit"),
        pytest.param("fixed:٢٤", id="arabic-indic-digits"),
    ],
)
def test_parse_policy_rejects(raw: str) -> None:
    with pytest.raises(ExpiryPolicyError):
        de.parse_policy(raw)


@pytest.mark.parametrize(
    ("kind", "months", "reminder_days"),
    [
        pytest.param(ExpiryKind.FIXED, 0, 30, id="fixed-zero-months"),
        pytest.param(ExpiryKind.INACTIVITY, 121, 30, id="inactivity-too-long"),
        pytest.param(ExpiryKind.FIXED, 12, -1, id="negative-reminder"),
        pytest.param(ExpiryKind.FIXED, 12, 366, id="reminder-over-a-year"),
        pytest.param(ExpiryKind.NONE, 0, 366, id="none-reminder-over-a-year"),
    ],
)
def test_policy_refuses_out_of_range_values(
    kind: ExpiryKind, months: int, reminder_days: int
) -> None:
    with pytest.raises(ExpiryPolicyError):
        ExpiryPolicy(kind, months, reminder_days)


# -- when points expire ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("when", "midnight"),
    [
        pytest.param("2026-01-05T12:00:00", "2026-01-06T00:00:00", id="noon"),
        pytest.param("2026-01-05T00:00:00", "2026-01-06T00:00:00", id="at-midnight"),
        pytest.param("2026-01-05T23:59:59.999999", "2026-01-06T00:00:00", id="last-instant"),
        pytest.param("2026-12-31T08:00:00", "2027-01-01T00:00:00", id="new-year"),
        pytest.param("2028-02-28T10:00:00", "2028-02-29T00:00:00", id="leap-day-next"),
    ],
)
def test_end_of_day_is_the_next_utc_midnight(when: str, midnight: str) -> None:
    assert de.end_of_day(t(when)) == t(midnight)


def test_end_of_day_keeps_the_time_zone() -> None:
    assert de.end_of_day(t("2026-03-01T05:00:00")).tzinfo is UTC
    plus_two = timezone(timedelta(hours=2))
    assert de.end_of_day(datetime(2026, 3, 1, 5, tzinfo=plus_two)).tzinfo is plus_two


@pytest.mark.parametrize(
    ("months", "available", "expires"),
    [
        pytest.param(12, "2026-01-05T12:00:00", "2027-01-06T00:00:00", id="a-year"),
        pytest.param(1, "2026-01-31T09:00:00", "2026-03-01T00:00:00", id="jan31-to-feb28"),
        pytest.param(1, "2028-01-31T09:00:00", "2028-03-01T00:00:00", id="jan31-leap-feb29"),
        pytest.param(1, "2026-03-31T23:30:00", "2026-05-01T00:00:00", id="mar31-to-apr30"),
        pytest.param(24, "2028-02-29T10:00:00", "2030-03-01T00:00:00", id="leap-day-to-feb28"),
        pytest.param(1, "2026-12-15T00:00:00", "2027-01-16T00:00:00", id="across-new-year"),
    ],
)
def test_fixed_lot_expires_at_the_end_of_the_day_months_later(
    months: int, available: str, expires: str
) -> None:
    policy = ExpiryPolicy(ExpiryKind.FIXED, months)
    assert policy.lot_expire_time(t(available)) == t(expires)
    assert policy.inactivity_expire_time(t(available)) is None


@pytest.mark.parametrize(
    "policy",
    [
        pytest.param(ExpiryPolicy(), id="none"),
        pytest.param(ExpiryPolicy(ExpiryKind.INACTIVITY, 12), id="inactivity"),
    ],
)
def test_only_fixed_gives_a_lot_its_own_expiry(policy: ExpiryPolicy) -> None:
    assert policy.lot_expire_time(t("2026-01-05T12:00:00")) is None


def test_inactivity_expires_everything_at_the_end_of_the_day_months_after_last_activity() -> None:
    policy = ExpiryPolicy(ExpiryKind.INACTIVITY, 18)
    assert policy.inactivity_expire_time(t("2026-08-31T13:00:00")) == t("2028-03-01T00:00:00")
    assert ExpiryPolicy().inactivity_expire_time(t("2026-08-31T13:00:00")) is None


def test_reminder_goes_out_reminder_days_before_the_expiry() -> None:
    policy = ExpiryPolicy(ExpiryKind.FIXED, 12, 30)
    assert policy.remind_from(t("2027-01-06T00:00:00")) == t("2026-12-07T00:00:00")


@pytest.mark.parametrize("months", [1, 2, 11, 12, 18, 120])
def test_inactive_since_max_never_misses_a_member_due(months: int) -> None:
    """The database scan's bound: anyone whose points expire by `now` was active before it."""
    policy = ExpiryPolicy(ExpiryKind.INACTIVITY, months)
    rng = random.Random(months)
    start = t("2024-01-01T00:00:00")
    for _ in range(2_000):
        last = start + timedelta(minutes=rng.randrange(4 * 366 * 24 * 60))
        expires = policy.inactivity_expire_time(last)
        assert expires is not None
        now = expires + timedelta(minutes=rng.choice([0, 1, 60, 24 * 60, 40 * 24 * 60]))
        assert last <= policy.inactive_since_max(now), (last, now)


# -- lots ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "after", "change"),
    [
        pytest.param(0, 100, 100, id="credit"),
        pytest.param(100, 40, -60, id="debit"),
        pytest.param(100, 100, 0, id="no-change"),
        pytest.param(-50, 30, 30, id="credit-repays-debt-first"),
        pytest.param(-50, 0, 0, id="credit-exactly-repays-debt"),
        pytest.param(-50, -20, 0, id="credit-repays-part-of-debt"),
        pytest.param(30, -20, -30, id="clawback-below-zero-takes-what-lots-hold"),
        pytest.param(0, -20, 0, id="clawback-from-nothing"),
        pytest.param(-20, -50, 0, id="debt-grows"),
    ],
)
def test_lot_change_tracks_the_positive_part_of_available(
    before: int, after: int, change: int
) -> None:
    assert de.lot_change(before, after) == change


LOTS = [Lot(1, 100), Lot(4, 0), Lot(7, 50), Lot(9, 200)]


@pytest.mark.parametrize(
    ("points", "drawn"),
    [
        pytest.param(0, [], id="nothing"),
        pytest.param(60, [(1, 60)], id="part-of-oldest"),
        pytest.param(100, [(1, 100)], id="exactly-oldest"),
        pytest.param(120, [(1, 100), (7, 20)], id="spans-skipping-empty-lot"),
        pytest.param(350, [(1, 100), (7, 50), (9, 200)], id="everything"),
    ],
)
def test_spend_fifo_draws_the_oldest_lots_first(points: int, drawn: list[tuple[int, int]]) -> None:
    assert de.spend_fifo(LOTS, points) == drawn


DRAWS = [(1, 100), (7, 0), (9, 30), (12, 40)]
"""(lot seq, points still drawn) in the order the debit drew them; lot 7 was given back."""


@pytest.mark.parametrize(
    ("points", "returned"),
    [
        pytest.param(0, [], id="nothing"),
        pytest.param(25, [(12, 25)], id="part-of-newest-draw"),
        pytest.param(40, [(12, 40)], id="exactly-newest-draw"),
        pytest.param(100, [(12, 40), (9, 30), (1, 30)], id="skips-a-draw-given-back"),
        pytest.param(170, [(12, 40), (9, 30), (1, 100)], id="everything"),
    ],
)
def test_refund_lifo_gives_back_to_the_newest_draw_first(
    points: int, returned: list[tuple[int, int]]
) -> None:
    assert de.refund_lifo(DRAWS, points) == returned


def test_spend_then_refund_restores_the_lots() -> None:
    drawn = de.spend_fifo(LOTS, 170)
    returned = de.refund_lifo(drawn, 170)
    assert sorted(returned) == sorted(drawn)


# -- voucher codes ---------------------------------------------------------------------------


def test_generated_codes_are_16_alphabet_characters_that_parse() -> None:
    codes = [drw.new_voucher_code() for _ in range(CODE_DRAWS)]
    for code in codes:
        assert len(code) == drw.VOUCHER_CODE_CHARS == 16
        assert set(code) <= set(ALPHABET)
        assert drw.parse_voucher_code(code) == code
        assert drw.parse_voucher_code(drw.display_code(code)) == code
    assert len(set(codes)) == CODE_DRAWS, "75 random bits never repeat in a few thousand draws"


def test_the_alphabet_is_crockford_base_32() -> None:
    assert len(ALPHABET) == len(set(ALPHABET)) == 32
    assert not set("ILOU") & set(ALPHABET)


def test_display_code_groups_by_four() -> None:
    assert drw.display_code("ABCDEFGHJKMNPQR7") == "ABCD-EFGH-JKMN-PQR7"


def test_every_single_character_substitution_is_rejected() -> None:
    """Luhn mod N catches every single-character error, in the body and in the check char."""
    rng = random.Random(7)
    for _ in range(40):
        code = code_from("".join(rng.choice(ALPHABET) for _ in range(15)))
        assert not rejected(code)
        for position in range(len(code)):
            for other in ALPHABET.replace(code[position], ""):
                typo = code[:position] + other + code[position + 1 :]
                assert rejected(typo), (code, typo)


def test_adjacent_transpositions_are_rejected_except_0_and_z() -> None:
    """Luhn mod 32 misses a swap of neighbours only for 0 and Z (like 09/90 in base 10): the
    doubled value minus the value is the same for both. Every position and pair is tried."""
    body = "ABCDEFGHJKMNPQR"
    missed, tried = set(), 0
    for position in range(15):  # positions 14 and 15 swap the body with the check character
        for a in ALPHABET:
            for b in ALPHABET.replace(a, ""):
                code = code_from((body[:position] + a + b + body[position + 2 :])[:15])
                swapped = (
                    code[:position] + code[position + 1] + code[position] + code[position + 2 :]
                )
                if swapped == code:
                    continue
                tried += 1
                if not rejected(swapped):
                    missed.add(frozenset((code[position], code[position + 1])))
    assert missed == {frozenset("0Z")}
    assert tried > 10_000


@pytest.mark.parametrize(
    "shown",
    [
        pytest.param(str.lower, id="lowercase"),
        pytest.param(lambda c: c, id="no-dashes"),
        pytest.param(drw.display_code, id="dashes"),
        pytest.param(lambda c: drw.display_code(c).replace("-", " "), id="spaces"),
        pytest.param(lambda c: f"  {drw.display_code(c).lower()}\t", id="padded-lowercase"),
        pytest.param(lambda c: f"{c[:3]}-{c[3:11]}--{c[11:]}", id="dashes-anywhere"),
    ],
)
def test_input_is_normalized(shown: Callable[[str], str]) -> None:
    code = code_from("ABCDEFGHJKMNPQR")
    assert drw.parse_voucher_code(shown(code)) == code


@pytest.mark.parametrize(
    ("typed", "read_as"),
    [
        pytest.param("O", "0", id="O-as-zero"),
        pytest.param("o", "0", id="o-as-zero"),
        pytest.param("I", "1", id="I-as-one"),
        pytest.param("i", "1", id="i-as-one"),
        pytest.param("L", "1", id="L-as-one"),
        pytest.param("l", "1", id="l-as-one"),
    ],
)
def test_crockford_lookalikes_are_read_as_digits(typed: str, read_as: str) -> None:
    code = code_from(f"{read_as}BCDEFGH{read_as}KMNPQR")
    typed_code = code.replace(read_as, typed)
    assert drw.parse_voucher_code(typed_code) == code


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("", id="empty"),
        pytest.param("ABCD-EFGH-JKMN-PQR", id="15-chars"),
        pytest.param("ABCD-EFGH-JKMN-PQR77", id="17-chars"),
        pytest.param("ABCD-EFGH-JKMN-PQRU", id="U-not-in-alphabet"),
        pytest.param("ABCD-EFGH-JKMN-PQR*", id="symbol"),
        pytest.param("ABCD_EFGH_JKMN_PQR7", id="underscores"),
    ],
)
def test_malformed_codes_are_rejected(raw: str) -> None:
    assert rejected(raw)


def test_too_long_input_is_rejected_before_normalizing() -> None:
    code = code_from("ABCDEFGHJKMNPQR")
    limit = drw.VOUCHER_INPUT_CHARS_MAX
    fits = code + "-" * (limit - len(code))
    assert len(fits) == limit and drw.parse_voucher_code(fits) == code
    assert rejected(fits + "-")
    assert rejected(code + " " * 10_000)


def test_an_invalid_code_names_the_field() -> None:
    with pytest.raises(InvalidArgument) as caught:
        drw.parse_voucher_code("ABCD", field="voucher.code")
    assert caught.value.metadata["field"] == "voucher.code"
    assert [v.field for v in caught.value.violations] == ["voucher.code"]


# -- rewards: drafts, stock and voucher states -----------------------------------------------


def draft(**fields: object) -> drw.RewardDraft:
    values: dict[str, object] = {
        "display_name": "Free night",
        "description": "One night, any room",
        "kind": drw.RewardKind.FREE_NIGHT,
        "points_price": 10_000,
        "stock": 10,
        "start_time": None,
        "end_time": None,
        "voucher_validity": timedelta(days=90),
    }
    values.update(fields)
    return drw.RewardDraft(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({}, id="typical"),
        pytest.param({"stock": 0}, id="unlimited-stock"),
        pytest.param({"stock": drw.STOCK_MAX}, id="max-stock"),
        pytest.param({"points_price": 1}, id="one-point"),
        pytest.param({"display_name": "x" * 128}, id="longest-name"),
        pytest.param({"description": "d" * 2_000}, id="longest-description"),
        pytest.param({"voucher_validity": timedelta(seconds=1)}, id="one-second-validity"),
        pytest.param(
            {"voucher_validity": timedelta(seconds=drw.VOUCHER_VALIDITY_S_MAX)},
            id="longest-validity",
        ),
        pytest.param({"start_time": t("2026-01-01T00:00:00")}, id="only-start"),
        pytest.param({"end_time": t("2026-01-01T00:00:00")}, id="only-end"),
    ],
)
def test_valid_drafts_pass(fields: dict[str, object]) -> None:
    checked = draft(**fields)
    assert drw.check_draft(checked) == checked


@pytest.mark.parametrize(
    ("fields", "field", "reason"),
    [
        pytest.param({"display_name": ""}, "display_name", "MISSING_DISPLAY_NAME", id="no-name"),
        pytest.param({"display_name": "  "}, "display_name", "MISSING_DISPLAY_NAME", id="blank"),
        pytest.param(
            {"display_name": "x" * 129}, "display_name", "MISSING_DISPLAY_NAME", id="long-name"
        ),
        pytest.param(
            {"description": "d" * 2_001}, "description", "FIELD_TOO_LONG", id="long-description"
        ),
        pytest.param({"points_price": 0}, "points_price", "INVALID_POINTS_PRICE", id="free"),
        pytest.param({"points_price": -5}, "points_price", "INVALID_POINTS_PRICE", id="negative"),
        pytest.param(
            {"points_price": 1_000_000_001},
            "points_price",
            "INVALID_POINTS_PRICE",
            id="over-transaction-max",
        ),
        pytest.param({"stock": -1}, "stock", "INVALID_STOCK", id="negative-stock"),
        pytest.param({"stock": drw.STOCK_MAX + 1}, "stock", "INVALID_STOCK", id="too-much-stock"),
        pytest.param(
            {"start_time": t("2026-02-01T00:00:00"), "end_time": t("2026-02-01T00:00:00")},
            "end_time",
            "INVALID_TIME_RANGE",
            id="empty-window",
        ),
        pytest.param(
            {"start_time": t("2026-02-01T00:00:00"), "end_time": t("2026-01-01T00:00:00")},
            "end_time",
            "INVALID_TIME_RANGE",
            id="ends-before-start",
        ),
        pytest.param(
            {"voucher_validity": timedelta(0)},
            "voucher_validity",
            "INVALID_VOUCHER_VALIDITY",
            id="zero-validity",
        ),
        pytest.param(
            {"voucher_validity": timedelta(seconds=-1)},
            "voucher_validity",
            "INVALID_VOUCHER_VALIDITY",
            id="negative-validity",
        ),
        pytest.param(
            {"voucher_validity": timedelta(seconds=drw.VOUCHER_VALIDITY_S_MAX + 1)},
            "voucher_validity",
            "INVALID_VOUCHER_VALIDITY",
            id="validity-over-three-years",
        ),
    ],
)
def test_invalid_drafts_name_field_and_reason(
    fields: dict[str, object], field: str, reason: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        drw.check_draft(draft(**fields))
    assert caught.value.reason == reason
    assert caught.value.metadata["field"] == f"reward.{field}"


def reward(stock: int, issued: int = 0, refunded: int = 0, **fields: object) -> drw.Reward:
    values: dict[str, object] = {
        "id": "r1",
        "partner_id": "grand-hotel",
        "display_name": "Free night",
        "description": "",
        "kind": drw.RewardKind.FREE_NIGHT,
        "points_price": 10_000,
        "stock": stock,
        "issued": issued,
        "refunded": refunded,
        "start_time": None,
        "end_time": None,
        "voucher_validity": timedelta(days=90),
        "create_time": t("2026-01-01T00:00:00"),
    }
    values.update(fields)
    return drw.Reward(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("stock", "issued", "refunded", "available", "in_stock"),
    [
        pytest.param(10, 0, 0, 10, True, id="untouched"),
        pytest.param(10, 10, 0, 0, False, id="sold-out"),
        pytest.param(10, 10, 1, 1, True, id="refund-returns-a-unit"),
        pytest.param(0, 500, 0, 0, True, id="unlimited"),
    ],
)
def test_available_stock(
    stock: int, issued: int, refunded: int, available: int, in_stock: bool
) -> None:
    shown = reward(stock, issued, refunded)
    assert (shown.available_stock, shown.in_stock()) == (available, in_stock)
    assert shown.name == "partners/grand-hotel/rewards/r1"


@pytest.mark.parametrize(
    ("now", "on_offer"),
    [
        pytest.param("2026-01-31T23:59:59", False, id="before-start"),
        pytest.param("2026-02-01T00:00:00", True, id="at-start"),
        pytest.param("2026-02-27T23:59:59", True, id="inside"),
        pytest.param("2026-02-28T00:00:00", False, id="at-end"),
    ],
)
def test_on_offer_between_start_inclusive_and_end_exclusive(now: str, on_offer: bool) -> None:
    window = reward(10, start_time=t("2026-02-01T00:00:00"), end_time=t("2026-02-28T00:00:00"))
    assert window.on_offer(t(now)) is on_offer
    assert reward(10).on_offer(t(now))


@pytest.mark.parametrize(
    ("state", "now", "shown", "usable"),
    [
        pytest.param("ISSUED", "2026-03-31T23:59:59", "ISSUED", True, id="issued"),
        pytest.param("ISSUED", "2026-04-01T00:00:00", "EXPIRED", False, id="issued-at-expiry"),
        pytest.param("CONSUMED", "2026-04-02T00:00:00", "CONSUMED", False, id="consumed-stays"),
        pytest.param("REFUNDED", "2026-04-02T00:00:00", "REFUNDED", False, id="refunded"),
    ],
)
def test_voucher_state_at(state: str, now: str, shown: str, usable: bool) -> None:
    voucher = drw.Voucher(
        code=code_from("ABCDEFGHJKMNPQR"),
        reward_id="r1",
        partner_id="grand-hotel",
        member_id="m1",
        state=drw.VoucherState(state),
        issue_time=t("2026-01-01T00:00:00"),
        expire_time=t("2026-04-01T00:00:00"),
        consume_time=None,
        transaction_id="t1",
        points=10_000,
    )
    assert voucher.state_at(t(now)) is drw.VoucherState(shown)
    assert voucher.usable(t(now)) is usable
