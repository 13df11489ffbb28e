"""The ledger under real concurrent clients (PostgreSQL only): no double spend, exactly once.

Each test opens CHANNELS separate gRPC channels, spreads its requests over them and fires them
all at once. Every outcome is tallied as "OK" or "CODE REASON"; any status the test did not
expect (INTERNAL, UNAVAILABLE, DEADLINE_EXCEEDED, ...) fails the test and is printed.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from errors import decode_status, details_of, expect_error  # tests/e2e/errors.py
from google.rpc import error_details_pb2

from coalition.v1 import common_pb2, members_pb2, members_pb2_grpc, points_pb2, points_pb2_grpc
from gateway.service.verify import verify

pytestmark = pytest.mark.postgres

CHANNELS = 20
CALL_TIMEOUT_S = 30.0
OK = "OK"

Meta = list[tuple[str, str]]


def rid() -> str:
    return uuid.uuid4().hex


def ref(member: str) -> common_pb2.MemberRef:
    return common_pb2.MemberRef(member=member)


def describe(result: object) -> str:
    """OK, "CODE REASON" for a gRPC error, or the exception itself for anything else."""
    if not isinstance(result, BaseException):
        return OK
    if isinstance(result, grpc.aio.AioRpcError):
        try:
            infos = details_of(decode_status(result), error_details_pb2.ErrorInfo)
        except AssertionError:
            infos = []
        reason = infos[0].reason if len(infos) == 1 else "(no ErrorInfo)"
        return f"{result.code().name} {reason}"
    return f"{type(result).__name__}: {result!r}"


def expect_outcomes(results: list[object], expected: dict[str, int]) -> None:
    counts = Counter(describe(r) for r in results)
    if counts == Counter(expected):
        return
    samples = {}
    for result in results:
        kind = describe(result)
        if kind not in expected and kind not in samples:
            samples[kind] = (
                f"{result.code().name}: {result.details()}"
                if isinstance(result, grpc.aio.AioRpcError)
                else repr(result)
            )
    pytest.fail(
        f"expected outcomes {expected}, got {dict(counts)}; unexpected: {samples}", pytrace=False
    )


async def fire(calls: list[Callable[[], Awaitable[Any]]]) -> list[Any]:
    """Start every call at once and collect each result or exception."""
    return list(await asyncio.gather(*(call() for call in calls), return_exceptions=True))


@pytest.fixture
async def stubs(gateway: Any) -> Any:
    """One PointsService stub per separate channel."""
    channels = [grpc.aio.insecure_channel(gateway.target) for _ in range(CHANNELS)]
    yield [points_pb2_grpc.PointsServiceStub(c) for c in channels]
    for channel in channels:
        await channel.close()


@pytest.fixture
def points(gateway: Any) -> points_pb2_grpc.PointsServiceStub:
    return points_pb2_grpc.PointsServiceStub(gateway.channel)


@pytest.fixture
def members(gateway: Any) -> members_pb2_grpc.MemberServiceStub:
    return members_pb2_grpc.MemberServiceStub(gateway.channel)


@pytest.fixture
async def hotel(gateway: Any) -> Meta:
    _, key = await gateway.create_partner("grand-hotel")
    return gateway.auth(key)


@pytest.fixture
async def member(gateway: Any, members: members_pb2_grpc.MemberServiceStub) -> str:
    reply = await members.EnrollMember(
        members_pb2.EnrollMemberRequest(
            request_id=rid(), member=members_pb2.Member(display_name="Ada Lovelace")
        ),
        metadata=gateway.as_operator,
    )
    return reply.member.name


async def earn_points(
    points: points_pb2_grpc.PointsServiceStub, hotel: Meta, member: str, amount: int
) -> common_pb2.PointsTransaction:
    reply = await points.EarnPoints(
        points_pb2.EarnPointsRequest(
            request_id=rid(), member=ref(member), action="BONUS", points=amount
        ),
        metadata=hotel,
    )
    return reply.transaction


async def balance(gateway: Any, member: str) -> tuple[int, int, int]:
    reply = await members_pb2_grpc.MemberServiceStub(gateway.channel).GetBalance(
        members_pb2.GetBalanceRequest(member=ref(member)), metadata=gateway.as_operator
    )
    b = reply.balance
    return b.available_points, b.pending_points, b.held_points


async def history(gateway: Any, member: str, kind: int = 0) -> list[common_pb2.PointsTransaction]:
    found: list[common_pb2.PointsTransaction] = []
    token = ""
    stub = members_pb2_grpc.MemberServiceStub(gateway.channel)
    while True:
        reply = await stub.ListTransactions(
            members_pb2.ListTransactionsRequest(
                member=ref(member), page_size=100, page_token=token, type=kind
            ),
            metadata=gateway.as_operator,
        )
        found.extend(reply.transactions)
        token = reply.next_page_token
        if not token:
            return found


async def test_concurrent_redemptions_never_overdraw(
    ctx: Any, gateway: Any, stubs: Any, points: Any, hotel: Meta, member: str
) -> None:
    await earn_points(points, hotel, member, 1000)

    def redeem(i: int) -> Callable[[], Awaitable[Any]]:
        request = points_pb2.RedeemPointsRequest(
            request_id=f"redeem-{i}", member=ref(member), points=30
        )
        return lambda: stubs[i % CHANNELS].RedeemPoints(
            request, metadata=hotel, timeout=CALL_TIMEOUT_S
        )

    results = await fire([redeem(i) for i in range(200)])
    expect_outcomes(results, {OK: 33, "FAILED_PRECONDITION INSUFFICIENT_POINTS": 167})
    after = sorted(r.transaction.balance.available_points for r in results if describe(r) == OK)
    assert after == list(range(10, 1000, 30)), "each redemption saw the previous one"
    assert await balance(gateway, member) == (10, 0, 0)
    assert len(await history(gateway, member, common_pb2.TRANSACTION_TYPE_REDEEM)) == 33
    report = await verify(ctx)
    assert report.ok, report.problems


async def test_concurrent_duplicate_earns_apply_once(
    gateway: Any, stubs: Any, points: Any, hotel: Meta, member: str
) -> None:
    request = points_pb2.EarnPointsRequest(
        request_id="earn-once",
        member=ref(member),
        purchase=common_pb2.Purchase(amount_minor=1234, currency_code="USD"),
        partner_reference="folio-1",
    )

    def earn(i: int) -> Callable[[], Awaitable[Any]]:
        return lambda: stubs[i % CHANNELS].EarnPoints(
            request, metadata=hotel, timeout=CALL_TIMEOUT_S
        )

    results = await fire([earn(i) for i in range(100)])
    expect_outcomes(results, {OK: 100})
    answers = {r.SerializeToString(deterministic=True) for r in results}
    assert len(answers) == 1, "every duplicate got the first answer"
    first = results[0].transaction
    assert {(r.transaction.name, r.transaction.points) for r in results} == {(first.name, 123)}
    earns = await history(gateway, member, common_pb2.TRANSACTION_TYPE_EARN)
    assert [t.name for t in earns] == [first.name]
    assert await balance(gateway, member) == (123, 0, 0)

    changed = points_pb2.EarnPointsRequest()
    changed.CopyFrom(request)
    changed.purchase.amount_minor = 9999
    await expect_error(
        points.EarnPoints(changed, metadata=hotel, timeout=CALL_TIMEOUT_S),
        grpc.StatusCode.ALREADY_EXISTS,
        "REQUEST_ID_REUSED",
    )
    assert await balance(gateway, member) == (123, 0, 0)


async def test_capture_and_void_race_on_one_hold(
    ctx: Any, gateway: Any, stubs: Any, points: Any, hotel: Meta, member: str
) -> None:
    await earn_points(points, hotel, member, 1000)
    auth = (
        await points.AuthorizeRedemption(
            points_pb2.AuthorizeRedemptionRequest(request_id=rid(), member=ref(member), points=300),
            metadata=hotel,
        )
    ).transaction

    def act(i: int) -> Callable[[], Awaitable[Any]]:
        stub = stubs[i % CHANNELS]
        if i % 2:
            void = points_pb2.VoidRedemptionRequest(request_id=f"void-{i}", transaction=auth.name)
            return lambda: stub.VoidRedemption(void, metadata=hotel, timeout=CALL_TIMEOUT_S)
        capture = points_pb2.CaptureRedemptionRequest(
            request_id=f"capture-{i}", transaction=auth.name
        )
        return lambda: stub.CaptureRedemption(capture, metadata=hotel, timeout=CALL_TIMEOUT_S)

    results = await fire([act(i) for i in range(50)])
    expect_outcomes(results, {OK: 1, "FAILED_PRECONDITION HOLD_NOT_OPEN": 49})
    (winner,) = [r.transaction for r in results if describe(r) == OK]
    closing = [
        t
        for t in await history(gateway, member)
        if t.type in (common_pb2.TRANSACTION_TYPE_CAPTURE, common_pb2.TRANSACTION_TYPE_VOID)
    ]
    assert [t.name for t in closing] == [winner.name]
    if winner.type == common_pb2.TRANSACTION_TYPE_CAPTURE:
        assert winner.points == -300
        assert await balance(gateway, member) == (700, 0, 0)
    else:
        assert winner.type == common_pb2.TRANSACTION_TYPE_VOID
        assert await balance(gateway, member) == (1000, 0, 0)
    report = await verify(ctx)
    assert report.ok, report.problems


async def test_concurrent_partial_reversals_never_exceed_the_original(
    gateway: Any, stubs: Any, points: Any, hotel: Meta, member: str
) -> None:
    earn = (
        await points.EarnPoints(
            points_pb2.EarnPointsRequest(
                request_id=rid(),
                member=ref(member),
                purchase=common_pb2.Purchase(amount_minor=1234, currency_code="USD"),
            ),
            metadata=hotel,
        )
    ).transaction
    assert earn.points == 123

    def reverse(i: int) -> Callable[[], Awaitable[Any]]:
        request = points_pb2.ReverseTransactionRequest(
            request_id=f"reverse-{i}", transaction=earn.name, points=10
        )
        return lambda: stubs[i % CHANNELS].ReverseTransaction(
            request, metadata=hotel, timeout=CALL_TIMEOUT_S
        )

    results = await fire([reverse(i) for i in range(40)])
    expect_outcomes(results, {OK: 12, "FAILED_PRECONDITION REVERSAL_EXCEEDS_ORIGINAL": 28})
    reversals = await history(gateway, member, common_pb2.TRANSACTION_TYPE_REVERSAL)
    assert len(reversals) == 12
    assert sum(t.points for t in reversals) == -120
    assert {t.related_transaction for t in reversals} == {earn.name}
    assert await balance(gateway, member) == (3, 0, 0)
