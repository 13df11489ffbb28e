"""Lots in storage: the unspent points of each credit, spent first-in-first-out.

The rules are in gateway.domain.expiry. Every function here runs in the caller's transaction
after the member's balance row changed (and so is locked), which serializes all lot changes of
one member without a lock of their own.
"""

from __future__ import annotations

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.adapters.models import LedgerTransactionRow, LotDrawRow, MemberBalanceRow, table_of
from gateway.domain import expiry

TXNS = table_of(LedgerTransactionRow)
BALANCES = table_of(MemberBalanceRow)
DRAWS = table_of(LotDrawRow)
LOTS_READ_ROWS = 64
"""Lots read per round trip while spending; most debits are paid by the first few."""


async def _adjust(conn: AsyncConnection, changes: list[tuple[int, int]]) -> None:
    """Add each delta to its lot's unspent points."""
    if changes:
        await conn.execute(
            update(TXNS)
            .where(TXNS.c.seq == bindparam("lot"))
            .values(unspent_points=TXNS.c.unspent_points + bindparam("delta")),
            [{"lot": seq, "delta": delta} for seq, delta in changes],
        )


async def _unspent(conn: AsyncConnection, member_id: str, after_seq: int) -> list[expiry.Lot]:
    query = (
        select(TXNS.c.seq, TXNS.c.unspent_points)
        .where(TXNS.c.member_id == member_id, TXNS.c.unspent_points > 0, TXNS.c.seq > after_seq)
        .order_by(TXNS.c.seq)
        .limit(LOTS_READ_ROWS)
    )
    return [expiry.Lot(row.seq, row.unspent_points) for row in await conn.execute(query)]


async def _take_fifo(conn: AsyncConnection, member_id: str, points: int) -> list[tuple[int, int]]:
    """Take points from the member's oldest lots; [(lot seq, points taken)]."""
    taken: list[tuple[int, int]] = []
    after, left = 0, points
    while left:
        lots = await _unspent(conn, member_id, after)
        assert lots, f"member {member_id}: lots hold {points - left} of {points} points"
        covered = min(left, sum(lot.unspent for lot in lots))
        taken += expiry.spend_fifo(lots, covered)
        left -= covered
        after = lots[-1].seq
    await _adjust(conn, [(seq, -points) for seq, points in taken])
    return taken


async def spend(conn: AsyncConnection, member_id: str, debit_seq: int, points: int) -> None:
    """A debit of `points` (already applied to the balance) draws them from the oldest lots."""
    if points <= 0:
        return
    taken = await _take_fifo(conn, member_id, points)
    await conn.execute(
        insert(DRAWS),
        [{"debit_seq": debit_seq, "lot_seq": seq, "points": points} for seq, points in taken],
    )


async def draw(conn: AsyncConnection, debit_seq: int, taken: list[tuple[int, int]]) -> None:
    """A debit takes exactly these [(lot seq, points)] (the caller chose the lots)."""
    taken = [(seq, points) for seq, points in taken if points > 0]
    if not taken:
        return
    await _adjust(conn, [(seq, -points) for seq, points in taken])
    await conn.execute(
        insert(DRAWS),
        [{"debit_seq": debit_seq, "lot_seq": seq, "points": points} for seq, points in taken],
    )


async def refund(conn: AsyncConnection, debit_seq: int, points: int) -> None:
    """Give `points` of a debit back to the lots it drew from, newest draw first."""
    if points <= 0:
        return
    outstanding = await conn.execute(
        select(DRAWS.c.lot_seq, func.sum(DRAWS.c.points).label("points"))
        .where(DRAWS.c.debit_seq == debit_seq)
        .group_by(DRAWS.c.lot_seq)
        .order_by(func.min(DRAWS.c.id))
    )
    returned = expiry.refund_lifo([(row.lot_seq, row.points) for row in outstanding], points)
    await _adjust(conn, returned)
    await conn.execute(
        insert(DRAWS),
        [{"debit_seq": debit_seq, "lot_seq": seq, "points": -points} for seq, points in returned],
    )


async def claw_back(conn: AsyncConnection, member_id: str, earn_seq: int, points: int) -> None:
    """A clawback takes what is left of the earn's own lot first, then the oldest lots."""
    if points <= 0:
        return
    own = await conn.scalar(select(TXNS.c.unspent_points).where(TXNS.c.seq == earn_seq))
    first = min(points, own or 0)
    await _adjust(conn, [(earn_seq, -first)] if first else [])
    if points > first:
        await _take_fifo(conn, member_id, points - first)


# -- the next expiry (GetBalance) ------------------------------------------------------------


async def next_expiry(
    conn: AsyncConnection, policy: expiry.ExpiryPolicy, member_id: str, available: int
) -> expiry.Expiring | None:
    """The earliest of: the next date lots of their own expire (FIXED, whatever the policy now),
    and the date the member's lapsing lots go if they stay inactive (INACTIVITY)."""
    if available <= 0:
        return None
    candidates: list[expiry.Expiring] = []
    dated = (
        await conn.execute(
            select(TXNS.c.expire_time, func.sum(TXNS.c.unspent_points).label("points"))
            .where(
                TXNS.c.member_id == member_id,
                TXNS.c.unspent_points > 0,
                TXNS.c.expire_time.is_not(None),
            )
            .group_by(TXNS.c.expire_time)
            .order_by(TXNS.c.expire_time)
            .limit(1)
        )
    ).first()
    if dated is not None:
        candidates.append(expiry.Expiring(int(dated.points), dated.expire_time))
    if policy.kind is expiry.ExpiryKind.INACTIVITY:
        row = (
            await conn.execute(
                select(
                    func.max(BALANCES.c.last_activity_time).label("last"),
                    func.coalesce(func.sum(TXNS.c.unspent_points), 0).label("points"),
                )
                .select_from(BALANCES)
                .outerjoin(
                    TXNS,
                    (TXNS.c.member_id == BALANCES.c.member_id)
                    & (TXNS.c.unspent_points > 0)
                    & TXNS.c.lapses.is_(True),
                )
                .where(BALANCES.c.member_id == member_id)
            )
        ).one()
        lapse = policy.inactivity_expire_time(row.last) if row.last else None
        if lapse is not None and row.points:
            candidates.append(expiry.Expiring(int(row.points), lapse))
    if not candidates:
        return None
    first = min(c.time for c in candidates)
    return expiry.Expiring(sum(c.points for c in candidates if c.time == first), first)
