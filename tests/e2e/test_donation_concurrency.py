"""Donations under real concurrent clients (PostgreSQL only): a matching budget, one member's
balance and one request_id, each raced for by many calls at once.

Each test opens CHANNELS separate gRPC channels, spreads its DonatePoints calls over them and
fires them all at once. Every outcome must be a success or the one business failure the test
expects; anything else fails the test and is printed. What the responses say, what
ListMatchingCampaigns reports as spent, the balances and the stored donations must agree, and
the ledger invariants (`coalition ledger verify`, run by the ctx fixture: charity accounts equal
donations, a campaign's counter equals its matches and stays within budget) must hold.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import grpc
import pytest
from earn_api import Api, Meta, ref, rid, ts
from errors import decode_status, details_of
from google.rpc import error_details_pb2
from sqlalchemy import func, select

from coalition.v1 import common_pb2, donations_pb2, donations_pb2_grpc, partners_pb2
from gateway.service import donations as donation_service

pytestmark = pytest.mark.postgres

CHANNELS = 20
CALL_TIMEOUT_S = 30.0
DONORS = 50
GIFT = 1_000
BUDGET = 12_345
"""Less than DONORS x GIFT, and not a multiple of GIFT: one donation is matched in part."""
CHARITY = "charities/red-cross"


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
    """The sponsor, and the partner donating on its members' behalf."""
    _, key = await gateway.create_partner("grand-hotel")
    return list(gateway.auth(key))


@pytest.fixture
async def charity(gateway: Any) -> str:
    await gateway.create_partner(
        "red-cross",
        "CHARITY",
        display_name="Red Cross",
        charity=partners_pb2.CharityProfile(
            minimum_donation_points=100, value_per_thousand_points_minor=1_000
        ),
    )
    return CHARITY


@pytest.fixture
async def stubs(gateway: Any) -> AsyncIterator[list[donations_pb2_grpc.DonationServiceStub]]:
    """One DonationService client per separate channel."""
    channels = [grpc.aio.insecure_channel(gateway.target) for _ in range(CHANNELS)]
    yield [donations_pb2_grpc.DonationServiceStub(channel) for channel in channels]
    for channel in channels:
        await channel.close()


@pytest.fixture
def operator_stub(gateway: Any) -> donations_pb2_grpc.DonationServiceStub:
    return donations_pb2_grpc.DonationServiceStub(gateway.channel)


async def rich_member(api: Api, hotel: Meta, points: int, name: str = "Ada Lovelace") -> str:
    member = await api.enroll(name)
    txn = await api.earn(hotel, member, action="BONUS", points=points)
    assert txn.points == points
    return member


async def start_matching(
    gateway: Any, stub: donations_pb2_grpc.DonationServiceStub, budget: int
) -> donations_pb2.MatchingCampaign:
    """A one-for-one campaign by the hotel, live from now for a month."""
    reply = await stub.CreateMatchingCampaign(
        donations_pb2.CreateMatchingCampaignRequest(
            request_id=rid(),
            parent=CHARITY,
            matching_campaign=donations_pb2.MatchingCampaign(
                sponsor="partners/grand-hotel",
                percent=100,
                budget_points=budget,
                end_time=ts(gateway.ctx.clock.now() + timedelta(days=30)),
            ),
        ),
        metadata=gateway.as_operator,
    )
    return reply.matching_campaign


async def spent(
    gateway: Any, stub: donations_pb2_grpc.DonationServiceStub
) -> dict[str, tuple[int, int]]:
    """(spent, budget) of the charity's campaigns, by name, as ListMatchingCampaigns says."""
    reply = await stub.ListMatchingCampaigns(
        donations_pb2.ListMatchingCampaignsRequest(parent=CHARITY, page_size=100),
        metadata=gateway.as_operator,
    )
    return {c.name: (c.spent_points, c.budget_points) for c in reply.matching_campaigns}


def donate(
    stubs: list[donations_pb2_grpc.DonationServiceStub],
    meta: Meta,
    i: int,
    member: str,
    points: int = GIFT,
    request_id: str = "",
) -> Callable[[], Awaitable[Any]]:
    request = donations_pb2.DonatePointsRequest(
        request_id=request_id or rid(), member=ref(member), charity=CHARITY, points=points
    )
    stub = stubs[i % CHANNELS]
    return lambda: stub.DonatePoints(request, metadata=meta, timeout=CALL_TIMEOUT_S)


async def donation_transactions(api: Api, member: str) -> list[int]:
    """The points of the member's DONATION transactions, as ListTransactions shows them."""
    history = await api.history(member)
    return [t.points for t in history if t.type == common_pb2.TRANSACTION_TYPE_DONATION]


async def stored_donations(ctx: Any, member: str | None = None) -> int:
    d = donation_service.DONATIONS
    query = select(func.count()).select_from(d)
    if member is not None:
        query = query.where(d.c.member_id == member.split("/")[1])
    async with ctx.database.connect() as conn:
        return int(await conn.scalar(query) or 0)


async def test_fifty_donors_at_once_spend_a_matching_budget_exactly(
    ctx: Any,
    gateway: Any,
    api: Api,
    hotel: Meta,
    charity: str,
    stubs: list[donations_pb2_grpc.DonationServiceStub],
    operator_stub: donations_pb2_grpc.DonationServiceStub,
) -> None:
    campaign = await start_matching(gateway, operator_stub, BUDGET)
    members = [await rich_member(api, hotel, GIFT + 500, f"Donor {i}") for i in range(DONORS)]

    outcomes, results = await fire([donate(stubs, hotel, i, m) for i, m in enumerate(members)])
    assert outcomes == Counter({"OK": DONORS}), "every donation goes through"

    matches = sorted((r.donation.matched_points for r in results), reverse=True)
    assert sum(matches) == BUDGET, "the budget is spent to the point, never over"
    assert matches.count(GIFT) == BUDGET // GIFT
    partial = [m for m in matches if 0 < m < GIFT]
    assert partial == [BUDGET % GIFT], "one donation, and only one, is matched in part"
    assert matches.count(0) == DONORS - BUDGET // GIFT - 1
    for r in results:
        sponsored = r.donation.matched_points > 0
        assert r.donation.matching_sponsor == ("partners/grand-hotel" if sponsored else "")
        assert r.donation.points == GIFT
        assert r.donation.value.amount_minor == GIFT
        assert r.donation.matched_value.amount_minor == r.donation.matched_points
    assert len({r.donation.receipt_number for r in results}) == DONORS

    assert await spent(gateway, operator_stub) == {campaign.name: (BUDGET, BUDGET)}
    assert await stored_donations(ctx) == DONORS
    for member in members:
        assert (await api.balance(member)).available_points == 500, member


@pytest.mark.parametrize(
    "matched",
    [
        pytest.param(False, id="no-campaign"),
        pytest.param(True, id="with-a-campaign"),
    ],
)
async def test_one_member_with_points_for_five_donates_twenty_times_at_once(
    ctx: Any,
    gateway: Any,
    api: Api,
    hotel: Meta,
    charity: str,
    stubs: list[donations_pb2_grpc.DonationServiceStub],
    operator_stub: donations_pb2_grpc.DonationServiceStub,
    matched: bool,
) -> None:
    """The refused donations take no points, and, with a campaign, no match from its budget:
    each one's match is rolled back with it."""
    campaign = await start_matching(gateway, operator_stub, 100_000) if matched else None
    member = await rich_member(api, hotel, 5 * GIFT)

    outcomes, results = await fire([donate(stubs, hotel, i, member) for i in range(20)])
    assert outcomes == Counter({"OK": 5, "FAILED_PRECONDITION INSUFFICIENT_POINTS": 15})

    assert (await api.balance(member)).available_points == 0
    assert await stored_donations(ctx, member) == 5
    assert await donation_transactions(api, member) == [-GIFT] * 5
    if campaign is not None:
        assert await spent(gateway, operator_stub) == {campaign.name: (5 * GIFT, 100_000)}
        ok = [r for r in results if outcome(r) == "OK"]
        assert [r.donation.matched_points for r in ok] == [GIFT] * 5


async def test_one_request_id_sent_twenty_times_at_once_donates_once(
    ctx: Any,
    gateway: Any,
    api: Api,
    hotel: Meta,
    charity: str,
    stubs: list[donations_pb2_grpc.DonationServiceStub],
    operator_stub: donations_pb2_grpc.DonationServiceStub,
) -> None:
    campaign = await start_matching(gateway, operator_stub, 100_000)
    member = await rich_member(api, hotel, 5 * GIFT)
    request_id = rid()

    outcomes, results = await fire(
        [donate(stubs, hotel, i, member, request_id=request_id) for i in range(20)]
    )
    assert outcomes == Counter({"OK": 20})
    first = results[0]
    assert all(r == first for r in results), "every replay gets the first answer"
    assert first.donation.points == GIFT
    assert first.transaction.balance.available_points == 4 * GIFT

    assert (await api.balance(member)).available_points == 4 * GIFT
    assert await donation_transactions(api, member) == [-GIFT], "one DONATION in the history"
    assert await stored_donations(ctx, member) == 1
    assert await spent(gateway, operator_stub) == {campaign.name: (GIFT, 100_000)}


def create_pledge(
    stubs: list[donations_pb2_grpc.DonationServiceStub],
    meta: Meta,
    i: int,
    member: str,
    kind: int,
    points: int = 0,
) -> Callable[[], Awaitable[Any]]:
    request = donations_pb2.CreatePledgeRequest(
        request_id=rid(),
        member=ref(member),
        pledge=donations_pb2.Pledge(charity=CHARITY, kind=kind, points=points),
    )
    stub = stubs[i % CHANNELS]
    return lambda: stub.CreatePledge(request, metadata=meta, timeout=CALL_TIMEOUT_S)


async def live_pledges(ctx: Any, member: str) -> Counter[str]:
    p = donation_service.PLEDGES
    async with ctx.database.connect() as conn:
        rows = await conn.execute(
            select(p.c.kind, func.count())
            .where(p.c.member_id == member.split("/")[1], p.c.cancel_time.is_(None))
            .group_by(p.c.kind)
        )
        return Counter({kind: int(n) for kind, n in rows})


async def test_twenty_expiring_pledges_at_once_leave_one(
    ctx: Any,
    api: Api,
    hotel: Meta,
    charity: str,
    stubs: list[donations_pb2_grpc.DonationServiceStub],
) -> None:
    member = await api.enroll()
    outcomes, _ = await fire(
        [
            create_pledge(stubs, hotel, i, member, donations_pb2.PLEDGE_KIND_EXPIRING)
            for i in range(20)
        ]
    )
    assert outcomes == Counter({"OK": 1, "FAILED_PRECONDITION PLEDGE_EXISTS": 19})
    assert await live_pledges(ctx, member) == Counter({"EXPIRING": 1})
