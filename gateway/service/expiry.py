"""Expiry use cases: the expiry run, "points expiring" reminders, the next expiry, dormancy.

The rules are in gateway.domain.expiry. `coalition ledger expire` calls `run`: it walks the
members with something due in keyset order, a bounded batch per scan, and expires each member
in a transaction that locks their balance row before it touches their lots, the same order
every debit follows. A crash loses at most the member in flight, which the next run redoes:
whatever expired is gone from the lots, so nothing expires twice, and a reminder is marked sent
in the transaction that writes it to the outbox.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.adapters import repository as repo
from gateway.domain import donations as dd
from gateway.domain import expiry as de
from gateway.domain import ledger as dl
from gateway.domain.errors import FailedPrecondition
from gateway.service import donations, ledger, outbox
from gateway.service.context import AppContext

TXNS = ledger.TXNS
BALANCES = ledger.BALANCES
EXPIRE_BATCH_MEMBERS = 200
"""Members found due per scan; each is then expired (or reminded) in its own transaction."""
DORMANT_PAGE_ROWS_MAX = 1_000

POINTS_EXPIRING = "PointsExpiring"
POINTS_EXPIRED = "PointsExpired"


@dataclass
class RunReport:
    reminders: int = 0
    expired_members: int = 0
    expired_points: int = 0
    donated_points: int = 0
    """Points that would have expired and went to charities the members pledged them to."""


# -- expiring --------------------------------------------------------------------------------


def _lapse_time(ctx: AppContext, last_activity: datetime | None) -> datetime | None:
    """When the member's lapsing lots expire under the INACTIVITY policy (None: never)."""
    return ctx.expiry.inactivity_expire_time(last_activity) if last_activity else None


async def _lock(conn: AsyncConnection, member_id: str) -> Any:
    return (
        await conn.execute(
            select(BALANCES.c.available, BALANCES.c.last_activity_time)
            .where(BALANCES.c.member_id == member_id)
            .with_for_update()
        )
    ).one()


async def expire_member(
    conn: AsyncConnection, ctx: AppContext, member_id: str
) -> list[dl.Transaction]:
    """Expire what is due for one member: one EXPIRY transaction per issuing partner, or one
    DONATION of it all when the member pledged their expiring points to a charity."""
    now = ctx.clock.now()
    balance = await _lock(conn, member_id)
    lapsed = _lapse_time(ctx, balance.last_activity_time)
    due_now = TXNS.c.expire_time <= now
    if lapsed is not None and lapsed <= now:  # the account lapsed: its lapsing lots go too
        due_now = or_(due_now, TXNS.c.lapses.is_(True))
    due = and_(TXNS.c.member_id == member_id, TXNS.c.unspent_points > 0, due_now)
    lots = (
        await conn.execute(
            select(TXNS.c.seq, TXNS.c.partner_id, TXNS.c.unspent_points, TXNS.c.expire_time)
            .where(due)
            .order_by(TXNS.c.seq)
        )
    ).all()
    if not lots:
        return []
    pledge = await donations.expiring_pledge(conn, member_id)
    if pledge is not None:  # the member gives them to a charity instead of losing them
        try:
            async with conn.begin_nested():
                await conn.execute(
                    update(TXNS)
                    .where(due)
                    .values(donated_points=TXNS.c.donated_points + TXNS.c.unspent_points)
                )
                _, txn = await donations.donate(
                    conn,
                    ctx,
                    member_id,
                    pledge.charity_id,
                    sum(lot.unspent_points for lot in lots),
                    kind=dd.DonationKind.EXPIRING_PLEDGE,
                    pledge=pledge,
                    expiring=[(lot.seq, lot.unspent_points) for lot in lots],
                )
            return [txn]
        except FailedPrecondition:  # the charity was paused meanwhile: the points expire
            pass
    await conn.execute(
        update(TXNS)
        .where(due)
        .values(expired_points=TXNS.c.expired_points + TXNS.c.unspent_points, unspent_points=0)
    )
    by_partner: dict[str, int] = defaultdict(int)
    for lot in lots:
        by_partner[lot.partner_id] += lot.unspent_points
    when = max((lot.expire_time or lapsed or now) for lot in lots)
    txns = [
        await ledger.expire(conn, ctx, member_id, partner, points, f"expired {when.date()}")
        for partner, points in sorted(by_partner.items())
    ]
    total = sum(by_partner.values())
    await outbox.emit(
        conn,
        ctx,
        POINTS_EXPIRED,
        f"members/{member_id}",
        {"member": f"members/{member_id}", "points": total, "expire_time": when.isoformat()},
        member_id=member_id,
    )
    return txns


async def _due_members(
    conn: AsyncConnection, ctx: AppContext, after: str, horizon: datetime, unreminded: bool
) -> tuple[list[str], bool]:
    """Members with something expiring by `horizon` (not yet reminded of, if `unreminded`), in
    id order after `after`, and whether there may be more."""
    policy = ctx.expiry
    lots = select(TXNS.c.member_id).where(
        TXNS.c.unspent_points > 0, TXNS.c.expire_time <= horizon, TXNS.c.member_id > after
    )
    if unreminded:
        lots = lots.where(TXNS.c.remind_time.is_(None))
    lists = [lots.distinct().order_by(TXNS.c.member_id).limit(EXPIRE_BATCH_MEMBERS)]
    if policy.kind is de.ExpiryKind.INACTIVITY:
        lists.append(
            select(BALANCES.c.member_id)
            .where(
                BALANCES.c.available > 0,
                BALANCES.c.last_activity_time <= policy.inactive_since_max(horizon),
                BALANCES.c.member_id > after,
            )
            .order_by(BALANCES.c.member_id)
            .limit(EXPIRE_BATCH_MEMBERS)
        )
    found = [list((await conn.scalars(query)).all()) for query in lists]
    # A full list is complete only up to its last id: stop the batch there.
    full = [ids[-1] for ids in found if len(ids) == EXPIRE_BATCH_MEMBERS]
    bound = min(full) if full else None
    members = sorted({m for ids in found for m in ids if bound is None or m <= bound})
    return members, bound is not None


async def expire_due(ctx: AppContext) -> RunReport:
    """Expire everything due, member after member; safe to run twice or concurrently.

    Each member is expired in a transaction of their own: holding many members' balance rows
    at once could deadlock with the vesting sweep, which locks them in another order.
    """
    report, after = RunReport(), ""
    while True:
        async with ctx.database.connect() as conn:
            members, more = await _due_members(conn, ctx, after, ctx.clock.now(), False)
        for member_id in members:
            async with ctx.database.begin() as conn:
                txns = await expire_member(conn, ctx, member_id)
            if txns:
                report.expired_members += 1
            for txn in txns:
                if txn.type is dl.TxnType.DONATION:
                    report.donated_points -= txn.points
                else:
                    report.expired_points -= txn.points
        if not more:
            return report
        after = members[-1]


# -- reminders -------------------------------------------------------------------------------


async def _remind_member(conn: AsyncConnection, ctx: AppContext, member_id: str) -> int:
    """Send the reminders due for one member; how many were sent."""
    policy, now = ctx.expiry, ctx.clock.now()
    horizon = now + timedelta(days=policy.reminder_days)
    balance = await _lock(conn, member_id)
    reminders: list[tuple[datetime, int]] = []
    lots = (
        await conn.execute(
            select(TXNS.c.seq, TXNS.c.unspent_points, TXNS.c.expire_time).where(
                TXNS.c.member_id == member_id,
                TXNS.c.unspent_points > 0,
                TXNS.c.remind_time.is_(None),
                TXNS.c.expire_time > now,
                TXNS.c.expire_time <= horizon,
            )
        )
    ).all()
    if lots:
        per_date: dict[datetime, int] = defaultdict(int)
        for lot in lots:
            per_date[lot.expire_time] += lot.unspent_points
        reminders += sorted(per_date.items())
        await conn.execute(
            update(TXNS).where(TXNS.c.seq.in_([lot.seq for lot in lots])).values(remind_time=now)
        )
    lapse = _lapse_time(ctx, balance.last_activity_time)
    lapsing = 0
    if lapse is not None and now < lapse <= horizon:
        lapsing = int(
            await conn.scalar(
                select(func.coalesce(func.sum(TXNS.c.unspent_points), 0)).where(
                    TXNS.c.member_id == member_id,
                    TXNS.c.unspent_points > 0,
                    TXNS.c.lapses.is_(True),
                )
            )
            or 0
        )
    if lapsing and lapse is not None:
        marked = await conn.execute(
            update(BALANCES)
            .where(
                BALANCES.c.member_id == member_id,
                or_(
                    BALANCES.c.reminded_expire_time.is_(None),
                    BALANCES.c.reminded_expire_time != lapse,
                ),
            )
            .values(reminded_expire_time=lapse)
        )
        if marked.rowcount == 1:
            reminders.append((lapse, lapsing))
    for expire_time, points in reminders:
        await outbox.emit(
            conn,
            ctx,
            POINTS_EXPIRING,
            f"members/{member_id}",
            {
                "member": f"members/{member_id}",
                "points": points,
                "expire_time": expire_time.isoformat(),
            },
            member_id=member_id,
        )
    return len(reminders)


async def remind_due(ctx: AppContext) -> int:
    """Send every "points expiring" reminder due now; each (lot, date) at most once."""
    if ctx.expiry.reminder_days == 0:
        return 0
    sent, after = 0, ""
    horizon = ctx.clock.now() + timedelta(days=ctx.expiry.reminder_days)
    while True:
        async with ctx.database.connect() as conn:
            members, more = await _due_members(conn, ctx, after, horizon, True)
        for member_id in members:  # one transaction each, like the expiry run
            async with ctx.database.begin() as conn:
                sent += await _remind_member(conn, ctx, member_id)
        if not more:
            return sent
        after = members[-1]


async def run(ctx: AppContext) -> RunReport:
    """`coalition ledger expire`: reminders first (they look ahead), then the expiry itself."""
    reminded = await remind_due(ctx)
    report = await expire_due(ctx)
    report.reminders = reminded
    return report


# -- dormant members -------------------------------------------------------------------------


@dataclass(frozen=True)
class DormantMember:
    member_id: str
    loyalty_number: str
    display_name: str
    email: str
    """Only for members who consented to marketing: the report is for re-engagement."""
    available: int
    last_activity_time: datetime | None
    last_redeem_time: datetime | None


async def dormant_page(
    conn: AsyncConnection, since: datetime, after: str = "", limit: int = DORMANT_PAGE_ROWS_MAX
) -> Sequence[DormantMember]:
    """Members holding points who redeemed nothing since `since`, in id order after `after`."""
    m = repo.MEMBERS
    rows = await conn.execute(
        select(
            m.c.id,
            m.c.loyalty_number,
            m.c.display_name,
            m.c.email,
            m.c.marketing_consent,
            BALANCES.c.available,
            BALANCES.c.last_activity_time,
            BALANCES.c.last_redeem_time,
        )
        .join(BALANCES, BALANCES.c.member_id == m.c.id)
        .where(
            BALANCES.c.available > 0,
            or_(BALANCES.c.last_redeem_time.is_(None), BALANCES.c.last_redeem_time < since),
            m.c.create_time < since,
            m.c.id > after,
        )
        .order_by(m.c.id)
        .limit(min(limit, DORMANT_PAGE_ROWS_MAX))
    )
    return [
        DormantMember(
            member_id=r.id,
            loyalty_number=r.loyalty_number,
            display_name=r.display_name,
            email=r.email if r.marketing_consent else "",
            available=r.available,
            last_activity_time=r.last_activity_time,
            last_redeem_time=r.last_redeem_time,
        )
        for r in rows
    ]
