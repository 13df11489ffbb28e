"""Reconciliation: a partner's own file for a month against the ledger, by partner reference.

The test records March 2026 with the fixed clock (a hotel's earns, redemptions, partial refunds
and a capture; an airline's own earns; a travel agency's bookings for that airline; activity
just before and just after the month), exports "the partner's file" from what it recorded,
plants differences in it, and checks that `reconcile` reports exactly those, and nothing else.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.clock import FixedClock
from gateway.domain import ledger as dl
from gateway.domain.errors import InvalidArgument, NotFound
from gateway.domain.members import ContactDetails
from gateway.domain.partners import Partner, PartnerSettings, PartnerType
from gateway.service import earning, ledger
from gateway.service import members as members_service
from gateway.service import partners as partner_service
from gateway.service.context import AppContext
from settlement.domain import reconcile as dr
from settlement.domain.periods import Period
from settlement.service import reconcile as reconcile_service
from settlement.service.reconcile import RECONCILIATIONS, reconcile

FEBRUARY, MARCH, APRIL = Period(2026, 2), Period(2026, 3), Period(2026, 4)
HOTEL, AIRLINE, AGENCY = "harbor-hotel", "sky-air", "trip-agency"
TINY = timedelta(microseconds=1)

# (kind, partner_reference, ledger_points, file_points, transactions, file lines)
Found = tuple[str, str, int, int, tuple[str, ...], tuple[int, ...]]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


@dataclass
class Booked:
    """What the test recorded for one partner's reconciliation: reference -> [(points, type,
    transaction name)], in the order recorded."""

    rows: dict[str, list[tuple[int, str, str]]] = field(default_factory=dict)

    def add(self, txn: dl.Transaction, reference: str | None = None) -> dl.Transaction:
        """reference: the sale's, for a reversal given a reason (stored as its reference)."""
        entry = (txn.points, txn.type.value, txn.name)
        self.rows.setdefault(reference or txn.partner_reference, []).append(entry)
        return txn

    def points(self, reference: str) -> int:
        return sum(p for p, _, _ in self.rows[reference])

    def names(self, reference: str) -> tuple[str, ...]:
        return tuple(n for _, _, n in self.rows[reference])

    @property
    def total(self) -> int:
        return sum(self.points(r) for r in self.rows)

    def file_rows(self) -> list[tuple[str, int, str]]:
        """One (reference, points, type) row per transaction: the partner's own record."""
        return [(ref, p, t) for ref, rows in self.rows.items() for p, t, _ in rows]


@dataclass
class Month:
    hotel: Booked
    airline: Booked
    agency: Booked
    february: Booked
    """The hotel's reconciled transactions recorded in February."""
    april: Booked
    """The hotel's reconciled transactions recorded in April."""


class PartnerFile:
    """A CSV the way a partner's system might write it: its own column order, extra columns,
    a byte order mark, CRLF line endings and blank lines. Line numbers as the file has them."""

    HEADER = ("store_id", "Type", " Points ", "comment", "partner_reference", "occur_time")

    def __init__(self, rows: Iterable[tuple[str, int | str, str] | None]) -> None:
        self.rows = list(rows)  # None: a blank line

    def lines_of(self, reference: str) -> tuple[int, ...]:
        return tuple(
            number
            for number, row in enumerate(self.rows, start=2)
            if row is not None and row[0].strip() == reference
        )

    def points_of(self, reference: str) -> int:
        return sum(int(r[1]) for r in self.rows if r is not None and r[0].strip() == reference)

    @property
    def references(self) -> set[str]:
        return {r[0].strip() for r in self.rows if r is not None}

    @property
    def total(self) -> int:
        return sum(int(r[1]) for r in self.rows if r is not None)

    def content(self) -> bytes:
        out = io.StringIO(newline="")
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(self.HEADER)
        for number, row in enumerate(self.rows, start=2):
            if row is None:
                writer.writerow(["", "", "", "", "", ""] if number % 2 else [])
                continue
            reference, points, kind = row
            writer.writerow(
                [f"S{number % 7}", kind, points, f"row {number}", reference, "2026-03-05T10:00Z"]
            )
        return out.getvalue().encode("utf-8-sig")


def found(result: dr.Result) -> list[Found]:
    return [
        (
            d.kind.value,
            d.partner_reference,
            d.ledger_points,
            d.file_points,
            d.transactions,
            d.file_lines,
        )
        for d in result.discrepancies
    ]


async def _partners(ctx: AppContext) -> tuple[Partner, Partner, Partner]:
    async with ctx.database.begin() as conn:
        hotel = await partner_service.create(
            conn, ctx, HOTEL, PartnerType.HOTEL, PartnerSettings("Harbor Hotel", Decimal(1))
        )
        airline = await partner_service.create(
            conn, ctx, AIRLINE, PartnerType.AIRLINE, PartnerSettings("Sky Air", Decimal(1))
        )
        agency = await partner_service.create(
            conn,
            ctx,
            AGENCY,
            PartnerType.TRAVEL_AGENCY,
            PartnerSettings("Trip Agency", Decimal(1), authorized_airlines=(AIRLINE,)),
        )
    return hotel, airline, agency


async def _members(ctx: AppContext, count: int) -> list[str]:
    async with ctx.database.begin() as conn:
        return [
            (await members_service.enroll(conn, ctx, ContactDetails(f"Member {i}"))).id
            for i in range(count)
        ]


async def _earn(
    conn: AsyncConnection,
    ctx: AppContext,
    partner: Partner,
    member: str,
    points: int,
    reference: str,
    channel: Partner | None = None,
) -> dl.Transaction:
    action = earning.Action("STAY", points)
    txn, _ = await earning.earn(conn, ctx, partner, member, action, reference, channel=channel)
    return txn


async def _reverse(
    conn: AsyncConnection,
    ctx: AppContext,
    partner: Partner,
    txn: dl.Transaction,
    points: int,
    reason: str = "",
) -> dl.Transaction:
    return await ledger.reverse(conn, ctx, partner.id, txn.name, points, reason)


# The month's odd references: byte order decides the merge ("10" < "9" < "Z" < "a" < "~" < "é").
ODD_REFERENCES = ("a-lower", "Z-upper", "é-accent", "~tilde", "10", "9", "ref,comma", 'quo"te')


@pytest.fixture
async def month(ctx: AppContext) -> Month:
    clock = ctx.clock
    assert isinstance(clock, FixedClock)
    clock.set(utc(2026, 2, 10))
    hotel, airline, agency = await _partners(ctx)
    members = await _members(ctx, 6)
    booked = Month(Booked(), Booked(), Booked(), Booked(), Booked())
    h = booked.hotel
    begin = ctx.database.begin

    # February: every member earns 20,000 at the hotel; one earn on February's last instant.
    async with begin() as conn:
        feb_earns = []
        for i, member in enumerate(members):
            clock.set(utc(2026, 2, 11 + i))
            earn = await _earn(conn, ctx, hotel, member, 20_000, f"FEB-{i}")
            feb_earns.append(booked.february.add(earn))
        clock.set(utc(2026, 3, 1) - TINY)
        booked.february.add(await _earn(conn, ctx, hotel, members[0], 444, "EDGE-FEB"))

    # March, from its first instant: a day's earns and a redemption per transaction.
    clock.set(utc(2026, 3, 1))
    earns: dict[str, dl.Transaction] = {}
    redemptions: dict[str, dl.Transaction] = {}
    async with begin() as conn:
        h.add(await _earn(conn, ctx, hotel, members[1], 111, "EDGE-MAR-START"))
    for day in range(40):
        async with begin() as conn:
            for n in range(6 * day + 1, 6 * day + 7):
                clock.advance(timedelta(hours=2))
                ref = f"H-{n:04d}"
                earns[ref] = h.add(await _earn(conn, ctx, hotel, members[n % 6], 100 + 7 * n, ref))
            ref = f"R-{day + 1:03d}"
            redemption = await ledger.redeem(conn, ctx, hotel.id, members[day % 5], 51 + day, ref)
            redemptions[ref] = h.add(redemption)
    async with begin() as conn:
        for i, ref in enumerate(ODD_REFERENCES):
            h.add(await _earn(conn, ctx, hotel, members[i % 6], 10 + i, ref))
        # One stay billed in two earns; a partial refund and a partial clawback keep the
        # reference of what they reverse.
        h.add(await _earn(conn, ctx, hotel, members[2], 400, "SPLIT-STAY"))
        h.add(await _earn(conn, ctx, hotel, members[3], 600, "SPLIT-STAY"))
        h.add(await _reverse(conn, ctx, hotel, redemptions["R-005"], 20))
        h.add(await _reverse(conn, ctx, hotel, earns["H-0011"], 30))
        # A refund given a reason still counts under the redemption's reference.
        h.add(await _reverse(conn, ctx, hotel, redemptions["R-030"], 30, "REFUND"), "R-030")
        # A clawback in March of a February earn counts in March, under the earn's reference.
        h.add(await _reverse(conn, ctx, hotel, feb_earns[0], 100))
        # A hold captured in part: the CAPTURE is reconciled, the AUTHORIZATION is not.
        hold = await ledger.authorize(conn, ctx, hotel.id, members[4], 300, 3_600, "CAP-1")
        h.add(await ledger.capture(conn, ctx, hotel.id, hold.name, 200))
        # A hold voided: neither the AUTHORIZATION nor the VOID is a sale.
        voided = await ledger.authorize(conn, ctx, hotel.id, members[5], 150, 3_600, "HOLD-VOID")
        await ledger.void(conn, ctx, hotel.id, voided.name)
        # One reference, three partners: each sees only its own.
        h.add(await _earn(conn, ctx, hotel, members[0], 77, "SHARED-1"))
        shared = await _earn(conn, ctx, airline, members[0], 88, "SHARED-1", channel=agency)
        booked.agency.add(shared)
        booked.airline.add(await _earn(conn, ctx, airline, members[0], 99, "SHARED-1"))
    # The airline's own earns; the agency's bookings for the airline, one clawed back in part.
    async with begin() as conn:
        for n in range(1, 11):
            clock.advance(timedelta(minutes=5))
            earn = await _earn(conn, ctx, airline, members[n % 6], 1_000 + n, f"AIR-{n:02d}")
            booked.airline.add(earn)
        bookings = {}
        for n in range(1, 26):
            clock.advance(timedelta(minutes=5))
            ref = f"BK-{n:04d}"
            booking = await _earn(conn, ctx, airline, members[n % 6], 2_000 + n, ref, agency)
            bookings[ref] = booked.agency.add(booking)
        booked.agency.add(await _reverse(conn, ctx, agency, bookings["BK-0003"], 40))
        cancelled = await _reverse(conn, ctx, agency, bookings["BK-0007"], 7, "CANCELLED")
        booked.agency.add(cancelled, "BK-0007")
        clock.set(utc(2026, 4, 1) - TINY)
        h.add(await _earn(conn, ctx, hotel, members[1], 222, "EDGE-MAR-END"))

    # April, from its first instant: not March's.
    clock.set(utc(2026, 4, 1))
    async with begin() as conn:
        booked.april.add(await _earn(conn, ctx, hotel, members[2], 333, "EDGE-APR"))
        booked.april.add(await _reverse(conn, ctx, hotel, redemptions["R-010"], 10))
    clock.set(utc(2026, 4, 2, 9))
    return booked


async def _reconcile(
    ctx: AppContext, partner: str, period: Period, content: bytes
) -> tuple[str, dr.Result]:
    async with ctx.database.begin() as conn:
        return await reconcile(conn, ctx, partner, period, content)


# -- the hotel's file, with every kind of difference planted ---------------------------------

# What is planted in the hotel's file, by reference.
DROPPED = ("H-0003", "H-0150", "é-accent", "EDGE-MAR-START", "CAP-1")
CHANGED = ("H-0042", "R-020", "EDGE-MAR-END")
EXTRA = (("H-9999", 500), ("EDGE-FEB", 444), ("EDGE-APR", 333), ("BK-0001", 2_001))
EXTRA += (("HOLD-VOID", -150), ("H-9998", 10), ("H-9998", 15))


def _hotel_file(hotel: Booked) -> PartnerFile:
    rows: list[tuple[str, int | str, str] | None] = []
    for ref, points, kind in hotel.file_rows():
        if ref in DROPPED:
            continue
        if ref == "H-0011" and kind == "REVERSAL":
            continue  # the partner forgot its clawback: AMOUNT_MISMATCH
        if ref == "H-0042":
            points += 1
        elif ref in ("R-020", "EDGE-MAR-END"):
            points = -points
        if ref == "H-0100":  # one transaction, three rows that add up
            rows += [(ref, points - 100, kind), (ref, 60, kind), (ref, 40, kind)]
            continue
        if ref == "H-0200":  # padded cells are trimmed
            rows.append((f"  {ref} ", f" {points} ", kind))
            continue
        rows.append((ref, points, kind))
    rows += [(ref, points, "EARN") for ref, points in EXTRA]
    random.Random(2026).shuffle(rows)
    for at in (5, 50, 120):
        rows.insert(at, None)
    return PartnerFile(rows)


def _hotel_expected(hotel: Booked, file: PartnerFile) -> list[Found]:
    expected: list[Found] = []
    for ref in DROPPED:
        expected.append(("MISSING_IN_FILE", ref, hotel.points(ref), 0, hotel.names(ref), ()))
    mismatched = {
        "H-0042": hotel.points("H-0042") + 1,
        "R-020": -hotel.points("R-020"),
        "EDGE-MAR-END": -222,
        "H-0011": hotel.points("H-0011") + 30,
    }
    for ref, file_points in mismatched.items():
        assert file.points_of(ref) == file_points
        expected.append(
            (
                "AMOUNT_MISMATCH",
                ref,
                hotel.points(ref),
                file_points,
                hotel.names(ref),
                file.lines_of(ref),
            )
        )
    for ref in dict(EXTRA):
        expected.append(("MISSING_IN_LEDGER", ref, 0, file.points_of(ref), (), file.lines_of(ref)))
    return sorted(expected, key=lambda d: d[1])


async def test_the_hotel_file_reports_exactly_what_was_planted(
    ctx: AppContext, month: Month
) -> None:
    hotel = month.hotel
    file = _hotel_file(hotel)
    content = file.content()
    assert content.startswith(b"\xef\xbb\xbfstore_id,") and b"\r\n" in content

    name, result = await _reconcile(ctx, HOTEL, MARCH, content)

    expected = _hotel_expected(hotel, file)
    assert found(result) == expected  # and ordered by partner_reference
    # The ledger side: 240 earns, 40 redemptions, 8 odd references, and EDGE-MAR-START,
    # SPLIT-STAY, FEB-0 (a clawback), CAP-1, SHARED-1 and EDGE-MAR-END.
    assert result.ledger_reference_count == len(hotel.rows) == 294
    assert result.file_reference_count == len(file.references) == 294 - 5 + 6
    assert result.matched_count == 294 - len(DROPPED) - 4
    assert result.discrepancy_count == len(expected) == 15
    assert result.ledger_points_total == hotel.total
    assert result.file_points_total == file.total
    assert result.create_time == utc(2026, 4, 2, 9)
    assert name.startswith(f"partners/{HOTEL}/reconciliations/")

    # The details the expected list was built from, checked against the ledger's own story.
    assert hotel.points("SPLIT-STAY") == 1_000 and len(hotel.names("SPLIT-STAY")) == 2
    assert hotel.points("R-005") == -(50 + 5) + 20
    assert hotel.points("FEB-0") == -100  # the February earn itself is not March's
    assert hotel.points("CAP-1") == -200  # the capture, not the 300-point hold
    assert hotel.points("R-010") == -60  # its April refund is April's
    assert hotel.points("R-030") == -80 + 30 and len(hotel.names("R-030")) == 2
    mismatch = {d[1]: d for d in expected}["H-0011"]
    assert len(mismatch[4]) == 2  # the earn and its clawback, in the order recorded
    assert len(file.lines_of("H-9998")) == 2 and file.points_of("H-9998") == 25
    lines = content.decode("utf-8-sig").split("\r\n")
    for d in result.discrepancies:  # the numbers are lines of the file as a text editor shows
        for number in d.file_lines:
            assert next(csv.reader([lines[number - 1]]))[4].strip() == d.partner_reference

    async with ctx.database.connect() as conn:
        row = (
            await conn.execute(
                select(RECONCILIATIONS).where(RECONCILIATIONS.c.id == name.rsplit("/", 1)[1])
            )
        ).one()
    assert (row.partner_id, row.period) == (HOTEL, "2026-03")
    assert row.file_sha256 == hashlib.sha256(content).hexdigest()
    assert row.create_time.replace(tzinfo=row.create_time.tzinfo or UTC) == utc(2026, 4, 2, 9)
    summary = json.loads(row.summary)
    assert {k: summary[k] for k in ("matched_count", "discrepancy_count")} == {
        "matched_count": result.matched_count,
        "discrepancy_count": 15,
    }
    assert summary["file_points_total"] == file.total
    assert summary["ledger_points_total"] == hotel.total
    stored = json.loads(row.discrepancies)
    assert [(d["kind"], d["partner_reference"]) for d in stored] == [
        (kind, ref) for kind, ref, *_ in expected
    ]


async def test_the_exact_file_matches_in_any_order_and_any_batch_size(
    ctx: AppContext, month: Month, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = month.hotel.file_rows()
    random.Random(7).shuffle(rows)
    _, result = await _reconcile(ctx, HOTEL, MARCH, PartnerFile(rows).content())
    assert found(result) == []
    assert result.discrepancy_count == 0
    assert result.matched_count == result.ledger_reference_count == 294
    assert result.file_points_total == result.ledger_points_total == month.hotel.total

    # The ledger side is read in batches of references: small batches change nothing.
    planted = _hotel_file(month.hotel).content()
    _, whole = await _reconcile(ctx, HOTEL, MARCH, planted)
    monkeypatch.setattr(reconcile_service, "REFERENCE_BATCH", 7)
    _, batched = await _reconcile(ctx, HOTEL, MARCH, planted)
    assert found(batched) == found(whole) and len(found(whole)) == 15
    assert (batched.matched_count, batched.ledger_reference_count) == (285, 294)
    assert batched.ledger_points_total == whole.ledger_points_total == month.hotel.total
    _, exact = await _reconcile(ctx, HOTEL, MARCH, PartnerFile(rows).content())
    assert found(exact) == [] and exact.matched_count == 294


# -- the travel agency and the airline ---------------------------------------------------------


async def test_an_agency_reconciles_its_bookings_and_the_airline_does_not_see_them(
    ctx: AppContext, month: Month
) -> None:
    agency = month.agency
    assert len(agency.names("BK-0003")) == 2  # the booking and its partial clawback
    assert agency.points("BK-0007") == 2_007 - 7  # clawed back with a reason
    _, result = await _reconcile(ctx, AGENCY, MARCH, PartnerFile(agency.file_rows()).content())
    assert found(result) == []
    assert result.matched_count == result.ledger_reference_count == 26  # 25 + SHARED-1
    assert result.ledger_points_total == agency.total

    airline = month.airline
    rows = [*airline.file_rows(), ("BK-0002", 2_002, "EARN")]
    file = PartnerFile(rows)
    _, result = await _reconcile(ctx, AIRLINE, MARCH, file.content())
    assert found(result) == [
        ("MISSING_IN_LEDGER", "BK-0002", 0, 2_002, (), file.lines_of("BK-0002"))
    ]
    assert result.matched_count == result.ledger_reference_count == 11  # AIR-01..10, SHARED-1
    assert result.ledger_points_total == airline.total == sum(1_000 + n for n in range(1, 11)) + 99
    # The same file from the agency's side: its bookings are missing, the airline's are extra.
    _, agency_view = await _reconcile(ctx, AGENCY, MARCH, file.content())
    kinds: dict[str, set[str]] = {}
    for d in found(agency_view):
        kinds.setdefault(d[0], set()).add(d[1])
    assert kinds == {
        "MISSING_IN_FILE": {f"BK-{n:04d}" for n in range(1, 26) if n != 2},
        "MISSING_IN_LEDGER": {f"AIR-{n:02d}" for n in range(1, 11)},
        "AMOUNT_MISMATCH": {"SHARED-1"},
    }
    assert agency_view.matched_count == 1  # BK-0002


# -- other periods -------------------------------------------------------------------------------


async def test_other_periods_see_only_their_own_transactions(ctx: AppContext, month: Month) -> None:
    _, february = await _reconcile(
        ctx, HOTEL, FEBRUARY, PartnerFile(month.february.file_rows()).content()
    )
    assert found(february) == []
    assert february.matched_count == 7  # FEB-0..5 and EDGE-FEB; FEB-0's clawback is March's
    assert february.ledger_points_total == 6 * 20_000 + 444

    _, april = await _reconcile(ctx, HOTEL, APRIL, PartnerFile(month.april.file_rows()).content())
    assert found(april) == []
    assert april.matched_count == 2  # EDGE-APR and the refund of R-010
    assert april.ledger_points_total == 333 + 10

    # March's file against April: everything of March is missing from April's ledger.
    file = PartnerFile([("H-0001", month.hotel.points("H-0001"), "EARN")])
    _, wrong = await _reconcile(ctx, HOTEL, APRIL, file.content())
    assert found(wrong) == [
        (
            "MISSING_IN_FILE",
            "EDGE-APR",
            333,
            0,
            month.april.names("EDGE-APR"),
            (),
        ),
        ("MISSING_IN_LEDGER", "H-0001", 0, 107, (), (2,)),
        ("MISSING_IN_FILE", "R-010", 10, 0, month.april.names("R-010"), ()),
    ]

    # A month without activity, and a file with only its header.
    _, empty = await _reconcile(ctx, HOTEL, Period(2026, 1), b"partner_reference,points\n")
    assert found(empty) == []
    assert (empty.file_reference_count, empty.ledger_reference_count) == (0, 0)
    assert (empty.file_points_total, empty.ledger_points_total) == (0, 0)


# -- bad files -------------------------------------------------------------------------------


@pytest.fixture
async def hotel_only(ctx: AppContext) -> str:
    clock = ctx.clock
    assert isinstance(clock, FixedClock)
    clock.set(utc(2026, 3, 3))
    async with ctx.database.begin() as conn:
        await partner_service.create(
            conn, ctx, HOTEL, PartnerType.HOTEL, PartnerSettings("Harbor Hotel", Decimal(1))
        )
    return HOTEL


async def _stored(ctx: AppContext) -> int:
    async with ctx.database.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(RECONCILIATIONS)) or 0)


@pytest.mark.parametrize(
    ("content", "fields"),
    [
        pytest.param(
            "partner_reference,points\nA,1\n".encode("utf-16"), ["file_content"], id="utf-16"
        ),
        pytest.param(b"partner_reference,points\nA\xff,1\n", ["file_content"], id="latin-byte"),
        pytest.param(b"", ["file_content"], id="empty"),
        pytest.param(b"reference,points\nA,1\n", ["file_content"], id="no-reference-column"),
        pytest.param(b"partner_reference;points\nA;1\n", ["file_content"], id="semicolons"),
        pytest.param(b"partner_reference,amount\nA,1\n", ["file_content"], id="no-points-column"),
        pytest.param(
            b"partner_reference,points\nA,1\nB,1.5\nC,abc\nD,\nE,12 000\nF,1e3\n",
            [f"file_content[line {n}]" for n in (3, 4, 5, 6, 7)],
            id="non-integer-points",
        ),
        pytest.param(
            b"partner_reference,points\r\nA,1\r\n,4\r\n   ,5\r\nB,2\r\n",
            ["file_content[line 3]", "file_content[line 4]"],
            id="empty-reference",
        ),
        pytest.param(
            b"points,partner_reference\n1,A\n2\n3,\x01ctl\n4," + b"x" * 129 + b"\n",
            ["file_content[line 3]", "file_content[line 4]", "file_content[line 5]"],
            id="short-row-control-char-long-reference",
        ),
        pytest.param(
            b"partner_reference,points\nA,1000000001\nB,-1000000001\nC,-1000000000\n",
            ["file_content[line 2]", "file_content[line 3]"],
            id="too-many-points",
        ),
    ],
)
async def test_a_bad_file_is_refused_naming_its_lines(
    ctx: AppContext, hotel_only: str, content: bytes, fields: list[str]
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await _reconcile(ctx, hotel_only, MARCH, content)
    assert caught.value.reason == "INVALID_FILE"
    assert [v.field for v in caught.value.violations] == fields
    assert caught.value.metadata["field"] == "file_content"
    assert await _stored(ctx) == 0  # a refused file leaves no result behind


async def test_at_most_twenty_bad_lines_are_listed(ctx: AppContext, hotel_only: str) -> None:
    content = b"partner_reference,points\n" + b"".join(b"R%d,x\n" % n for n in range(30))
    with pytest.raises(InvalidArgument) as caught:
        await _reconcile(ctx, hotel_only, MARCH, content)
    assert [v.field for v in caught.value.violations] == [
        f"file_content[line {n}]" for n in range(2, 22)
    ]
    assert caught.value.metadata["bad_lines_listed"] == "20"


async def test_an_unknown_partner_is_not_found(ctx: AppContext, hotel_only: str) -> None:
    with pytest.raises(NotFound) as caught:
        await _reconcile(ctx, "no-such-partner", MARCH, b"partner_reference,points\n")
    assert caught.value.reason == "PARTNER_NOT_FOUND"


async def test_header_case_spacing_and_blank_lines(ctx: AppContext, hotel_only: str) -> None:
    content = b"\xef\xbb\xbf PARTNER_REFERENCE ,Points\r\n\r\nX-1,5\r\n,,\r\n X-1 ,-2\r\n"
    _, result = await _reconcile(ctx, hotel_only, MARCH, content)
    assert found(result) == [("MISSING_IN_LEDGER", "X-1", 0, 3, (), (3, 5))]
    assert await _stored(ctx) == 1


# -- found while writing these tests (fixed in 547aac2) ------------------------------------


async def test_line_numbers_are_lines_of_the_file(ctx: AppContext, hotel_only: str) -> None:
    # A quoted cell may span lines; a blank line still counts.
    content = b'partner_reference,points,comment\nA,1,"two\nlines"\n\nB,2,x\nC,x,"a\nb"\nD,y,z\n'
    with pytest.raises(InvalidArgument) as caught:
        await _reconcile(ctx, hotel_only, MARCH, content)
    assert [v.field for v in caught.value.violations] == [
        "file_content[line 6]",
        "file_content[line 8]",
    ]
    _, result = await _reconcile(ctx, hotel_only, MARCH, content.split(b"C,x")[0])
    assert [(d[1], d[5]) for d in found(result)] == [("A", (2,)), ("B", (5,))]


async def test_a_refund_or_clawback_with_a_reason_counts_under_the_sale_s_reference(
    ctx: AppContext, hotel_only: str
) -> None:
    async with ctx.database.begin() as conn:
        hotel = await partner_service.get(conn, HOTEL)
    (member,) = await _members(ctx, 1)
    async with ctx.database.begin() as conn:
        stay = await _earn(conn, ctx, hotel, member, 1_000, "STAY-1")
        redemption = await ledger.redeem(conn, ctx, HOTEL, member, 300, "ORDER-1")
        refund = await _reverse(conn, ctx, hotel, redemption, 100, "REFUND")
        clawback = await _reverse(conn, ctx, hotel, stay, 250, "FRAUD")
    assert (refund.partner_reference, clawback.partner_reference) == ("REFUND", "FRAUD")
    content = b"partner_reference,points\nSTAY-1,1000\nORDER-1,-300\nORDER-1,100\n"
    _, result = await _reconcile(ctx, HOTEL, MARCH, content)
    assert found(result) == [
        ("AMOUNT_MISMATCH", "STAY-1", 750, 1_000, (stay.name, clawback.name), (2,))
    ]
    assert (result.matched_count, result.ledger_reference_count) == (1, 2)


async def test_a_rejected_conversion_is_not_the_airline_s_sale(ctx: AppContext) -> None:
    clock = ctx.clock
    assert isinstance(clock, FixedClock)
    clock.set(utc(2026, 3, 3))
    hotel, airline, _ = await _partners(ctx)
    (member,) = await _members(ctx, 1)
    async with ctx.database.begin() as conn:
        await _earn(conn, ctx, hotel, member, 5_000, "STAY-1")
        await _earn(conn, ctx, airline, member, 700, "AIR-1")
        conversion = await ledger.convert(
            conn, ctx, airline.id, member, 2_000, 1_000, "MILES", "2,000 points to 1,000 miles"
        )
        await ledger.reverse(conn, ctx, airline.id, conversion.name, 0, "AIRLINE_REJECTED")
        kept = await ledger.convert(
            conn, ctx, airline.id, member, 1_000, 500, "MILES", "1,000 points to 500 miles"
        )
        await ledger.reverse(conn, ctx, airline.id, kept.name, 0, "")
    _, result = await _reconcile(ctx, AIRLINE, MARCH, b"partner_reference,points\nAIR-1,700\n")
    assert found(result) == []
    assert (result.matched_count, result.ledger_reference_count) == (1, 1)
    assert result.ledger_points_total == 700


async def test_a_reference_with_surrounding_spaces_matches_itself(
    ctx: AppContext, hotel_only: str
) -> None:
    async with ctx.database.begin() as conn:
        hotel = await partner_service.get(conn, HOTEL)
    (member,) = await _members(ctx, 1)
    async with ctx.database.begin() as conn:
        await _earn(conn, ctx, hotel, member, 20, " PAD-1 ")
    _, result = await _reconcile(ctx, HOTEL, MARCH, b'partner_reference,points\n" PAD-1 ",20\n')
    assert found(result) == []
