"""Tier use cases: qualifying points, upgrades on earn, yearly reviews, TierChanged events.

A member's tier changes only while their balance row is locked (by the earn that qualifies
them, or by the review), so an upgrade and a review of one member never interleave.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.adapters import repository as repo
from gateway.adapters.models import MemberRow, QualifyingPointsRow, table_of
from gateway.domain import ledger as dl
from gateway.domain import tiers as dt
from gateway.service import cards, outbox
from gateway.service.context import AppContext

MEMBERS = table_of(MemberRow)
QUALIFYING = table_of(QualifyingPointsRow)
REVIEW_BATCH_MEMBERS = 200
"""Members reviewed per database transaction by `coalition tiers review`."""
REVIEW_YEARS_MAX = 50
"""Reviews caught up for one member in one pass; a bound, not a business rule."""


@dataclass(frozen=True)
class Standing:
    tier: dt.Tier
    review_time: datetime | None


async def standing(conn: AsyncConnection, ctx: AppContext, member_id: str) -> Standing:
    row = (
        await conn.execute(
            select(MEMBERS.c.tier, MEMBERS.c.tier_review_time).where(MEMBERS.c.id == member_id)
        )
    ).one()
    return Standing(ctx.ladder.get(row.tier), row.tier_review_time)


async def lock_standing(conn: AsyncConnection, ctx: AppContext, member_id: str) -> Standing:
    """Lock the member's balance row and read their standing, in one round trip.

    Every change of a member's points or tier that decides on what it read (an earn, a review)
    starts here, so they serialize per member. PostgreSQL holds the row locks until commit;
    SQLite has one writer at a time already (BEGIN IMMEDIATE), and SQLAlchemy leaves FOR UPDATE
    out there.

    Both rows are locked: after waiting for a lock, PostgreSQL re-reads only the rows the lock
    names (READ COMMITTED's recheck), so a tier read beside a balance-only lock is the one from
    before the wait, stale if the earn we waited for upgraded the member. NO KEY UPDATE, so
    inserts whose foreign keys point at the member (KEY SHARE) are not blocked.
    """
    row = (
        await conn.execute(
            select(MEMBERS.c.tier, MEMBERS.c.tier_review_time)
            .join(repo.BALANCES, repo.BALANCES.c.member_id == MEMBERS.c.id)
            .where(MEMBERS.c.id == member_id)
            .with_for_update(of=[repo.BALANCES, MEMBERS], key_share=True)
        )
    ).one()
    return Standing(ctx.ladder.get(row.tier), row.tier_review_time)


async def qualifying_points(conn: AsyncConnection, member_id: str, at: datetime) -> int:
    """Points in the rolling window ending at `at`."""
    total = await conn.scalar(
        select(func.coalesce(func.sum(QUALIFYING.c.points), 0)).where(
            QUALIFYING.c.member_id == member_id,
            QUALIFYING.c.earn_time >= dt.window_start(at),
            QUALIFYING.c.earn_time <= at,
            QUALIFYING.c.record_time <= at,
        )
    )
    return int(total or 0)


async def status(conn: AsyncConnection, ctx: AppContext, member_id: str) -> dt.TierStatus:
    """Where the member stands now, with any review that fell due already applied (read-only:
    the member sees the outcome before the sweeper records it)."""
    now = ctx.clock.now()
    held = await standing(conn, ctx, member_id)
    for _, after in await _due_reviews(conn, ctx, member_id, held, now):
        held = after
    points = await qualifying_points(conn, member_id, now)
    return dt.status(ctx.ladder, held.tier.code, points, held.review_time)


async def _due_reviews(
    conn: AsyncConnection, ctx: AppContext, member_id: str, held: Standing, now: datetime
) -> list[tuple[dt.TierChange, Standing]]:
    """Every review due by `now`, each with the window ending at its own review time."""
    reviews = []
    for _ in range(REVIEW_YEARS_MAX):
        if held.review_time is None or held.review_time > now:
            break
        at = held.review_time
        window = await qualifying_points(conn, member_id, at)
        after = dt.review(ctx.ladder, held.tier, window)
        change = dt.TierChange(at, held.tier, after, window, "REVIEW")
        held = Standing(after, dt.review_after(ctx.ladder, after, at))
        reviews.append((change, held))
    return reviews


async def _change(
    conn: AsyncConnection,
    ctx: AppContext,
    member_id: str,
    held: Standing,
    change: dt.TierChange,
    review_time: datetime | None,
) -> None:
    """Move the member's tier, guarded on the standing read, and announce it."""
    moved = await conn.execute(
        update(MEMBERS)
        .where(
            MEMBERS.c.id == member_id,
            MEMBERS.c.tier == held.tier.code,
            MEMBERS.c.tier_review_time.is_(None)
            if held.review_time is None
            else MEMBERS.c.tier_review_time == held.review_time,
        )
        .values(tier=change.tier.code, tier_review_time=review_time)
    )
    assert moved.rowcount == 1, "tier changes happen under the member's balance lock"
    if change.tier == change.previous:
        return
    await cards.mark_if_carded(conn, member_id)
    up = ctx.ladder.rank(change.tier) > ctx.ladder.rank(change.previous)
    await outbox.emit(
        conn,
        ctx,
        outbox.TIER_CHANGED,
        f"members/{member_id}",
        {
            "member": f"members/{member_id}",
            "previous_tier": change.previous.code,
            "tier": change.tier.code,
            "direction": "UP" if up else "DOWN",
            "reason": change.reason,
            "qualifying_points": change.qualifying_points,
            "change_time": change.at.isoformat(),
            "review_time": review_time.isoformat() if review_time else None,
        },
        member_id=member_id,
    )


# -- earning and reversing -------------------------------------------------------------------


async def record_earn(
    conn: AsyncConnection, ctx: AppContext, txn: dl.Transaction, points: int, held: Standing
) -> dt.TierStatus:
    """Count an earn's qualifying points; upgrade the member at once if they crossed a threshold.

    The caller holds the member's balance lock and read `held` under it. Returns where the
    member stands after the earn.
    """
    now = txn.create_time
    if points > 0:
        await conn.execute(
            insert(QUALIFYING).values(
                member_id=txn.member_id,
                transaction_id=txn.id,
                points=points,
                earn_time=now,
                record_time=now,
            )
        )
    window = await qualifying_points(conn, txn.member_id, now)
    reached = dt.upgrade(ctx.ladder, held.tier, window) if points > 0 else None
    if reached is not None:
        review_time = dt.review_after(ctx.ladder, reached, now)
        change = dt.TierChange(now, held.tier, reached, window, "QUALIFIED")
        await _change(conn, ctx, txn.member_id, held, change, review_time)
        held = Standing(reached, review_time)
    return dt.status(ctx.ladder, held.tier.code, window, held.review_time)


async def record_reversal(
    conn: AsyncConnection,
    ctx: AppContext,
    earn: dl.Transaction,
    reversal_id: str,
    reversed_before: int,
    reversed_after: int,
) -> None:
    """Net an earn's qualifying points by the reversed share; never changes the tier.

    Shares are computed on the running total, so partial reversals adding up to the whole
    remove exactly the earn's qualifying points.
    """
    earned = await conn.scalar(
        select(QUALIFYING.c.points).where(
            QUALIFYING.c.transaction_id == earn.id, QUALIFYING.c.points > 0
        )
    )
    if not earned or not earn.points:
        return
    total = abs(earn.points)
    share = earned * reversed_after // total - earned * reversed_before // total
    if share:
        await conn.execute(
            insert(QUALIFYING).values(
                member_id=earn.member_id,
                transaction_id=reversal_id,
                points=-share,
                earn_time=earn.create_time,
                record_time=ctx.clock.now(),
            )
        )


# -- reviews ---------------------------------------------------------------------------------


async def review_member(
    conn: AsyncConnection, ctx: AppContext, member_id: str, held: Standing | None = None
) -> Standing:
    """Apply every review due for one member; the caller holds the member's balance lock.

    Reviews run at their own review time, with the window ending then, however late this runs:
    the outcome depends on the history, not on when the sweeper came by.
    """
    if held is None:
        held = await standing(conn, ctx, member_id)
    for change, after in await _due_reviews(conn, ctx, member_id, held, ctx.clock.now()):
        await _change(conn, ctx, member_id, held, change, after.review_time)
        held = after
    return held


async def due_for_review(
    conn: AsyncConnection, ctx: AppContext, limit: int = REVIEW_BATCH_MEMBERS
) -> list[str]:
    rows = await conn.execute(
        select(MEMBERS.c.id)
        .where(MEMBERS.c.tier_review_time <= ctx.clock.now())
        .order_by(MEMBERS.c.tier_review_time, MEMBERS.c.id)
        .limit(limit)
    )
    return [r.id for r in rows]


async def run_reviews(ctx: AppContext, batch: int = REVIEW_BATCH_MEMBERS) -> tuple[int, int]:
    """Review every member whose review is due, a batch per transaction; (reviewed, changed).

    Idempotent and resumable: a reviewed member's next review is a year later, so a second run
    (or a run after a crash) finds only what is still due.
    """
    reviewed = changed = 0
    while True:
        async with ctx.database.begin() as conn:
            due = await due_for_review(conn, ctx, batch)
            for member_id in due:
                before = await lock_standing(conn, ctx, member_id)
                after = await review_member(conn, ctx, member_id, before)
                reviewed += 1
                changed += after.tier != before.tier
        if len(due) < batch:
            return reviewed, changed
