"""Points expiry against a real database: lots, FIFO spending, refunds, runs, reminders, dormancy.

Members earn through gateway.service.earning (a hotel paying 1 point per USD, so a purchase of
N x 100 cents earns N points; every member stays below Silver's 5,000 qualifying points, so
no tier bonus muddies the numbers) and spend through gateway.service.ledger. The clock starts
on Monday 2026-01-05 12:00 UTC; under FIXED 12 a lot credited that day expires at
2027-01-06 00:00 UTC. The ctx fixture runs `coalition ledger verify` after every test, which
checks sum(unspent lots) == max(available, 0) per member.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select

from gateway.clock import FixedClock
from gateway.domain import ledger as dl
from gateway.domain.expiry import Expiring, ExpiryKind, ExpiryPolicy
from gateway.domain.members import ContactDetails, Member
from gateway.domain.partners import Partner, PartnerSettings, PartnerType
from gateway.service import earning, expiry, ledger, lots, outbox
from gateway.service import members as members_service
from gateway.service import partners as partner_service
from gateway.service.context import AppContext
from gateway.service.expiry import RunReport

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
FIXED_12 = ExpiryPolicy(ExpiryKind.FIXED, 12, reminder_days=30)
INACTIVE_12 = ExpiryPolicy(ExpiryKind.INACTIVITY, 12, reminder_days=30)
NOTHING = RunReport(0, 0, 0)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


# -- helpers ---------------------------------------------------------------------------------


async def new_partner(ctx: AppContext, partner_id: str, kind: PartnerType) -> Partner:
    async with ctx.database.begin() as conn:
        return await partner_service.create(
            conn, ctx, partner_id, kind, PartnerSettings(partner_id.title(), Decimal(1))
        )


async def enroll(ctx: AppContext, name: str = "Ada Lovelace", **contact: Any) -> Member:
    async with ctx.database.begin() as conn:
        return await members_service.enroll(conn, ctx, ContactDetails(name, **contact))


async def earn(
    ctx: AppContext,
    partner: Partner,
    member: Member,
    points: int,
    vest_time: datetime | None = None,
) -> dl.Transaction:
    async with ctx.database.begin() as conn:
        txn, _ = await earning.earn(
            conn,
            ctx,
            partner,
            member.id,
            earning.Purchase(points * 100, "USD"),
            vest_time=vest_time,
        )
    assert txn.points == points
    return txn


async def redeem(ctx: AppContext, partner: Partner, member: Member, points: int) -> dl.Transaction:
    async with ctx.database.begin() as conn:
        return await ledger.redeem(conn, ctx, partner.id, member.id, points)


async def authorize(ctx: AppContext, partner: Partner, member: Member, points: int) -> str:
    async with ctx.database.begin() as conn:
        hold = await ledger.authorize(conn, ctx, partner.id, member.id, points, 7 * 24 * 3600)
    return hold.name


async def reverse(ctx: AppContext, name: str, points: int = 0) -> dl.Transaction:
    async with ctx.database.begin() as conn:
        return await ledger.reverse(conn, ctx, None, name, points, "test")


async def available(ctx: AppContext, member: Member) -> int:
    async with ctx.database.connect() as conn:
        return (await ledger.balance_of(conn, member.id)).available


@dataclass(frozen=True)
class LotRow:
    txn: str
    unspent: int
    expire_time: datetime | None


async def lot_of(ctx: AppContext, txn: dl.Transaction) -> LotRow:
    t = ledger.TXNS
    async with ctx.database.connect() as conn:
        row = (
            await conn.execute(
                select(t.c.id, t.c.unspent_points, t.c.expire_time).where(t.c.id == txn.id)
            )
        ).one()
    return LotRow(row.id, row.unspent_points, row.expire_time)


async def unspent(ctx: AppContext, *txns: dl.Transaction) -> list[int]:
    return [(await lot_of(ctx, txn)).unspent for txn in txns]


async def events(ctx: AppContext, member: Member, type_: str) -> list[outbox.Event]:
    async with ctx.database.connect() as conn:
        return await outbox.events(conn, subject=member.name, type_=type_)


async def sent(ctx: AppContext, member: Member, type_: str) -> list[tuple[int, datetime]]:
    """(points, expire_time) of the member's PointsExpiring or PointsExpired events."""
    return [
        (e.payload["points"], datetime.fromisoformat(e.payload["expire_time"]))
        for e in await events(ctx, member, type_)
    ]


async def expiries(ctx: AppContext, member: Member) -> list[tuple[str, int]]:
    """(issuing partner, points) of the member's EXPIRY transactions, oldest first."""
    async with ctx.database.connect() as conn:
        page, _ = await ledger.history(conn, member.id, 100, "", kind=dl.TxnType.EXPIRY)
    return sorted((txn.partner_id, txn.points) for txn in page)


async def next_expiry(ctx: AppContext, member: Member) -> Expiring | None:
    points = await available(ctx, member)
    async with ctx.database.connect() as conn:
        return await lots.next_expiry(conn, ctx.expiry, member.id, points)


@pytest.fixture
async def hotel(ctx: AppContext) -> Partner:
    return await new_partner(ctx, "grand-hotel", PartnerType.HOTEL)


@pytest.fixture
async def taxi(ctx: AppContext) -> Partner:
    return await new_partner(ctx, "city-taxi", PartnerType.RIDE_SHARE)


@pytest.fixture
async def member(ctx: AppContext) -> Member:
    return await enroll(ctx)


@pytest.fixture
def clock(ctx: AppContext) -> FixedClock:
    assert isinstance(ctx.clock, FixedClock)
    return ctx.clock


@pytest.fixture
def fixed(ctx: AppContext) -> ExpiryPolicy:
    ctx.expiry = FIXED_12
    return FIXED_12


# -- FIXED: lots expire first-in-first-out -----------------------------------------------------


async def test_lots_are_spent_and_expire_first_in_first_out(
    ctx: AppContext, clock: FixedClock, fixed: ExpiryPolicy, hotel: Partner, member: Member
) -> None:
    assert ctx.clock.now() == T0
    a = await earn(ctx, hotel, member, 1_000)
    clock.set(utc(2026, 2, 10, 9, 0))
    b = await earn(ctx, hotel, member, 1_000)
    assert await lot_of(ctx, a) == LotRow(a.id, 1_000, utc(2027, 1, 6))
    assert await lot_of(ctx, b) == LotRow(b.id, 1_000, utc(2027, 2, 11))

    await redeem(ctx, hotel, member, 600)
    assert await unspent(ctx, a, b) == [400, 1_000], "the oldest lot pays first"

    clock.set(utc(2027, 1, 5, 23, 59, 59))
    assert await expiry.expire_due(ctx) == NOTHING, "a lot lives to the end of its last day"

    clock.set(utc(2027, 1, 6))
    assert await expiry.expire_due(ctx) == RunReport(0, 1, 400), "only A's remainder expires"
    assert await unspent(ctx, a, b) == [0, 1_000]
    assert await available(ctx, member) == 1_000

    clock.set(utc(2027, 2, 11))
    assert await expiry.expire_due(ctx) == RunReport(0, 1, 1_000)
    assert await available(ctx, member) == 0
    assert await expiries(ctx, member) == [(hotel.id, -1_000), (hotel.id, -400)]
    assert await sent(ctx, member, expiry.POINTS_EXPIRED) == [
        (400, utc(2027, 1, 6)),
        (1_000, utc(2027, 2, 11)),
    ]


async def test_a_lot_spent_across_two_lots_expires_only_what_is_left(
    ctx: AppContext, clock: FixedClock, fixed: ExpiryPolicy, hotel: Partner, member: Member
) -> None:
    a = await earn(ctx, hotel, member, 1_000)
    clock.advance(timedelta(days=40))
    b = await earn(ctx, hotel, member, 1_000)
    await redeem(ctx, hotel, member, 1_300)
    assert await unspent(ctx, a, b) == [0, 700]

    clock.set(utc(2027, 1, 6))
    assert await expiry.expire_due(ctx) == NOTHING, "A was spent in full: nothing to expire"
    clock.set(utc(2027, 2, 15))
    assert await expiry.expire_due(ctx) == RunReport(0, 1, 700)
    assert await available(ctx, member) == 0


async def test_running_the_expiry_twice_expires_nothing_twice(
    ctx: AppContext, clock: FixedClock, fixed: ExpiryPolicy, hotel: Partner, member: Member
) -> None:
    await earn(ctx, hotel, member, 800)
    clock.set(utc(2027, 3, 1))

    first = await expiry.run(ctx)
    second = await expiry.run(ctx)
    clock.advance(timedelta(days=1))
    third = await expiry.run(ctx)

    assert (first.expired_members, first.expired_points) == (1, 800)
    assert second == third == NOTHING
    assert await expiries(ctx, member) == [(hotel.id, -800)]
    assert len(await events(ctx, member, expiry.POINTS_EXPIRED)) == 1
    assert await available(ctx, member) == 0


async def test_points_credited_before_the_policy_keep_no_expiry(
    ctx: AppContext, clock: FixedClock, hotel: Partner, member: Member
) -> None:
    before = await earn(ctx, hotel, member, 1_000)
    assert (await lot_of(ctx, before)).expire_time is None
    ctx.expiry = FIXED_12
    clock.advance(timedelta(days=1))
    after = await earn(ctx, hotel, member, 500)
    assert (await lot_of(ctx, after)).expire_time == utc(2027, 1, 7)

    clock.set(utc(2031, 1, 1))
    assert await expiry.expire_due(ctx) == RunReport(0, 1, 500)
    assert await unspent(ctx, before, after) == [1_000, 0]


async def test_an_expiry_date_already_promised_survives_a_policy_change(
    ctx: AppContext, clock: FixedClock, fixed: ExpiryPolicy, hotel: Partner, member: Member
) -> None:
    promised = await earn(ctx, hotel, member, 300)
    ctx.expiry = ExpiryPolicy()
    clock.set(utc(2027, 1, 6))
    assert await expiry.expire_due(ctx) == RunReport(0, 1, 300)
    assert await unspent(ctx, promised) == [0]


# -- refunds go back to the lots they came from ----------------------------------------------


async def test_a_void_after_the_lot_expired_refunds_into_it_and_the_next_run_expires_them(
    ctx: AppContext, clock: FixedClock, fixed: ExpiryPolicy, hotel: Partner, member: Member
) -> None:
    a = await earn(ctx, hotel, member, 1_000)
    clock.set(utc(2026, 3, 1, 12, 0))
    b = await earn(ctx, hotel, member, 500)

    clock.set(utc(2027, 1, 2, 12, 0))
    hold = await authorize(ctx, hotel, member, 1_200)
    assert await unspent(ctx, a, b) == [0, 300]

    clock.set(utc(2027, 1, 6, 1, 0))
    assert await expiry.expire_due(ctx) == NOTHING, "A's points are held, not in the lot"

    async with ctx.database.begin() as conn:
        await ledger.void(conn, ctx, None, hold)
    assert await unspent(ctx, a, b) == [1_000, 500], "back where they came from"
    assert [(await lot_of(ctx, x)).expire_time for x in (a, b)] == [
        utc(2027, 1, 6),
        utc(2027, 3, 2),
    ], "a refund never extends the life of points"

    assert await expiry.expire_due(ctx) == RunReport(0, 1, 1_000)
    assert await unspent(ctx, a, b) == [0, 500]
    assert await available(ctx, member) == 500


async def test_a_hold_that_expires_releases_points_into_their_lots(
    ctx: AppContext, clock: FixedClock, fixed: ExpiryPolicy, hotel: Partner, member: Member
) -> None:
    a = await earn(ctx, hotel, member, 1_000)
    clock.advance(timedelta(days=30))
    b = await earn(ctx, hotel, member, 1_000)
    await authorize(ctx, hotel, member, 1_500)
    assert await unspent(ctx, a, b) == [0, 500]

    clock.advance(timedelta(days=8))  # past the 7-day hold
    async with ctx.database.begin() as conn:
        assert await ledger.settle_due(conn, ctx, member.id) == 1
    assert await unspent(ctx, a, b) == [1_000, 1_000]


async def test_a_capture_releases_the_rest_and_its_reversal_refunds_the_lots(
    ctx: AppContext, clock: FixedClock, fixed: ExpiryPolicy, hotel: Partner, member: Member
) -> None:
    a = await earn(ctx, hotel, member, 1_000)
    clock.advance(timedelta(days=30))
    b = await earn(ctx, hotel, member, 1_000)
    hold = await authorize(ctx, hotel, member, 1_500)
    assert await unspent(ctx, a, b) == [0, 500]

    async with ctx.database.begin() as conn:
        capture = await ledger.capture(conn, ctx, None, hold, 700)
    # 800 released, newest draw first: B's 500, then 300 of A's.
    assert await unspent(ctx, a, b) == [300, 1_000]

    await reverse(ctx, capture.name)
    assert await unspent(ctx, a, b) == [1_000, 1_000]
    assert await available(ctx, member) == 2_000


async def test_a_reversed_redemption_expires_with_the_lot_it_drew_from(
    ctx: AppContext, clock: FixedClock, fixed: ExpiryPolicy, hotel: Partner, member: Member
) -> None:
    a = await earn(ctx, hotel, member, 1_000)
    clock.advance(timedelta(days=1))
    spent = await redeem(ctx, hotel, member, 800)
    clock.set(utc(2026, 6, 1, 12, 0))
    b = await earn(ctx, hotel, member, 1_000)

    await reverse(ctx, spent.name, 300)  # a partial refund: 300 back into A
    assert await unspent(ctx, a, b) == [500, 1_000]
    clock.set(utc(2026, 12, 1, 12, 0))
    await reverse(ctx, spent.name)  # the remaining 500, six months later, still into A
    assert await unspent(ctx, a, b) == [1_000, 1_000]

    clock.set(utc(2027, 1, 6))
    assert await expiry.expire_due(ctx) == RunReport(0, 1, 1_000)
    assert await unspent(ctx, a, b) == [0, 1_000]


# -- clawbacks -------------------------------------------------------------------------------


async def test_a_clawback_takes_the_earns_own_lot_first(
    ctx: AppContext, clock: FixedClock, fixed: ExpiryPolicy, hotel: Partner, member: Member
) -> None:
    a = await earn(ctx, hotel, member, 1_000)
    clock.advance(timedelta(days=30))
    b = await earn(ctx, hotel, member, 1_000)
    await redeem(ctx, hotel, member, 300)
    assert await unspent(ctx, a, b) == [700, 1_000]

    await reverse(ctx, b.name, 400)
    assert await unspent(ctx, a, b) == [700, 600], "B's own lot, though A is older"

    await reverse(ctx, a.name)  # 1,000: A's 700 left, then 300 from the oldest other lot
    assert await unspent(ctx, a, b) == [0, 300]
    assert await available(ctx, member) == 300


async def test_after_a_clawback_into_debt_new_credits_repay_it_before_making_a_lot(
    ctx: AppContext, fixed: ExpiryPolicy, hotel: Partner, member: Member
) -> None:
    a = await earn(ctx, hotel, member, 1_000)
    await redeem(ctx, hotel, member, 800)
    await reverse(ctx, a.name)
    assert await available(ctx, member) == -800
    assert await unspent(ctx, a) == [0]

    c = await earn(ctx, hotel, member, 500)
    d = await earn(ctx, hotel, member, 1_000)
    assert await unspent(ctx, c, d) == [0, 700]
    assert await available(ctx, member) == 700


# -- pending earns ---------------------------------------------------------------------------


async def test_a_pending_earn_becomes_a_lot_dated_from_when_it_vested(
    ctx: AppContext, clock: FixedClock, fixed: ExpiryPolicy, hotel: Partner, member: Member
) -> None:
    vest = utc(2026, 2, 20, 18, 0)
    pending = await earn(ctx, hotel, member, 600, vest_time=vest)
    assert await lot_of(ctx, pending) == LotRow(pending.id, 0, None), "not spendable yet"

    clock.set(utc(2026, 4, 1))  # vested lazily, long after its vest time
    balance, _, expiring = await ledger.current_balance(ctx, member.id)
    assert balance.available == 600
    assert await lot_of(ctx, pending) == LotRow(pending.id, 600, utc(2027, 2, 21))
    assert expiring == Expiring(600, utc(2027, 2, 21))

    clock.set(utc(2027, 2, 21))
    assert await expiry.expire_due(ctx) == RunReport(0, 1, 600)


# -- reminders -------------------------------------------------------------------------------


async def test_each_lot_is_reminded_once_grouped_per_expiry_date(
    ctx: AppContext, clock: FixedClock, fixed: ExpiryPolicy, hotel: Partner, member: Member
) -> None:
    await earn(ctx, hotel, member, 1_000)
    clock.advance(timedelta(hours=6))
    await earn(ctx, hotel, member, 200)  # the same day: the same expiry date
    clock.set(utc(2026, 1, 15, 9, 0))
    await earn(ctx, hotel, member, 500)
    await redeem(ctx, hotel, member, 100)  # the reminder says what is left

    clock.set(utc(2026, 12, 6, 23, 0))
    assert await expiry.remind_due(ctx) == 0, "31 days ahead is too early"
    clock.set(utc(2026, 12, 7))
    assert await expiry.remind_due(ctx) == 1
    assert await expiry.remind_due(ctx) == 0
    clock.advance(timedelta(days=1))
    assert await expiry.remind_due(ctx) == 0
    assert await sent(ctx, member, expiry.POINTS_EXPIRING) == [(1_100, utc(2027, 1, 6))]

    clock.set(utc(2026, 12, 20))
    report = await expiry.run(ctx)
    assert report == RunReport(1, 0, 0)
    report = await expiry.run(ctx)
    assert report == NOTHING
    assert await sent(ctx, member, expiry.POINTS_EXPIRING) == [
        (1_100, utc(2027, 1, 6)),
        (500, utc(2027, 1, 16)),
    ]


async def test_reminders_go_to_the_member(
    ctx: AppContext, clock: FixedClock, fixed: ExpiryPolicy, hotel: Partner, member: Member
) -> None:
    await earn(ctx, hotel, member, 1_000)
    clock.set(utc(2026, 12, 10))
    await expiry.remind_due(ctx)
    clock.set(utc(2027, 1, 6))
    await expiry.expire_due(ctx)
    (reminder,) = await events(ctx, member, expiry.POINTS_EXPIRING)
    (expired,) = await events(ctx, member, expiry.POINTS_EXPIRED)
    assert reminder.payload == {
        "member": member.name,
        "points": 1_000,
        "expire_time": "2027-01-06T00:00:00+00:00",
    }
    assert expired.payload == reminder.payload
    d = outbox.DELIVERIES
    async with ctx.database.connect() as conn:
        rows = await conn.execute(
            select(d.c.event_seq, d.c.destination, d.c.state).order_by(d.c.id)
        )
        assert rows.all() == [
            (reminder.seq, f"member:{member.id}", "PENDING"),
            (expired.seq, f"member:{member.id}", "PENDING"),
        ]


async def test_no_reminders_when_reminder_days_is_zero(
    ctx: AppContext, clock: FixedClock, hotel: Partner, member: Member
) -> None:
    ctx.expiry = ExpiryPolicy(ExpiryKind.FIXED, 12, reminder_days=0)
    await earn(ctx, hotel, member, 1_000)
    clock.set(utc(2027, 1, 5, 23, 0))
    assert await expiry.run(ctx) == NOTHING
    assert await events(ctx, member, expiry.POINTS_EXPIRING) == []


# -- INACTIVITY ------------------------------------------------------------------------------


async def test_inactivity_activity_pushes_the_expiry_and_inactivity_expires_everything(
    ctx: AppContext, clock: FixedClock, hotel: Partner, member: Member
) -> None:
    ctx.expiry = INACTIVE_12
    await earn(ctx, hotel, member, 1_000)
    assert await next_expiry(ctx, member) == Expiring(1_000, utc(2027, 1, 6))

    clock.set(utc(2026, 6, 1, 15, 0))
    await redeem(ctx, hotel, member, 100)  # a burn is activity too
    assert await next_expiry(ctx, member) == Expiring(900, utc(2027, 6, 2))
    clock.set(utc(2027, 1, 6))
    assert await expiry.run(ctx) == NOTHING

    clock.set(utc(2027, 5, 3))  # 30 days before 2027-06-02
    assert await expiry.run(ctx) == RunReport(1, 0, 0)
    assert await expiry.run(ctx) == NOTHING
    clock.advance(timedelta(days=1))
    assert await expiry.run(ctx) == NOTHING, "one reminder per expiry date"

    clock.set(utc(2027, 5, 10, 8, 0))
    await earn(ctx, hotel, member, 100)
    assert await next_expiry(ctx, member) == Expiring(1_000, utc(2028, 5, 11))
    clock.set(utc(2027, 6, 2))
    assert await expiry.run(ctx) == NOTHING, "the earn pushed the expiry a year on"

    clock.set(utc(2028, 4, 11))
    assert await expiry.run(ctx) == RunReport(1, 0, 0), "a new date gets its own reminder"
    clock.set(utc(2028, 5, 10, 23, 59))
    assert await expiry.run(ctx) == NOTHING
    clock.set(utc(2028, 5, 11))
    assert await expiry.run(ctx) == RunReport(0, 1, 1_000)
    assert await expiry.run(ctx) == NOTHING

    assert await available(ctx, member) == 0
    assert await next_expiry(ctx, member) is None
    assert await sent(ctx, member, expiry.POINTS_EXPIRING) == [
        (900, utc(2027, 6, 2)),
        (1_000, utc(2028, 5, 11)),
    ]
    assert await sent(ctx, member, expiry.POINTS_EXPIRED) == [(1_000, utc(2028, 5, 11))]


async def test_inactivity_expiry_leaves_other_members_alone(
    ctx: AppContext, clock: FixedClock, hotel: Partner
) -> None:
    ctx.expiry = INACTIVE_12
    idle, busy = await enroll(ctx, "Idle"), await enroll(ctx, "Busy")
    await earn(ctx, hotel, idle, 400)
    await earn(ctx, hotel, busy, 400)
    clock.set(utc(2026, 12, 1))
    await earn(ctx, hotel, busy, 100)

    clock.set(utc(2027, 1, 6))
    assert await expiry.expire_due(ctx) == RunReport(0, 1, 400)
    assert (await available(ctx, idle), await available(ctx, busy)) == (0, 500)


# -- EXPIRY transactions ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "policy",
    [pytest.param(FIXED_12, id="fixed"), pytest.param(INACTIVE_12, id="inactivity")],
)
async def test_one_expiry_transaction_per_issuing_partner_into_its_breakage_account(
    ctx: AppContext,
    clock: FixedClock,
    hotel: Partner,
    taxi: Partner,
    member: Member,
    policy: ExpiryPolicy,
) -> None:
    ctx.expiry = policy
    await earn(ctx, hotel, member, 1_000)
    await earn(ctx, taxi, member, 500)
    await redeem(ctx, taxi, member, 300)  # spends the hotel's lot first: it is older

    clock.set(utc(2027, 1, 6))
    assert await expiry.expire_due(ctx) == RunReport(0, 1, 1_200)
    assert await expiries(ctx, member) == [(taxi.id, -500), (hotel.id, -700)]
    assert await sent(ctx, member, expiry.POINTS_EXPIRED) == [(1_200, utc(2027, 1, 6))]

    p, t = ledger.POSTINGS, ledger.TXNS
    async with ctx.database.connect() as conn:
        rows = await conn.execute(
            select(t.c.partner_id, p.c.account, p.c.amount)
            .join(t, t.c.seq == p.c.transaction_seq)
            .where(t.c.member_id == member.id, t.c.type == dl.TxnType.EXPIRY.value)
        )
        postings = sorted(rows.all())
    assert postings == [
        (taxi.id, f"member:{member.id}:available", -500),
        (taxi.id, f"partner:{taxi.id}:expired", 500),
        (hotel.id, f"member:{member.id}:available", -700),
        (hotel.id, f"partner:{hotel.id}:expired", 700),
    ]


# -- the next expiry (GetBalance) ------------------------------------------------------------


async def test_next_expiry_is_the_earliest_date_with_its_points(
    ctx: AppContext, clock: FixedClock, fixed: ExpiryPolicy, hotel: Partner, member: Member
) -> None:
    assert await next_expiry(ctx, member) is None
    await earn(ctx, hotel, member, 1_000)
    clock.advance(timedelta(hours=3))
    await earn(ctx, hotel, member, 200)
    clock.set(utc(2026, 2, 1, 12, 0))
    await earn(ctx, hotel, member, 500)
    assert await next_expiry(ctx, member) == Expiring(1_200, utc(2027, 1, 6))

    await redeem(ctx, hotel, member, 1_100)
    assert await next_expiry(ctx, member) == Expiring(100, utc(2027, 1, 6))
    await redeem(ctx, hotel, member, 100)
    assert await next_expiry(ctx, member) == Expiring(500, utc(2027, 2, 2))
    _, _, shown = await ledger.current_balance(ctx, member.id)
    assert shown == Expiring(500, utc(2027, 2, 2)), "what GetBalance shows"


async def test_no_next_expiry_without_a_policy(
    ctx: AppContext, hotel: Partner, member: Member
) -> None:
    await earn(ctx, hotel, member, 1_000)
    assert await next_expiry(ctx, member) is None
    ctx.expiry = FIXED_12
    assert await next_expiry(ctx, member) is None, "a policy change is not retroactive"


# -- dormant members -------------------------------------------------------------------------


async def test_dormant_members_hold_points_and_redeemed_nothing_since(
    ctx: AppContext, clock: FixedClock, hotel: Partner
) -> None:
    consenting = await enroll(ctx, "Consenting", email="c@example.com", marketing_consent=True)
    private = await enroll(ctx, "Private", email="p@example.com")
    old_burn = await enroll(ctx, "Old burn", email="o@example.com", marketing_consent=True)
    recent_burn = await enroll(ctx, "Recent burn")
    recent_hold = await enroll(ctx, "Recent hold")
    empty = await enroll(ctx, "Empty", email="e@example.com", marketing_consent=True)
    for m in (consenting, private, old_burn, recent_burn, recent_hold):
        await earn(ctx, hotel, m, 1_000)
    await redeem(ctx, hotel, old_burn, 100)

    since = utc(2026, 6, 1)
    clock.set(utc(2026, 7, 1))
    await redeem(ctx, hotel, recent_burn, 100)
    await authorize(ctx, hotel, recent_hold, 100)
    late = await enroll(ctx, "Joined late")
    await earn(ctx, hotel, late, 1_000)

    async with ctx.database.connect() as conn:
        found = await expiry.dormant_page(conn, since)
    dormant = {consenting.id, private.id, old_burn.id}
    assert [d.member_id for d in found] == sorted(dormant)
    by_id = {d.member_id: d for d in found}
    assert by_id[consenting.id].email == "c@example.com"
    assert by_id[private.id].email == "", "no marketing consent: no email"
    assert by_id[old_burn.id].available == 900
    assert by_id[old_burn.id].last_redeem_time == T0
    assert by_id[consenting.id].last_redeem_time is None
    assert by_id[consenting.id].last_activity_time == T0
    assert by_id[consenting.id].loyalty_number == consenting.loyalty_number
    assert by_id[consenting.id].display_name == "Consenting"
    assert empty.id not in by_id


@pytest.mark.parametrize("limit", [1, 2, 3, 7])
async def test_dormant_pages_cover_everyone_once_in_id_order(
    ctx: AppContext, clock: FixedClock, hotel: Partner, limit: int
) -> None:
    members = [await enroll(ctx, f"Member {i}") for i in range(7)]
    for m in members:
        await earn(ctx, hotel, m, 100)
    clock.advance(timedelta(days=1))

    seen: list[str] = []
    after = ""
    for _ in range(len(members) + 1):
        async with ctx.database.connect() as conn:
            page = await expiry.dormant_page(conn, ctx.clock.now(), after, limit)
        assert len(page) <= limit
        if not page:
            break
        seen += [d.member_id for d in page]
        after = page[-1].member_id
    assert seen == sorted(m.id for m in members)


# -- policy changes --------------------------------------------------------------------------


async def test_a_fixed_lot_keeps_its_date_after_a_switch_to_inactivity(
    ctx: AppContext, clock: FixedClock, fixed: ExpiryPolicy, hotel: Partner, member: Member
) -> None:
    await earn(ctx, hotel, member, 1_000)
    ctx.expiry = ExpiryPolicy(ExpiryKind.INACTIVITY, 24)
    clock.set(utc(2027, 1, 6))
    assert await expiry.expire_due(ctx) == RunReport(0, 1, 1_000)


async def test_next_expiry_under_inactivity_shows_an_earlier_lot_date(
    ctx: AppContext, fixed: ExpiryPolicy, hotel: Partner, member: Member
) -> None:
    await earn(ctx, hotel, member, 1_000)
    ctx.expiry = ExpiryPolicy(ExpiryKind.INACTIVITY, 24)
    assert await next_expiry(ctx, member) == Expiring(1_000, utc(2027, 1, 6))


async def test_inactivity_does_not_expire_points_credited_before_the_policy(
    ctx: AppContext, clock: FixedClock, hotel: Partner, member: Member
) -> None:
    await earn(ctx, hotel, member, 1_000)  # no policy: these points never expire
    clock.set(utc(2028, 1, 1))
    ctx.expiry = INACTIVE_12
    assert await expiry.run(ctx) == NOTHING
    assert await available(ctx, member) == 1_000


async def test_the_run_reports_one_reminder_per_expiry_date(
    ctx: AppContext, clock: FixedClock, fixed: ExpiryPolicy, hotel: Partner, member: Member
) -> None:
    await earn(ctx, hotel, member, 1_000)
    clock.advance(timedelta(days=10))
    await earn(ctx, hotel, member, 500)
    clock.set(utc(2026, 12, 20))  # both dates (2027-01-06 and 2027-01-16) within 30 days
    report = await expiry.run(ctx)
    assert len(await events(ctx, member, expiry.POINTS_EXPIRING)) == 2
    assert report.reminders == 2  # one member, two dates: two reminders


async def test_reversing_an_expired_earn_takes_its_points_from_breakage_not_the_member(
    ctx: AppContext, clock: FixedClock, fixed: ExpiryPolicy, hotel: Partner, member: Member
) -> None:
    old = await earn(ctx, hotel, member, 1_000)
    clock.set(utc(2027, 2, 1))
    await earn(ctx, hotel, member, 300)  # still valid
    await expiry.run(ctx)
    assert await available(ctx, member) == 300

    refund = await reverse(ctx, old.name, 600)  # the hotel refunds part of the stay
    assert refund.points == 0 and await available(ctx, member) == 300
    rest = await reverse(ctx, old.name)
    assert rest.points == 0 and await available(ctx, member) == 300
    async with ctx.database.connect() as conn:
        breakage = await conn.scalar(
            select(func.coalesce(func.sum(ledger.POSTINGS.c.amount), 0)).where(
                ledger.POSTINGS.c.account == dl.expired(hotel.id)
            )
        )
    assert breakage == 0  # the partner never issued those points after all
