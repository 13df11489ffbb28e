"""Ledger use cases: earn, redeem, holds, reversals, vesting; each in the caller's transaction.

Concurrency without locks we could forget: a member's balance changes through one guarded
UPDATE ... RETURNING (the guard is the WHERE clause, so two redemptions cannot both pass it),
and a transaction's lifecycle moves through conditional UPDATEs that name the state they expect
(a capture and a void racing on one hold: exactly one matches).
"""

from __future__ import annotations

import json
import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.adapters.models import (
    LedgerTransactionRow,
    MemberBalanceRow,
    PostingRow,
    table_of,
)
from gateway.domain import expiry, paging
from gateway.domain import ledger as dl
from gateway.domain.errors import FailedPrecondition, InvalidArgument, NotFound
from gateway.domain.tiers import TierStatus
from gateway.service import cards, lots, tiers
from gateway.service.context import AppContext

TXNS = table_of(LedgerTransactionRow)
POSTINGS = table_of(PostingRow)
BALANCES = table_of(MemberBalanceRow)
TRANSACTION_ID_BYTES = 12
SETTLE_BATCH_ROWS = 500
"""Due vestings and expiring holds settled per database transaction by the sweeper."""


# -- storage helpers -------------------------------------------------------------------------


async def create_balance(conn: AsyncConnection, member_id: str) -> None:
    await conn.execute(insert(BALANCES).values(member_id=member_id, available=0, pending=0, held=0))


async def _change(
    conn: AsyncConnection,
    member_id: str,
    available: int = 0,
    pending: int = 0,
    held: int = 0,
    need_available: int | None = None,
    active_at: datetime | None = None,
    burn: bool = False,
) -> dl.Balance | None:
    """Apply deltas in one guarded statement; None if the guard (available >= need) failed.

    active_at records an earn or burn (the inactivity expiry counts from it); burn marks it a
    redemption too (the dormant-members report reads that).
    """
    activity: dict[str, datetime] = {}
    if active_at is not None:
        activity["last_activity_time"] = active_at
        if burn:
            activity["last_redeem_time"] = active_at
    query = (
        update(BALANCES)
        .where(BALANCES.c.member_id == member_id)
        .values(
            available=BALANCES.c.available + available,
            pending=BALANCES.c.pending + pending,
            held=BALANCES.c.held + held,
            **activity,
        )
        .returning(
            BALANCES.c.available, BALANCES.c.pending, BALANCES.c.held, BALANCES.c.wallet_card
        )
    )
    if need_available is not None:
        query = query.where(BALANCES.c.available >= need_available)
    row = (await conn.execute(query)).first()
    if row is None:
        return None
    if row.wallet_card:
        await cards.mark(conn, member_id)
    return dl.Balance(row.available, row.pending, row.held)


async def _spend(
    conn: AsyncConnection,
    ctx: AppContext,
    member_id: str,
    points: int,
    hold: bool = False,
    by_member: bool = True,
) -> dl.Balance:
    """Take points from the available balance (into held, for a hold), or refuse: every
    burn, conversion, donation and authorization goes through this one guard.

    by_member=False: a standing order (a monthly pledge) spends, not the member: it is not
    activity (it would keep an inactive account from lapsing) nor a redemption of theirs.
    """
    balance = await _change(
        conn,
        member_id,
        available=-points,
        held=points if hold else 0,
        need_available=points,
        active_at=ctx.clock.now() if by_member else None,
        burn=by_member,
    )
    if balance is None:
        raise dl.insufficient(await balance_of(conn, member_id), points)
    return balance


async def balance_of(conn: AsyncConnection, member_id: str) -> dl.Balance:
    row = (
        await conn.execute(
            select(BALANCES.c.available, BALANCES.c.pending, BALANCES.c.held).where(
                BALANCES.c.member_id == member_id
            )
        )
    ).first()
    return dl.Balance(row.available, row.pending, row.held) if row else dl.Balance()


async def _post(conn: AsyncConnection, seq: int, postings: list[dl.Posting]) -> None:
    assert not dl.unbalanced_assets(postings), f"unbalanced postings {postings}"
    if postings:
        await conn.execute(
            insert(POSTINGS),
            [
                {"transaction_seq": seq, "account": p.account, "asset": p.asset, "amount": p.amount}
                for p in postings
            ],
        )


async def _record(
    conn: AsyncConnection,
    ctx: AppContext,
    *,
    member_id: str,
    partner_id: str,
    kind: dl.TxnType,
    state: dl.TxnState,
    points: int,
    balance: dl.Balance,
    postings: list[dl.Posting],
    open_points: int = 0,
    related_id: str | None = None,
    reference: str = "",
    breakdown: tuple[dict[str, object], ...] = (),
    due_time: datetime | None = None,
    occur_time: datetime | None = None,
    lot: tuple[int, datetime | None] = (0, None),
    spend: int = 0,
    draws: list[tuple[int, int]] | None = None,
    channel_partner_id: str | None = None,
) -> dl.Transaction:
    """Store a transaction and its postings.

    lot: a credit's (unspent points, expire time); spend: points this debit takes from lots,
    oldest first, or draws: exactly which lots it takes them from [(lot seq, points)].
    """
    txn = dl.Transaction(
        id=secrets.token_hex(TRANSACTION_ID_BYTES),
        member_id=member_id,
        partner_id=partner_id,
        type=kind,
        state=state,
        points=points,
        open_points=open_points,
        reversed_points=0,
        related_id=related_id,
        partner_reference=reference,
        breakdown=breakdown,
        due_time=due_time,
        occur_time=occur_time,
        balance_after=balance,
        create_time=ctx.clock.now(),
        channel_partner_id=channel_partner_id,
    )
    seq = await conn.scalar(
        insert(TXNS)
        .values(
            id=txn.id,
            member_id=member_id,
            partner_id=partner_id,
            channel_partner_id=channel_partner_id,
            type=kind.value,
            state=state.value,
            points=points,
            open_points=open_points,
            reversed_points=0,
            related_id=related_id,
            partner_reference=reference,
            breakdown=json.dumps(list(breakdown)),
            due_time=due_time,
            occur_time=occur_time,
            available_after=balance.available,
            pending_after=balance.pending,
            held_after=balance.held,
            create_time=txn.create_time,
            unspent_points=lot[0],
            expire_time=lot[1] if lot[0] else None,
            lapses=bool(lot[0]) and ctx.expiry.kind is expiry.ExpiryKind.INACTIVITY,
        )
        .returning(TXNS.c.seq)
    )
    assert seq is not None
    await _post(conn, seq, postings)
    if draws is None:
        await lots.spend(conn, member_id, seq, spend)
    else:
        await lots.draw(conn, seq, draws)
    return txn


def _transaction(row: Any) -> dl.Transaction:
    return dl.Transaction(
        id=row.id,
        member_id=row.member_id,
        partner_id=row.partner_id,
        type=dl.TxnType(row.type),
        state=dl.TxnState(row.state),
        points=row.points,
        open_points=row.open_points,
        reversed_points=row.reversed_points,
        related_id=row.related_id,
        partner_reference=row.partner_reference,
        breakdown=tuple(json.loads(row.breakdown)),
        due_time=row.due_time,
        occur_time=row.occur_time,
        balance_after=dl.Balance(row.available_after, row.pending_after, row.held_after),
        create_time=row.create_time,
        channel_partner_id=row.channel_partner_id,
    )


def parse_transaction_name(name: str, field: str = "transaction") -> tuple[str, str]:
    parts = name.split("/")
    if len(parts) != 4 or parts[0] != "members" or parts[2] != "transactions" or not all(parts):
        raise InvalidArgument.on_field(
            field,
            "INVALID_TRANSACTION_NAME",
            'expected "members/{member}/transactions/{transaction}"',
        )
    return parts[1], parts[3]


async def _load(
    conn: AsyncConnection, name: str, partner_id: str | None
) -> tuple[int, dl.Transaction]:
    """The transaction and its seq; another partner's transaction is simply not found."""
    member_id, txn_id = parse_transaction_name(name)
    query = select(TXNS).where(TXNS.c.id == txn_id, TXNS.c.member_id == member_id)
    if partner_id is not None:
        query = query.where(
            (TXNS.c.partner_id == partner_id) | (TXNS.c.channel_partner_id == partner_id)
        )
    row = (await conn.execute(query)).first()
    if row is None:
        raise NotFound("TRANSACTION_NOT_FOUND", f"no transaction {name}", {"transaction": name})
    return row.seq, _transaction(row)


# -- earning ---------------------------------------------------------------------------------


async def earn(
    conn: AsyncConnection,
    ctx: AppContext,
    partner_id: str,
    member_id: str,
    points: int,
    breakdown: tuple[dict[str, object], ...],
    reference: str = "",
    vest_time: datetime | None = None,
    occur_time: datetime | None = None,
    channel_partner_id: str | None = None,
) -> dl.Transaction:
    """Post points the rules computed (gateway.service.earning decides how many).

    channel_partner_id: the travel agency that submitted the earn for the airline partner_id.
    """
    now = ctx.clock.now()
    vest = dl.check_vest_time(now, vest_time)
    source = dl.issued(partner_id)
    if vest is None:
        target, state = dl.available(member_id), dl.TxnState.POSTED
        balance = await _change(conn, member_id, available=points, active_at=now)
    else:
        target, state = dl.pending(member_id), dl.TxnState.PENDING
        balance = await _change(conn, member_id, pending=points, active_at=now)
    assert balance is not None, "every member has a balance row"
    lot: tuple[int, datetime | None] = (0, None)
    if vest is None:
        unspent = expiry.lot_change(balance.available - points, balance.available)
        lot = (unspent, ctx.expiry.lot_expire_time(now))
    return await _record(
        conn,
        ctx,
        member_id=member_id,
        partner_id=partner_id,
        kind=dl.TxnType.EARN,
        state=state,
        points=points,
        balance=balance,
        postings=list(dl.move(source, target, points)) if points else [],
        open_points=points if vest else 0,
        reference=reference,
        breakdown=breakdown,
        due_time=vest,
        occur_time=occur_time,
        lot=lot,
        channel_partner_id=channel_partner_id,
    )


# -- burning ---------------------------------------------------------------------------------


async def redeem(
    conn: AsyncConnection,
    ctx: AppContext,
    partner_id: str,
    member_id: str,
    points: int,
    reference: str = "",
) -> dl.Transaction:
    dl.check_points(points)
    dl.check_reference(reference)
    return await burn(conn, ctx, partner_id, member_id, points, dl.TxnType.REDEEM, reference)


async def burn(
    conn: AsyncConnection,
    ctx: AppContext,
    partner_id: str,
    member_id: str,
    points: int,
    kind: dl.TxnType,
    reference: str = "",
) -> dl.Transaction:
    """Spend points at once (a redemption, a reward): they go to the partner that honours them."""
    balance = await _spend(conn, ctx, member_id, points)
    return await _record(
        conn,
        ctx,
        member_id=member_id,
        partner_id=partner_id,
        kind=kind,
        state=dl.TxnState.POSTED,
        points=-points,
        balance=balance,
        postings=list(dl.move(dl.available(member_id), dl.redeemed(partner_id), points)),
        reference=reference,
        spend=points,
    )


async def convert(
    conn: AsyncConnection,
    ctx: AppContext,
    airline_id: str,
    member_id: str,
    points: int,
    units: int,
    unit: str,
    description: str,
) -> dl.Transaction:
    """Points leave the member (first in, first out) for units of the airline's program.

    The units are their own asset, owed by the airline to the member's program account; the
    breakdown keeps how many, so a reversal can take them back exactly.
    """
    balance = await _spend(conn, ctx, member_id, points)
    postings = [
        *dl.move(dl.available(member_id), dl.converted(airline_id), points),
        dl.Posting(dl.program_issued(airline_id), -units, unit),
        dl.Posting(dl.program_member(airline_id, member_id), units, unit),
    ]
    component = {
        "kind": "CONVERSION",
        "description": description,
        "points": -points,
        "source": f"partners/{airline_id}",
        "units": units,
        "unit": unit,
    }
    return await _record(
        conn,
        ctx,
        member_id=member_id,
        partner_id=airline_id,
        kind=dl.TxnType.CONVERSION,
        state=dl.TxnState.POSTED,
        points=-points,
        balance=balance,
        postings=postings,
        breakdown=(component,),
        spend=points,
    )


async def donate(
    conn: AsyncConnection,
    ctx: AppContext,
    charity_id: str,
    member_id: str,
    points: int,
    breakdown: tuple[dict[str, object], ...],
    match: tuple[str, int] | None = None,
    by_member: bool = True,
    expiring: list[tuple[int, int]] | None = None,
) -> dl.Transaction:
    """Points leave the member for the charity, joined by the sponsor's match (sponsor id,
    points).

    by_member=False: a monthly pledge gives them (see _spend). expiring: the lots
    [(seq, points)] whose points are due to expire, given by an EXPIRING pledge instead of
    expiring; they are taken as they are, and remembered on each lot (donated_points) so that
    a clawback of the earn does not charge the member for points they were losing anyway.
    """
    if expiring is None:
        balance = await _spend(conn, ctx, member_id, points, by_member=by_member)
    else:
        lapsing = await _change(conn, member_id, available=-points, need_available=points)
        assert lapsing is not None, f"member {member_id}: lots hold more than is available"
        balance = lapsing
    postings = list(dl.move(dl.available(member_id), dl.donated(charity_id), points))
    if match is not None:
        postings += dl.move(dl.matched(match[0]), dl.donated(charity_id), match[1])
    return await _record(
        conn,
        ctx,
        member_id=member_id,
        partner_id=charity_id,
        kind=dl.TxnType.DONATION,
        state=dl.TxnState.POSTED,
        points=-points,
        balance=balance,
        postings=postings,
        breakdown=breakdown,
        spend=points,
        draws=expiring,
    )


async def authorize(
    conn: AsyncConnection,
    ctx: AppContext,
    partner_id: str,
    member_id: str,
    points: int,
    hold_seconds: int | None,
    reference: str = "",
) -> dl.Transaction:
    dl.check_points(points)
    dl.check_reference(reference)
    now = ctx.clock.now()
    expires = dl.hold_expiry(now, hold_seconds)
    balance = await _spend(conn, ctx, member_id, points, hold=True)
    return await _record(
        conn,
        ctx,
        member_id=member_id,
        partner_id=partner_id,
        kind=dl.TxnType.AUTHORIZATION,
        state=dl.TxnState.PENDING,
        points=-points,
        balance=balance,
        postings=list(dl.move(dl.available(member_id), dl.held(member_id), points)),
        open_points=points,
        reference=reference,
        due_time=expires,
        spend=points,
    )


async def _close_hold(
    conn: AsyncConnection, seq: int, hold: dl.Transaction, new_state: dl.TxnState
) -> bool:
    """Move an open hold out of PENDING; False if someone else already did."""
    result = await conn.execute(
        update(TXNS)
        .where(
            TXNS.c.seq == seq,
            TXNS.c.state == dl.TxnState.PENDING.value,
            TXNS.c.open_points == hold.open_points,
        )
        .values(state=new_state.value, open_points=0)
    )
    return result.rowcount == 1


def _check_open_hold(hold: dl.Transaction, now: datetime) -> None:
    if hold.type is not dl.TxnType.AUTHORIZATION:
        raise FailedPrecondition(
            "NOT_AN_AUTHORIZATION",
            "only an authorization can be captured or voided",
            {"transaction": hold.name},
        )
    expired = hold.state is dl.TxnState.EXPIRED or (
        hold.state is dl.TxnState.PENDING and hold.due_time is not None and hold.due_time <= now
    )
    if expired:
        raise FailedPrecondition(
            "HOLD_EXPIRED",
            "the hold expired and its points were released",
            {"transaction": hold.name},
        )
    if hold.state is not dl.TxnState.PENDING:
        raise FailedPrecondition(
            "HOLD_NOT_OPEN",
            f"the hold is already {hold.state.value.lower()}",
            {"transaction": hold.name, "state": hold.state.value},
        )


async def capture(
    conn: AsyncConnection, ctx: AppContext, partner_id: str | None, name: str, points: int
) -> dl.Transaction:
    dl.check_points(points, allow_zero=True)
    seq, hold = await _load(conn, name, partner_id)
    _check_open_hold(hold, ctx.clock.now())
    captured = points or hold.open_points
    if captured > hold.open_points:
        raise FailedPrecondition(
            "CAPTURE_EXCEEDS_HOLD",
            f"{captured} points requested, {hold.open_points} held",
            {"held_points": str(hold.open_points)},
        )
    if not await _close_hold(conn, seq, hold, dl.TxnState.POSTED):
        raise FailedPrecondition("HOLD_NOT_OPEN", "the hold changed meanwhile; read it again")
    released = hold.open_points - captured
    member = hold.member_id
    balance = await _change(
        conn,
        member,
        available=released,
        held=-hold.open_points,
        active_at=ctx.clock.now(),
        burn=True,
    )
    assert balance is not None
    await lots.refund(conn, seq, expiry.lot_change(balance.available - released, balance.available))
    postings = list(dl.move(dl.held(member), dl.redeemed(hold.partner_id), captured))
    if released:
        postings += dl.move(dl.held(member), dl.available(member), released)
    return await _record(
        conn,
        ctx,
        member_id=member,
        partner_id=hold.partner_id,
        kind=dl.TxnType.CAPTURE,
        state=dl.TxnState.POSTED,
        points=-captured,
        balance=balance,
        postings=postings,
        related_id=hold.id,
        reference=hold.partner_reference,
    )


async def void(
    conn: AsyncConnection, ctx: AppContext, partner_id: str | None, name: str
) -> dl.Transaction:
    seq, hold = await _load(conn, name, partner_id)
    _check_open_hold(hold, ctx.clock.now())
    if not await _close_hold(conn, seq, hold, dl.TxnState.VOIDED):
        raise FailedPrecondition("HOLD_NOT_OPEN", "the hold changed meanwhile; read it again")
    member = hold.member_id
    balance = await _change(conn, member, available=hold.open_points, held=-hold.open_points)
    assert balance is not None
    await lots.refund(
        conn, seq, expiry.lot_change(balance.available - hold.open_points, balance.available)
    )
    return await _record(
        conn,
        ctx,
        member_id=member,
        partner_id=hold.partner_id,
        kind=dl.TxnType.VOID,
        state=dl.TxnState.POSTED,
        points=0,
        balance=balance,
        postings=list(dl.move(dl.held(member), dl.available(member), hold.open_points)),
        related_id=hold.id,
        reference=hold.partner_reference,
    )


# -- reversals -------------------------------------------------------------------------------


async def reverse(
    conn: AsyncConnection,
    ctx: AppContext,
    partner_id: str | None,
    name: str,
    points: int,
    reason: str = "",
) -> dl.Transaction:
    """Refund a redemption or claw back an earn, all (points=0) or part of it."""
    dl.check_points(points, allow_zero=True)
    dl.check_reference(reason, "reason")
    seq, original = await _load(conn, name, partner_id)
    if original.type is dl.TxnType.EARN and original.state is dl.TxnState.PENDING:
        return await _cancel_pending(conn, ctx, seq, original, points, reason)
    left = dl.reversible_points(
        original.type, original.state, original.points, original.reversed_points
    )
    reversible = (dl.TxnType.EARN, dl.TxnType.REDEEM, dl.TxnType.CAPTURE, dl.TxnType.CONVERSION)
    if original.type not in reversible or original.state is not dl.TxnState.POSTED:
        raise FailedPrecondition(
            "TRANSACTION_NOT_REVERSIBLE",
            f"a {original.type.value.lower()} in state {original.state.value} cannot be reversed",
            {"transaction": name},
        )
    amount = points or left
    if amount == 0 or amount > left:
        raise FailedPrecondition(
            "REVERSAL_EXCEEDS_ORIGINAL",
            f"{amount} points requested, {left} left to reverse",
            {"reversible_points": str(left)},
        )
    if original.type is dl.TxnType.CONVERSION and amount != -original.points:
        raise FailedPrecondition(
            "CONVERSION_REVERSED_IN_FULL_ONLY",
            "a conversion is rejected whole: reverse it with points = 0",
            {"transaction": name},
        )
    return await _reverse_posted(conn, ctx, seq, original, amount, reason)


async def _reverse_posted(
    conn: AsyncConnection,
    ctx: AppContext,
    seq: int,
    original: dl.Transaction,
    amount: int,
    reason: str,
) -> dl.Transaction:
    """Reverse `amount` points of a posted earn (a clawback) or debit (a refund)."""
    claimed = await conn.execute(
        update(TXNS)
        .where(TXNS.c.seq == seq, TXNS.c.reversed_points + amount <= func.abs(TXNS.c.points))
        .values(reversed_points=TXNS.c.reversed_points + amount)
        .returning(TXNS.c.reversed_points)
    )
    reversed_after = claimed.scalar_one_or_none()
    if reversed_after is None:
        raise FailedPrecondition(
            "REVERSAL_EXCEEDS_ORIGINAL", "a concurrent reversal took the rest; read it again"
        )
    member, partner = original.member_id, original.partner_id
    if original.type is dl.TxnType.EARN:
        # Points of the earn that expired already went to breakage: they come back from there,
        # not from the member a second time. The row is locked by the claim above.
        expired = await conn.scalar(select(TXNS.c.expired_points).where(TXNS.c.seq == seq))
        from_breakage = min(amount, expired or 0)
        postings: list[dl.Posting] = []
        if from_breakage:
            await conn.execute(
                update(TXNS)
                .where(TXNS.c.seq == seq)
                .values(expired_points=TXNS.c.expired_points - from_breakage)
            )
            postings += dl.move(dl.expired(partner), dl.issued(partner), from_breakage)
        # Points of the earn that a pledge gave to a charity as they expired: the charity keeps
        # its gift, and the coalition absorbs the clawback, as breakage would have.
        donated = await conn.scalar(select(TXNS.c.donated_points).where(TXNS.c.seq == seq))
        from_coalition = min(amount - from_breakage, donated or 0)
        if from_coalition:
            await conn.execute(
                update(TXNS)
                .where(TXNS.c.seq == seq)
                .values(donated_points=TXNS.c.donated_points - from_coalition)
            )
            postings += dl.move(dl.ADJUSTMENTS, dl.issued(partner), from_coalition)
        from_member = amount - from_breakage - from_coalition
        if from_member:
            # A clawback may take available below zero: the member then owes the points.
            balance = await _change(conn, member, available=-from_member)
            assert balance is not None
            taken = -expiry.lot_change(balance.available + from_member, balance.available)
            await lots.claw_back(conn, member, seq, taken)
            postings += dl.move(dl.available(member), dl.issued(partner), from_member)
        else:
            balance = await balance_of(conn, member)
        signed = -from_member
    else:
        balance = await _change(conn, member, available=amount)
        assert balance is not None
        debit_seq: int | None = seq
        if original.type is dl.TxnType.CAPTURE:  # the hold drew the points, not the capture
            debit_seq = await conn.scalar(
                select(TXNS.c.seq).where(TXNS.c.id == original.related_id)
            )
        assert debit_seq is not None
        await lots.refund(
            conn, debit_seq, expiry.lot_change(balance.available - amount, balance.available)
        )
        if original.type is dl.TxnType.CONVERSION:  # the airline rejected it: undo it whole
            (component,) = original.breakdown
            units, unit = int(str(component["units"])), str(component["unit"])
            postings = [
                *dl.move(dl.converted(partner), dl.available(member), amount),
                dl.Posting(dl.program_member(partner, member), -units, unit),
                dl.Posting(dl.program_issued(partner), units, unit),
            ]
        else:
            postings = list(dl.move(dl.redeemed(partner), dl.available(member), amount))
        signed = amount
    txn = await _record(
        conn,
        ctx,
        member_id=member,
        partner_id=partner,
        kind=dl.TxnType.REVERSAL,
        state=dl.TxnState.POSTED,
        points=signed,
        balance=balance,
        postings=postings,
        related_id=original.id,
        reference=reason or original.partner_reference,
        channel_partner_id=original.channel_partner_id,  # the agency sees its refunds too
    )
    if original.type is dl.TxnType.EARN:
        await tiers.record_reversal(
            conn, ctx, original, txn.id, reversed_after - amount, reversed_after
        )
    return txn


async def refund_reward(
    conn: AsyncConnection, ctx: AppContext, txn_id: str, reason: str
) -> dl.Transaction:
    """Give a reward's points back in full (its voucher was refunded)."""
    row = (await conn.execute(select(TXNS).where(TXNS.c.id == txn_id))).one()
    original = _transaction(row)
    assert original.type is dl.TxnType.REWARD and original.reversed_points == 0
    return await _reverse_posted(conn, ctx, row.seq, original, -original.points, reason)


async def _cancel_pending(
    conn: AsyncConnection,
    ctx: AppContext,
    seq: int,
    earn_txn: dl.Transaction,
    points: int,
    reason: str,
) -> dl.Transaction:
    if earn_txn.due_time is not None and earn_txn.due_time <= ctx.clock.now():
        raise FailedPrecondition(
            "ALREADY_VESTED",
            "the points vested; reverse them as a posted earn",
            {"transaction": earn_txn.name},
        )
    amount = points or earn_txn.open_points
    if amount > earn_txn.open_points:
        raise FailedPrecondition(
            "REVERSAL_EXCEEDS_ORIGINAL",
            f"{amount} points requested, {earn_txn.open_points} pending",
            {"reversible_points": str(earn_txn.open_points)},
        )
    rest = earn_txn.open_points - amount
    changed = await conn.execute(
        update(TXNS)
        .where(
            TXNS.c.seq == seq,
            TXNS.c.state == dl.TxnState.PENDING.value,
            TXNS.c.open_points == earn_txn.open_points,
        )
        .values(
            open_points=rest,
            reversed_points=TXNS.c.reversed_points + amount,
            state=(dl.TxnState.PENDING if rest else dl.TxnState.VOIDED).value,
        )
    )
    if changed.rowcount != 1:
        raise FailedPrecondition("TRANSACTION_CHANGED", "the earn changed meanwhile; read it again")
    member = earn_txn.member_id
    balance = await _change(conn, member, pending=-amount)
    assert balance is not None
    txn = await _record(
        conn,
        ctx,
        member_id=member,
        partner_id=earn_txn.partner_id,
        kind=dl.TxnType.REVERSAL,
        state=dl.TxnState.POSTED,
        points=-amount,
        balance=balance,
        postings=list(dl.move(dl.pending(member), dl.issued(earn_txn.partner_id), amount)),
        related_id=earn_txn.id,
        reference=reason or earn_txn.partner_reference,
    )
    before = earn_txn.reversed_points
    await tiers.record_reversal(conn, ctx, earn_txn, txn.id, before, before + amount)
    return txn


# -- expiry ----------------------------------------------------------------------------------


async def expire(
    conn: AsyncConnection,
    ctx: AppContext,
    member_id: str,
    partner_id: str,
    points: int,
    reference: str,
) -> dl.Transaction:
    """Move expired points of one issuing partner to its breakage account.

    The caller (gateway.service.expiry) took them out of the member's lots already; the lot
    invariant guarantees they are available.
    """
    balance = await _change(conn, member_id, available=-points, need_available=points)
    assert balance is not None, f"member {member_id}: lots hold more than is available"
    return await _record(
        conn,
        ctx,
        member_id=member_id,
        partner_id=partner_id,
        kind=dl.TxnType.EXPIRY,
        state=dl.TxnState.POSTED,
        points=-points,
        balance=balance,
        postings=list(dl.move(dl.available(member_id), dl.expired(partner_id), points)),
        reference=reference,
    )


# -- time: vesting and hold expiry -----------------------------------------------------------


async def settle_due(
    conn: AsyncConnection,
    ctx: AppContext,
    member_id: str | None = None,
    limit: int = SETTLE_BATCH_ROWS,
) -> int:
    """Vest due pending earns and release expired holds; returns how many were settled.

    The postings join the original transaction (its state moves PENDING -> POSTED/EXPIRED),
    so the member's history shows one earn, not an earn and a vesting.
    """
    now = ctx.clock.now()
    query = (
        select(
            TXNS.c.seq,
            TXNS.c.id,
            TXNS.c.member_id,
            TXNS.c.type,
            TXNS.c.open_points,
            TXNS.c.due_time,
        )
        .where(TXNS.c.state == dl.TxnState.PENDING.value, TXNS.c.due_time <= now)
        .order_by(TXNS.c.due_time)
        .limit(limit)
    )
    if member_id is not None:
        query = query.where(TXNS.c.member_id == member_id)
    settled = 0
    for row in (await conn.execute(query)).all():
        is_earn = row.type == dl.TxnType.EARN.value
        state = dl.TxnState.POSTED if is_earn else dl.TxnState.EXPIRED
        moved = await conn.execute(
            update(TXNS)
            .where(and_(TXNS.c.seq == row.seq, TXNS.c.state == dl.TxnState.PENDING.value))
            .values(state=state.value, open_points=0)
        )
        if moved.rowcount != 1:
            continue  # settled concurrently by someone else
        settled += 1
        if row.open_points == 0:
            continue
        member, points = row.member_id, row.open_points
        if is_earn:
            balance = await _change(conn, member, available=points, pending=-points)
            assert balance is not None
            await _post(
                conn, row.seq, list(dl.move(dl.pending(member), dl.available(member), points))
            )
            unspent = expiry.lot_change(balance.available - points, balance.available)
            if unspent:  # the points became a lot when they vested, at the due time
                await conn.execute(
                    update(TXNS)
                    .where(TXNS.c.seq == row.seq)
                    .values(
                        unspent_points=unspent,
                        expire_time=ctx.expiry.lot_expire_time(row.due_time),
                        lapses=ctx.expiry.kind is expiry.ExpiryKind.INACTIVITY,
                    )
                )
        else:
            balance = await _change(conn, member, available=points, held=-points)
            assert balance is not None
            await lots.refund(
                conn, row.seq, expiry.lot_change(balance.available - points, balance.available)
            )
            await _post(conn, row.seq, list(dl.move(dl.held(member), dl.available(member), points)))
    return settled


async def current_balance(
    ctx: AppContext, member_id: str
) -> tuple[dl.Balance, TierStatus, expiry.Expiring | None]:
    """The balance after vesting due earns and releasing expired holds (lazily, on read), where
    the member stands in the tiers, and their next expiry.

    The common case, nothing due, is one read; only a member with something due pays a write.
    """
    async with ctx.database.connect() as conn:
        if not await anything_due(conn, ctx, member_id):
            return await _standing(conn, ctx, member_id)
    async with ctx.database.begin() as conn:
        await settle_due(conn, ctx, member_id)
        return await _standing(conn, ctx, member_id)


async def _standing(
    conn: AsyncConnection, ctx: AppContext, member_id: str
) -> tuple[dl.Balance, TierStatus, expiry.Expiring | None]:
    balance = await balance_of(conn, member_id)
    status = await tiers.status(conn, ctx, member_id)
    return balance, status, await lots.next_expiry(conn, ctx.expiry, member_id, balance.available)


async def anything_due(conn: AsyncConnection, ctx: AppContext, member_id: str) -> bool:
    found = await conn.scalar(
        select(TXNS.c.seq)
        .where(
            TXNS.c.member_id == member_id,
            TXNS.c.state == dl.TxnState.PENDING.value,
            TXNS.c.due_time <= ctx.clock.now(),
        )
        .limit(1)
    )
    return found is not None


# -- history ---------------------------------------------------------------------------------


async def history(
    conn: AsyncConnection,
    member_id: str,
    size: int,
    token: str,
    partner_id: str | None = None,
    kind: dl.TxnType | None = None,
) -> tuple[list[dl.Transaction], str]:
    limit = paging.page_size(size)
    position = paging.decode_token(token, ("seq",))
    query = select(TXNS).where(TXNS.c.member_id == member_id)
    if partner_id is not None:  # what the partner issued or accepted, or submitted as agency
        query = query.where(
            (TXNS.c.partner_id == partner_id) | (TXNS.c.channel_partner_id == partner_id)
        )
    if kind is not None:
        query = query.where(TXNS.c.type == kind.value)
    if position is not None:
        if not isinstance(position["seq"], int):
            raise paging.invalid_token()
        query = query.where(TXNS.c.seq < position["seq"])
    rows = (await conn.execute(query.order_by(TXNS.c.seq.desc()).limit(limit + 1))).all()
    page = rows[:limit]
    next_token = paging.encode_token({"seq": page[-1].seq}) if len(rows) > limit else ""
    return [_transaction(r) for r in page], next_token
