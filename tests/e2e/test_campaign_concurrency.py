"""Campaign budgets under real concurrent clients (PostgreSQL only): never one point over.

Each test opens CHANNELS separate gRPC channels, spreads its earns over them and fires them all
at once. Every earn must succeed (a budget running out is a CAMPAIGN component of 0, not an
error); any status at all fails the test and is printed. What the responses paid, what
ListCampaigns reports as spent and what the members hold must all agree, and the ledger
invariants (`coalition ledger verify`) must hold.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import grpc
import pytest
from earn_api import Api, Meta, campaign, purchase, ref, rid

from coalition.v1 import common_pb2, points_pb2, points_pb2_grpc
from gateway.service.verify import verify

pytestmark = pytest.mark.postgres

CHANNELS = 20
CALL_TIMEOUT_S = 30.0
PARTNER = "partners/grand-hotel"
BONUS_POINTS = 300
TOTAL_BUDGET_POINTS = 10_000
USD_10 = 1_000
"""A purchase of USD 10.00: 100 base points at the hotel's 10 points per USD."""
BASE_POINTS = 100


def describe(result: object) -> str:
    if isinstance(result, grpc.aio.AioRpcError):
        return f"{result.code().name}: {result.details()}"
    if isinstance(result, BaseException):
        return f"{type(result).__name__}: {result!r}"
    return "OK"


async def fire(calls: list[Callable[[], Awaitable[Any]]]) -> list[common_pb2.PointsTransaction]:
    """Start every call at once; every one must succeed."""
    results = await asyncio.gather(*(call() for call in calls), return_exceptions=True)
    outcomes = Counter(describe(r) for r in results)
    if outcomes != Counter({"OK": len(calls)}):
        pytest.fail(f"every earn must succeed, got {dict(outcomes)}", pytrace=False)
    return [r.transaction for r in results if not isinstance(r, BaseException)]


def campaign_points(txn: common_pb2.PointsTransaction) -> int:
    return sum(c.points for c in txn.breakdown if c.kind == "CAMPAIGN")


@pytest.fixture
def api(gateway: Any) -> Api:
    return Api(gateway)


@pytest.fixture
async def hotel(gateway: Any) -> Meta:
    _, key = await gateway.create_partner("grand-hotel")
    return list(gateway.auth(key))


@pytest.fixture
async def stubs(gateway: Any) -> Any:
    """One PointsService stub per separate channel."""
    channels = [grpc.aio.insecure_channel(gateway.target) for _ in range(CHANNELS)]
    yield [points_pb2_grpc.PointsServiceStub(c) for c in channels]
    for channel in channels:
        await channel.close()


def earn(stubs: list[Any], hotel: Meta, i: int, member: str) -> Callable[[], Awaitable[Any]]:
    request = points_pb2.EarnPointsRequest(
        request_id=rid(), member=ref(member), purchase=purchase(USD_10)
    )
    return lambda: stubs[i % CHANNELS].EarnPoints(request, metadata=hotel, timeout=CALL_TIMEOUT_S)


async def budgeted(ctx: Any, api: Api, **budgets: Any) -> str:
    end = ctx.clock.now() + timedelta(days=30)
    created = await api.create_campaign(
        PARTNER, campaign(end, display_name="Welcome bonus", bonus_points=BONUS_POINTS, **budgets)
    )
    return created.name


async def check_books(
    ctx: Any, api: Api, name: str, paid: dict[str, int], expected_total: int
) -> None:
    """Responses, ListCampaigns and the members' balances agree; the ledger verifies."""
    assert sum(paid.values()) == expected_total
    assert (await api.campaigns(PARTNER))[name].spent_points == expected_total
    report = await verify(ctx)
    assert report.ok, report.problems


async def test_total_budget_holds_under_concurrent_members(
    ctx: Any, api: Api, hotel: Meta, stubs: Any
) -> None:
    name = await budgeted(ctx, api, total_budget_points=TOTAL_BUDGET_POINTS)
    members = [await api.enroll(f"Member {i}") for i in range(50)]  # demand: 15,000 points

    txns = await fire([earn(stubs, hotel, i, m) for i, m in enumerate(members)])
    paid = sorted(campaign_points(t) for t in txns)
    # Whatever the order, the budget runs out the same way: 33 full bonuses, one cut, then 0.
    assert paid == [0] * 16 + [100] + [BONUS_POINTS] * 33
    assert all(t.points == BASE_POINTS + campaign_points(t) for t in txns)

    by_member = {m: campaign_points(t) for m, t in zip(members, txns, strict=True)}
    for member, bonus in by_member.items():
        assert (await api.balance(member)).available_points == BASE_POINTS + bonus
    await check_books(ctx, api, name, by_member, TOTAL_BUDGET_POINTS)


async def test_member_and_total_budgets_hold_when_members_earn_concurrently(
    ctx: Any, api: Api, hotel: Meta, stubs: Any
) -> None:
    member_budget = 5 * BONUS_POINTS
    name = await budgeted(
        ctx, api, member_budget_points=member_budget, total_budget_points=TOTAL_BUDGET_POINTS
    )
    members = [await api.enroll(f"Member {i}") for i in range(8)]
    # 8 members x 8 earns: each member could take 1,500, together 12,000 > 10,000.
    who = [m for m in members for _ in range(8)]

    txns = await fire([earn(stubs, hotel, i, m) for i, m in enumerate(who)])
    assert all(0 <= campaign_points(t) <= BONUS_POINTS for t in txns)
    by_member: dict[str, int] = defaultdict(int)
    for member, txn in zip(who, txns, strict=True):
        by_member[member] += campaign_points(txn)
    assert max(by_member.values()) <= member_budget, dict(by_member)

    for member in members:
        balance = await api.balance(member)
        assert balance.available_points == 8 * BASE_POINTS + by_member[member]
        assert balance.qualifying_points == 8 * BASE_POINTS, "bonuses never qualify"
    await check_books(ctx, api, name, by_member, TOTAL_BUDGET_POINTS)


async def test_member_budget_alone_holds_for_one_member_earning_concurrently(
    ctx: Any, api: Api, hotel: Meta, stubs: Any
) -> None:
    member_budget = 1_000
    name = await budgeted(ctx, api, member_budget_points=member_budget)
    member = await api.enroll()

    txns = await fire([earn(stubs, hotel, i, member) for i in range(20)])
    paid = sorted(campaign_points(t) for t in txns)
    assert paid == [0] * 16 + [100] + [BONUS_POINTS] * 3
    assert (await api.balance(member)).available_points == 20 * BASE_POINTS + member_budget
    await check_books(ctx, api, name, {member: sum(paid)}, member_budget)
