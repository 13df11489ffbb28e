"""Reward stock and vouchers under real concurrent clients (PostgreSQL only).

Each test opens CHANNELS separate gRPC channels, spreads its calls over them and fires them all
at once. Every outcome must be a success or the one business failure the test expects; any
other status fails the test and is printed. What the responses say, what ListRewards reports as
available, what the members hold and the vouchers stored must all agree, and the ledger
invariants (`coalition ledger verify`, run by the ctx fixture) must hold.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import grpc
import pytest
from earn_api import Api, Meta, rid
from errors import decode_status, details_of
from google.rpc import error_details_pb2
from reward_api import CONSUMED, Rewards, reward
from sqlalchemy import func, select, text
from stdnum import luhn

from gateway.domain import rewards as drw
from gateway.domain.rewards import VOUCHER_ALPHABET
from gateway.service import outbox
from gateway.service import rewards as reward_service

pytestmark = pytest.mark.postgres

CHANNELS = 20
CALLS = 100
CALL_TIMEOUT_S = 30.0
PRICE = 1_000
STOCK = 10
LOCK_WAIT_POLL_S = 0.02
LOCK_WAIT_POLLS_MAX = 250
"""Five seconds for a transaction to reach the lock it must wait for."""


def outcome(result: object) -> str:
    """OK, or the status code and ErrorInfo reason of a failed call."""
    if isinstance(result, grpc.aio.AioRpcError):
        infos = details_of(decode_status(result), error_details_pb2.ErrorInfo)
        reason = infos[0].reason if infos else result.details()
        return f"{result.code().name} {reason}"
    if isinstance(result, BaseException):
        return f"{type(result).__name__}: {result!r}"
    return "OK"


async def fire(calls: list[Callable[[], Awaitable[Any]]]) -> tuple[Counter[str], list[Any]]:
    """Start every call at once: how each ended, and the results in call order."""
    results = await asyncio.gather(*(call() for call in calls), return_exceptions=True)
    return Counter(outcome(r) for r in results), results


@pytest.fixture
def api(gateway: Any) -> Api:
    return Api(gateway)


@pytest.fixture
async def hotel(gateway: Any) -> Meta:
    _, key = await gateway.create_partner("grand-hotel")
    return list(gateway.auth(key))


@pytest.fixture
async def stubs(gateway: Any) -> AsyncIterator[list[Rewards]]:
    """One RewardService client per separate channel."""
    channels = [grpc.aio.insecure_channel(gateway.target) for _ in range(CHANNELS)]
    yield [Rewards(gateway, channel) for channel in channels]
    for channel in channels:
        await channel.close()


@pytest.fixture
def rewards(gateway: Any) -> Rewards:
    return Rewards(gateway)


async def rich_member(api: Api, hotel: Meta, points: int, name: str = "Ada Lovelace") -> str:
    member = await api.enroll(name)
    await api.earn(hotel, member, action="BONUS", points=points)
    return member


def redeem(
    stubs: list[Rewards], hotel: Meta, i: int, member: str, reward_name: str
) -> Callable[[], Awaitable[Any]]:
    request_id = rid()
    client = stubs[i % CHANNELS]
    return lambda: client.redeem_call(
        hotel, member, reward_name, request_id, timeout=CALL_TIMEOUT_S
    )


async def stored_vouchers(ctx: Any, reward_name: str) -> int:
    v = reward_service.VOUCHERS
    reward_id = reward_name.rsplit("/", 1)[1]
    async with ctx.database.connect() as conn:
        return int(
            await conn.scalar(select(func.count()).select_from(v).where(v.c.reward_id == reward_id))
            or 0
        )


async def test_a_hundred_members_race_for_ten_units(
    ctx: Any, api: Api, rewards: Rewards, hotel: Meta, stubs: list[Rewards]
) -> None:
    night = await rewards.create(hotel, reward(PRICE, stock=STOCK))
    members = [await rich_member(api, hotel, PRICE + 500, f"Member {i}") for i in range(CALLS)]

    outcomes, results = await fire(
        [redeem(stubs, hotel, i, m, night.name) for i, m in enumerate(members)]
    )
    assert outcomes == Counter({"OK": STOCK, "FAILED_PRECONDITION OUT_OF_STOCK": CALLS - STOCK})

    won = {m: r for m, r in zip(members, results, strict=True) if outcome(r) == "OK"}
    codes = {r.voucher.code for r in won.values()}
    assert len(codes) == STOCK, "every voucher has its own code"
    assert (await rewards.get(night.name)).available_stock == 0
    assert await stored_vouchers(ctx, night.name) == STOCK
    for member in members:
        expected = 500 if member in won else PRICE + 500
        assert (await api.balance(member)).available_points == expected, member


async def test_one_member_with_points_for_five_redeems_a_hundred_times_at_once(
    ctx: Any, api: Api, rewards: Rewards, hotel: Meta, stubs: list[Rewards]
) -> None:
    night = await rewards.create(hotel, reward(PRICE, stock=STOCK))
    member = await rich_member(api, hotel, 5 * PRICE)

    outcomes, _ = await fire([redeem(stubs, hotel, i, member, night.name) for i in range(CALLS)])
    assert outcomes == Counter({"OK": 5, "FAILED_PRECONDITION INSUFFICIENT_POINTS": CALLS - 5})

    assert (await api.balance(member)).available_points == 0
    assert (await rewards.get(night.name)).available_stock == STOCK - 5
    assert await stored_vouchers(ctx, night.name) == 5


async def test_one_voucher_consumed_at_many_tills_at_once_is_consumed_once(
    ctx: Any, api: Api, rewards: Rewards, hotel: Meta, stubs: list[Rewards]
) -> None:
    night = await rewards.create(hotel, reward(PRICE, stock=STOCK))
    member = await rich_member(api, hotel, PRICE)
    voucher = (await rewards.redeem(hotel, member, night.name)).voucher

    def consume(i: int) -> Callable[[], Awaitable[Any]]:
        request_id = rid()
        return lambda: stubs[i % CHANNELS].consume_call(
            hotel, voucher.code, request_id, timeout=CALL_TIMEOUT_S
        )

    outcomes, results = await fire([consume(i) for i in range(CALLS // 2)])
    assert outcomes == Counter(
        {"OK": 1, "FAILED_PRECONDITION VOUCHER_ALREADY_CONSUMED": CALLS // 2 - 1}
    )
    (winner,) = [r for r in results if outcome(r) == "OK"]
    assert winner.voucher.state == CONSUMED
    assert (await rewards.validate(hotel, voucher.code)).voucher == winner.voucher
    async with ctx.database.connect() as conn:
        consumed = await outbox.events(conn, subject=member, type_=reward_service.VOUCHER_CONSUMED)
    assert len(consumed) == 1


async def test_two_refund_sweeps_at_once_refund_each_voucher_once(
    ctx: Any, api: Api, rewards: Rewards, hotel: Meta
) -> None:
    night = await rewards.create(hotel, reward(PRICE, stock=0, validity=timedelta(hours=1)))
    members = [await rich_member(api, hotel, PRICE, f"Member {i}") for i in range(20)]
    for member in members:
        await rewards.redeem(hotel, member, night.name)
    ctx.clock.advance(timedelta(hours=2))

    swept = await asyncio.gather(*(reward_service.refund_expired(ctx) for _ in range(2)))
    assert sum(swept) == len(members)
    for member in members:
        assert (await api.balance(member)).available_points == PRICE


async def _wait_for_a_lock_wait(ctx: Any) -> bool:
    """Whether some transaction of this database waits for a row lock (within five seconds)."""
    query = text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    for _ in range(LOCK_WAIT_POLLS_MAX):
        async with ctx.database.connect() as conn:
            if await conn.scalar(query):
                return True
        await asyncio.sleep(LOCK_WAIT_POLL_S)
    return False


def code_from(body: str) -> str:
    return body + luhn.calc_check_digit(body, alphabet=VOUCHER_ALPHABET)


async def test_the_refund_sweep_and_a_redemption_of_the_same_reward_do_not_deadlock(
    ctx: Any, api: Api, rewards: Rewards, hotel: Meta, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A redemption takes the member's balance row, then the reward's stock row. It is held
    between the two until the sweep, having refunded another member's voucher of the same
    reward, waits for that member's balance: the interleaving a busy gateway meets whenever a
    member redeems a reward while the sweep refunds vouchers of it. A sweep that kept the
    reward row locked across vouchers (one transaction per batch, as before 901148f) deadlocks
    here; the first member's voucher is made to come first whether the sweep goes by expiry
    or by code."""
    codes = iter([code_from("0" * 15), code_from("Z" * 15), code_from("M" * 15)])
    monkeypatch.setattr(drw, "new_voucher_code", lambda: next(codes))
    night = await rewards.create(hotel, reward(PRICE, stock=STOCK, validity=timedelta(hours=1)))
    first = await rich_member(api, hotel, PRICE, "First")
    second = await rich_member(api, hotel, 2 * PRICE, "Second")
    await rewards.redeem(hotel, first, night.name)
    ctx.clock.advance(timedelta(minutes=1))
    await rewards.redeem(hotel, second, night.name)  # expires a minute after the first
    ctx.clock.advance(timedelta(hours=2))

    reached, go = asyncio.Event(), asyncio.Event()
    take_unit = reward_service._take_unit

    async def held_between_locks(conn: Any, offered: Any) -> None:
        reached.set()
        await go.wait()
        await take_unit(conn, offered)

    monkeypatch.setattr(reward_service, "_take_unit", held_between_locks)
    redemption = asyncio.ensure_future(
        rewards.redeem_call(hotel, second, night.name, timeout=CALL_TIMEOUT_S)
    )
    await asyncio.wait_for(reached.wait(), CALL_TIMEOUT_S)  # holds the second member's balance
    sweep = asyncio.ensure_future(reward_service.refund_expired(ctx))
    assert await _wait_for_a_lock_wait(ctx), "the sweep waits for the second member's balance"
    go.set()

    redeemed: object
    refunded: object
    redeemed, refunded = await asyncio.gather(redemption, sweep, return_exceptions=True)
    assert outcome(redeemed) == "OK", outcome(redeemed)
    assert refunded == 2, outcome(refunded)
    assert (await api.balance(first)).available_points == PRICE
    assert (await api.balance(second)).available_points == PRICE
    assert (await rewards.get(night.name)).available_stock == STOCK - 1
