"""Rewards catalog use cases: publish, list, redeem, validate, consume, refund expired vouchers.

Stock is never oversold: a reward with limited stock has a guarded counter, taken with one
conditional UPDATE (`issued < stock + refunded`), so a hundred concurrent redemptions of the
last ten units see exactly ten succeed. Locks are taken in one order everywhere: the member's
balance row (the points), then the reward row (the stock), then the voucher. A voucher moves
between states through conditional UPDATEs naming the state they expect, so a consumption and
the refund sweep racing on one voucher cannot both win.
"""

from __future__ import annotations

import secrets
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.adapters.models import RewardRow, VoucherRow, table_of
from gateway.domain import ledger as dl
from gateway.domain import paging
from gateway.domain import rewards as drw
from gateway.domain.errors import FailedPrecondition, InvalidArgument, NotFound
from gateway.service import ledger, outbox
from gateway.service.context import AppContext

REWARDS = table_of(RewardRow)
VOUCHERS = table_of(VoucherRow)
REWARD_ID_BYTES = 8
VOUCHER_CODE_ATTEMPTS_MAX = 4
"""New codes tried if one is taken; with 75 random bits a second try is already a miracle."""
REFUND_BATCH_VOUCHERS = 200

VOUCHER_ISSUED = "VoucherIssued"
VOUCHER_CONSUMED = "VoucherConsumed"
VOUCHER_REFUNDED = "VoucherRefunded"


def _reward(row: Any) -> drw.Reward:
    return drw.Reward(
        id=row.id,
        partner_id=row.partner_id,
        display_name=row.display_name,
        description=row.description,
        kind=drw.RewardKind(row.kind),
        points_price=row.points_price,
        stock=row.stock,
        issued=row.issued,
        refunded=row.refunded,
        start_time=row.start_time,
        end_time=row.end_time,
        voucher_validity=timedelta(seconds=row.voucher_validity_s),
        create_time=row.create_time,
    )


def _voucher(row: Any) -> drw.Voucher:
    return drw.Voucher(
        code=row.code,
        reward_id=row.reward_id,
        partner_id=row.partner_id,
        member_id=row.member_id,
        state=drw.VoucherState(row.state),
        issue_time=row.issue_time,
        expire_time=row.expire_time,
        consume_time=row.consume_time,
        transaction_id=row.transaction_id,
        points=row.points,
        refund_transaction_id=row.refund_transaction_id,
    )


def parse_reward_name(name: str, field: str = "reward") -> tuple[str, str]:
    parts = name.split("/")
    if len(parts) != 4 or parts[0] != "partners" or parts[2] != "rewards" or not all(parts):
        raise InvalidArgument.on_field(
            field, "INVALID_REWARD_NAME", 'expected "partners/{partner}/rewards/{reward}"'
        )
    return parts[1], parts[3]


def _not_found(name: str) -> NotFound:
    return NotFound("REWARD_NOT_FOUND", f"no reward {name}", {"reward": name})


async def get(conn: AsyncConnection, name: str, field: str = "reward") -> drw.Reward:
    partner_id, reward_id = parse_reward_name(name, field)
    row = (
        await conn.execute(
            select(REWARDS).where(REWARDS.c.id == reward_id, REWARDS.c.partner_id == partner_id)
        )
    ).first()
    if row is None:
        raise _not_found(name)
    return _reward(row)


# -- the catalog -----------------------------------------------------------------------------


async def create(
    conn: AsyncConnection, ctx: AppContext, partner_id: str, draft: drw.RewardDraft
) -> drw.Reward:
    reward = drw.Reward(
        id=secrets.token_hex(REWARD_ID_BYTES),
        partner_id=partner_id,
        display_name=draft.display_name.strip(),
        description=draft.description,
        kind=draft.kind,
        points_price=draft.points_price,
        stock=draft.stock,
        issued=0,
        refunded=0,
        start_time=draft.start_time,
        end_time=draft.end_time,
        voucher_validity=draft.voucher_validity,
        create_time=ctx.clock.now(),
    )
    await conn.execute(
        insert(REWARDS).values(
            id=reward.id,
            partner_id=partner_id,
            display_name=reward.display_name,
            description=reward.description,
            kind=reward.kind.value,
            points_price=reward.points_price,
            stock=reward.stock,
            issued=0,
            refunded=0,
            start_time=reward.start_time,
            end_time=reward.end_time,
            voucher_validity_s=int(reward.voucher_validity.total_seconds()),
            create_time=reward.create_time,
        )
    )
    return reward


async def list_page(
    conn: AsyncConnection,
    ctx: AppContext,
    partner_id: str | None,
    available_only: bool,
    size: int,
    token: str,
) -> tuple[list[drw.Reward], str]:
    """Ordered by partner, then reward id."""
    limit = paging.page_size(size)
    position = paging.decode_token(token, ("p", "id"))
    query = select(REWARDS)
    if partner_id is not None:
        query = query.where(REWARDS.c.partner_id == partner_id)
    if available_only:
        now = ctx.clock.now()
        query = query.where(
            or_(REWARDS.c.stock == 0, REWARDS.c.issued < REWARDS.c.stock + REWARDS.c.refunded),
            or_(REWARDS.c.start_time.is_(None), REWARDS.c.start_time <= now),
            or_(REWARDS.c.end_time.is_(None), REWARDS.c.end_time > now),
        )
    if position is not None:
        after_partner, after_id = str(position["p"]), str(position["id"])
        query = query.where(
            (REWARDS.c.partner_id > after_partner)
            | ((REWARDS.c.partner_id == after_partner) & (REWARDS.c.id > after_id))
        )
    rows = (
        await conn.execute(query.order_by(REWARDS.c.partner_id, REWARDS.c.id).limit(limit + 1))
    ).all()
    page = [_reward(r) for r in rows[:limit]]
    next_token = ""
    if len(rows) > limit:
        next_token = paging.encode_token({"p": page[-1].partner_id, "id": page[-1].id})
    return page, next_token


# -- redeeming -------------------------------------------------------------------------------


async def _take_unit(conn: AsyncConnection, reward: drw.Reward) -> None:
    if reward.stock == 0:
        return  # unlimited: nothing to count, so no row every redemption has to lock
    taken = await conn.execute(
        update(REWARDS)
        .where(REWARDS.c.id == reward.id, REWARDS.c.issued < REWARDS.c.stock + REWARDS.c.refunded)
        .values(issued=REWARDS.c.issued + 1)
    )
    if taken.rowcount != 1:
        raise FailedPrecondition(
            "OUT_OF_STOCK", f"{reward.display_name} is out of stock", {"reward": reward.name}
        )


async def _insert_voucher(conn: AsyncConnection, values: dict[str, Any]) -> str:
    for _ in range(VOUCHER_CODE_ATTEMPTS_MAX):
        code = drw.new_voucher_code()
        try:
            async with conn.begin_nested():
                await conn.execute(insert(VOUCHERS).values(code=code, **values))
            return code
        except IntegrityError:
            continue
    raise AssertionError("voucher codes keep colliding: is the random source broken?")


async def redeem(
    conn: AsyncConnection, ctx: AppContext, member_id: str, reward_name: str
) -> tuple[drw.Voucher, dl.Transaction]:
    """Spend the reward's price and issue a voucher, in the caller's transaction."""
    reward = await get(conn, reward_name)
    now = ctx.clock.now()
    if not reward.on_offer(now):
        raise FailedPrecondition(
            "REWARD_NOT_AVAILABLE",
            f"{reward.display_name} cannot be redeemed now",
            {"reward": reward.name},
        )
    if not reward.in_stock():  # a cheap early answer; _take_unit is the guard
        raise FailedPrecondition(
            "OUT_OF_STOCK", f"{reward.display_name} is out of stock", {"reward": reward.name}
        )
    txn = await ledger.burn(
        conn,
        ctx,
        reward.partner_id,
        member_id,
        reward.points_price,
        dl.TxnType.REWARD,
        reference=reward.name,
    )
    await _take_unit(conn, reward)
    issued = drw.Voucher(
        code="",
        reward_id=reward.id,
        partner_id=reward.partner_id,
        member_id=member_id,
        state=drw.VoucherState.ISSUED,
        issue_time=now,
        expire_time=now + reward.voucher_validity,
        consume_time=None,
        transaction_id=txn.id,
        points=reward.points_price,
    )
    values = {**vars(issued), "state": issued.state.value}
    del values["code"]
    voucher = replace(issued, code=await _insert_voucher(conn, values))
    code = voucher.code
    await outbox.emit(
        conn,
        ctx,
        VOUCHER_ISSUED,
        f"members/{member_id}",
        {
            "member": f"members/{member_id}",
            "code": drw.display_code(code),
            "reward": reward.name,
            "reward_display_name": reward.display_name,
            "points": reward.points_price,
            "transaction": txn.name,
            "issue_time": now.isoformat(),
            "expire_time": voucher.expire_time.isoformat(),
        },
        member_id=member_id,
        partner_ids=(reward.partner_id,),
    )
    return voucher, txn


# -- at the partner's counter ----------------------------------------------------------------


async def find_voucher(conn: AsyncConnection, partner_id: str | None, raw_code: str) -> drw.Voucher:
    """The voucher, if the caller may see it: its reward's partner, or the operator (None).
    Another partner's voucher is not found, so codes cannot be probed across partners."""
    code = drw.parse_voucher_code(raw_code)
    query = select(VOUCHERS).where(VOUCHERS.c.code == code)
    if partner_id is not None:
        query = query.where(VOUCHERS.c.partner_id == partner_id)
    row = (await conn.execute(query)).first()
    if row is None:
        raise NotFound("VOUCHER_NOT_FOUND", "no such voucher", {"code": drw.display_code(code)})
    return _voucher(row)


def _unusable(voucher: drw.Voucher, now: datetime) -> FailedPrecondition:
    state = voucher.state_at(now)
    code = drw.display_code(voucher.code)
    if state is drw.VoucherState.CONSUMED:
        when = voucher.consume_time.isoformat() if voucher.consume_time else ""
        return FailedPrecondition(
            "VOUCHER_ALREADY_CONSUMED",
            f"voucher {code} was already used",
            {"code": code, "consume_time": when},
        )
    if state is drw.VoucherState.REFUNDED:
        return FailedPrecondition(
            "VOUCHER_REFUNDED", f"voucher {code} was refunded to the member", {"code": code}
        )
    return FailedPrecondition(
        "VOUCHER_EXPIRED",
        f"voucher {code} expired",
        {"code": code, "expire_time": voucher.expire_time.isoformat()},
    )


async def consume(
    conn: AsyncConnection, ctx: AppContext, partner_id: str | None, raw_code: str
) -> drw.Voucher:
    voucher = await find_voucher(conn, partner_id, raw_code)
    now = ctx.clock.now()
    if not voucher.usable(now):
        raise _unusable(voucher, now)
    used = await conn.execute(
        update(VOUCHERS)
        .where(
            VOUCHERS.c.code == voucher.code,
            VOUCHERS.c.state == drw.VoucherState.ISSUED.value,
            VOUCHERS.c.expire_time > now,
        )
        .values(state=drw.VoucherState.CONSUMED.value, consume_time=now)
    )
    if used.rowcount != 1:  # consumed (or refunded) concurrently: report what won
        raise _unusable(await find_voucher(conn, partner_id, voucher.code), now)
    consumed = replace(voucher, state=drw.VoucherState.CONSUMED, consume_time=now)
    await outbox.emit(
        conn,
        ctx,
        VOUCHER_CONSUMED,
        f"members/{voucher.member_id}",
        {
            "member": f"members/{voucher.member_id}",
            "code": drw.display_code(voucher.code),
            "reward": f"partners/{voucher.partner_id}/rewards/{voucher.reward_id}",
            "consume_time": now.isoformat(),
        },
        partner_ids=(voucher.partner_id,),
    )
    return consumed


# -- the refund policy -----------------------------------------------------------------------


async def _refund(conn: AsyncConnection, ctx: AppContext, voucher: drw.Voucher) -> bool:
    claimed = await conn.execute(
        update(VOUCHERS)
        .where(VOUCHERS.c.code == voucher.code, VOUCHERS.c.state == drw.VoucherState.ISSUED.value)
        .values(state=drw.VoucherState.REFUNDED.value)
    )
    if claimed.rowcount != 1:
        return False  # consumed just in time, or refunded by another sweeper
    txn = await ledger.refund_reward(
        conn, ctx, voucher.transaction_id, f"voucher {drw.display_code(voucher.code)} expired"
    )
    await conn.execute(
        update(VOUCHERS).where(VOUCHERS.c.code == voucher.code).values(refund_transaction_id=txn.id)
    )
    await conn.execute(
        update(REWARDS)
        .where(REWARDS.c.id == voucher.reward_id, REWARDS.c.stock > 0)
        .values(refunded=REWARDS.c.refunded + 1)
    )
    await outbox.emit(
        conn,
        ctx,
        VOUCHER_REFUNDED,
        f"members/{voucher.member_id}",
        {
            "member": f"members/{voucher.member_id}",
            "code": drw.display_code(voucher.code),
            "reward": f"partners/{voucher.partner_id}/rewards/{voucher.reward_id}",
            "points": voucher.points,
            "refund_transaction": txn.name,
        },
        member_id=voucher.member_id,
        partner_ids=(voucher.partner_id,),
    )
    return True


async def refund_expired(ctx: AppContext) -> int:
    """Refund every voucher that expired unused; safe to run concurrently.

    Each voucher is refunded in a transaction of its own: a batch holding several members'
    balance rows and rewards' rows at once could deadlock with redemptions, which take a
    balance row first and a reward row second.
    """
    refunded, after = 0, ""
    while True:
        async with ctx.database.connect() as conn:
            rows = (
                await conn.execute(
                    select(VOUCHERS)
                    .where(
                        VOUCHERS.c.state == drw.VoucherState.ISSUED.value,
                        VOUCHERS.c.expire_time <= ctx.clock.now(),
                        VOUCHERS.c.code > after,
                    )
                    .order_by(VOUCHERS.c.code)
                    .limit(REFUND_BATCH_VOUCHERS)
                )
            ).all()
        for row in rows:
            async with ctx.database.begin() as conn:
                refunded += await _refund(conn, ctx, _voucher(row))
        if len(rows) < REFUND_BATCH_VOUCHERS:
            return refunded
        after = rows[-1].code
