"""StreamEarnPoints through a real grpc.aio client: one answer per item, in order, exactly once.

The contract (points.proto): any number of EarnPoints requests over one bidirectional stream;
exactly one response per request, in the order received, carrying the request's 0-based index
and request_id; a failed item is an ItemError with the code and reason EarnPoints would give and
does not end the stream; each item is idempotent on its own request_id, across streams and
across EarnPoints.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

import grpc
import pytest
from errors import decode_status, details_of, expect_error  # tests/e2e/errors.py
from google.rpc import error_details_pb2
from sqlalchemy import select

from coalition.v1 import (
    common_pb2,
    members_pb2,
    members_pb2_grpc,
    partners_pb2,
    points_pb2,
    points_pb2_grpc,
)
from gateway.adapters.models import ParkedEarnRow, table_of
from gateway.domain import programs
from gateway.entrypoints.grpc.points import STREAM_BATCH_MAX, STREAM_WINDOW

Meta = list[tuple[str, str]]
Item = points_pb2.StreamEarnPointsResponse

CALL_TIMEOUT_S = 300.0
"""A deadline only so that a hung stream fails instead of hanging the run; nothing is timed."""
READER_POLL_S = 0.1
READER_POLLS_MAX = 100
"""Polls while waiting for the server to settle (stop applying earns, end a cancelled stream's
tasks): never a measure of speed, only a bound so that a hang fails."""
POSTED = common_pb2.TRANSACTION_STATE_POSTED
PARKED = common_pb2.TRANSACTION_STATE_PARKED
PARKED_EARNS = table_of(ParkedEarnRow)

SKYWAYS_FORMAT = partners_pb2.ProgramNumberFormat(
    min_length=9,
    max_length=9,
    charset=partners_pb2.NUMBER_CHARSET_DIGITS,
    check_digit=partners_pb2.CHECK_DIGIT_SCHEME_MOD7,
)


def rid() -> str:
    return uuid.uuid4().hex


def ref(member: str) -> common_pb2.MemberRef:
    return common_pb2.MemberRef(member=member)


def bonus(member: str, points: int, request_id: str | None = None, **fields: Any) -> Any:
    """An action earn of exactly `points` (actions get no tier bonus and no campaign here)."""
    return points_pb2.EarnPointsRequest(
        request_id=rid() if request_id is None else request_id,
        member=ref(member),
        action="BONUS",
        points=points,
        **fields,
    )


def usd(amount_minor: int, currency: str = "USD") -> common_pb2.Purchase:
    return common_pb2.Purchase(amount_minor=amount_minor, currency_code=currency)


async def items_of(requests: Iterable[Any]) -> AsyncIterator[points_pb2.StreamEarnPointsRequest]:
    for request in requests:
        yield points_pb2.StreamEarnPointsRequest(request=request)


async def stream(
    points: points_pb2_grpc.PointsServiceStub, meta: Meta, requests: Sequence[Any]
) -> list[Item]:
    """Send every request over one stream and collect every answer."""
    call = points.StreamEarnPoints(items_of(requests), metadata=meta, timeout=CALL_TIMEOUT_S)
    return [answer async for answer in call]


def assert_one_answer_each_in_order(answers: Sequence[Item], requests: Sequence[Any]) -> None:
    assert len(answers) == len(requests), f"{len(requests)} items, {len(answers)} answers"
    assert [a.index for a in answers] == list(range(len(requests)))
    assert [a.request_id for a in answers] == [r.request_id for r in requests]


def outcome(answer: Item) -> str:
    """OK or "CODE REASON" of one answer."""
    kind = answer.WhichOneof("result")
    if kind == "transaction":
        return "OK"
    if kind == "error":
        return f"{grpc.StatusCode(_code(answer.error.code)).name} {answer.error.reason}"
    return "(no result)"


def _code(value: int) -> tuple[int, str]:
    return next(c.value for c in grpc.StatusCode if c.value[0] == value)


def wire(message: Any) -> bytes:
    return bytes(message.SerializeToString(deterministic=True))


class Coalition:
    """A hotel, a travel agency authorized for an airline with mod-7 numbers, and members."""

    def __init__(self, gateway: Any) -> None:
        self.gw = gateway
        self.points = points_pb2_grpc.PointsServiceStub(gateway.channel)
        self.members = members_pb2_grpc.MemberServiceStub(gateway.channel)

    async def setup(self) -> Coalition:
        _, key = await self.gw.create_partner("grand-hotel")
        self.hotel: Meta = self.gw.auth(key)
        return self

    async def setup_airline(self) -> None:
        await self.gw.create_partner(
            "skyways",
            "AIRLINE",
            base_earn_rate="5",
            program=partners_pb2.LoyaltyProgram(unit="MILES", number_format=SKYWAYS_FORMAT),
        )
        await self.gw.create_partner("oceanic", "AIRLINE")
        _, key = await self.gw.create_partner(
            "wanderlust", "TRAVEL_AGENCY", authorized_airlines=["partners/skyways"]
        )
        self.agency: Meta = self.gw.auth(key)

    async def enroll(self, name: str = "Ada Lovelace") -> str:
        reply = await self.members.EnrollMember(
            members_pb2.EnrollMemberRequest(
                request_id=rid(), member=members_pb2.Member(display_name=name)
            ),
            metadata=self.gw.as_operator,
        )
        return str(reply.member.name)

    async def available(self, member: str) -> int:
        reply = await self.members.GetBalance(
            members_pb2.GetBalanceRequest(member=ref(member)), metadata=self.gw.as_operator
        )
        return int(reply.balance.available_points)

    async def history(self, member: str) -> list[common_pb2.PointsTransaction]:
        found: list[common_pb2.PointsTransaction] = []
        token = ""
        while True:
            reply = await self.members.ListTransactions(
                members_pb2.ListTransactionsRequest(
                    member=ref(member), page_size=100, page_token=token
                ),
                metadata=self.gw.as_operator,
            )
            found.extend(reply.transactions)
            token = reply.next_page_token
            if not token:
                return found

    async def link(self, member: str, number: str) -> None:
        await self.members.LinkAccount(
            members_pb2.LinkAccountRequest(
                request_id=rid(),
                member=ref(member),
                linked_account=members_pb2.LinkedAccount(
                    program_number=common_pb2.ProgramNumber(
                        program="partners/skyways", number=number
                    )
                ),
            ),
            metadata=self.gw.as_operator,
        )

    async def unary_error(self, meta: Meta, request: Any) -> tuple[int, str, str, dict[str, str]]:
        """(code, reason, message, metadata) of the status EarnPoints answers the request with."""
        try:
            reply = await self.points.EarnPoints(request, metadata=meta)
        except grpc.aio.AioRpcError as err:
            status = decode_status(err)
            (info,) = details_of(status, error_details_pb2.ErrorInfo)
            assert status.code == err.code().value[0]
            return status.code, info.reason, status.message, dict(info.metadata)
        raise AssertionError(f"EarnPoints accepted what should fail: {reply}")


def item_error(answer: Item) -> tuple[int, str, str, dict[str, str]]:
    assert answer.WhichOneof("result") == "error", f"expected an ItemError: {answer}"
    e = answer.error
    return e.code, e.reason, e.message, dict(e.metadata)


@pytest.fixture
async def world(gateway: Any) -> Coalition:
    return await Coalition(gateway).setup()


# -- one answer per item, in order ------------------------------------------------------------


async def test_every_item_is_answered_once_in_order_across_many_batches(world: Coalition) -> None:
    members = [await world.enroll(f"Member {i}") for i in range(3)]
    count = 2 * STREAM_WINDOW + STREAM_BATCH_MAX - 12  # 500: several windows and batches
    requests = [bonus(members[i % 3], 1 + i % 17) for i in range(count)]

    answers = await stream(world.points, world.hotel, requests)

    assert_one_answer_each_in_order(answers, requests)
    assert Counter(outcome(a) for a in answers) == {"OK": count}
    assert len({a.transaction.name for a in answers}) == count
    running: dict[str, int] = defaultdict(int)
    for request, answer in zip(requests, answers, strict=True):
        member = request.member.member
        running[member] += request.points
        txn = answer.transaction
        assert txn.name.startswith(member + "/transactions/")
        assert (txn.type, txn.state, txn.points) == (
            common_pb2.TRANSACTION_TYPE_EARN,
            POSTED,
            request.points,
        )
        # Answers come in the order the earns were applied: each shows the balance after it.
        assert txn.balance.available_points == running[member], answer.index
    for member in members:
        assert await world.available(member) == running[member]
        assert len(await world.history(member)) == count // 3 + (members.index(member) < count % 3)


async def test_an_empty_stream_gets_no_answers(world: Coalition) -> None:
    assert await stream(world.points, world.hotel, []) == []


# -- failed items ------------------------------------------------------------------------------


async def test_failed_items_answer_as_earn_points_would_and_the_stream_goes_on(
    world: Coalition,
) -> None:
    member = await world.enroll()
    other_id = member.removeprefix("members/")
    unknown = "members/" + ("0" if other_id[0] != "0" else "1") * len(other_id)
    bad: dict[str, Any] = {
        "unknown member": bonus(unknown, 5),
        "unknown loyalty number": points_pb2.EarnPointsRequest(
            request_id=rid(),
            member=common_pb2.MemberRef(loyalty_number="000000000000"),
            purchase=usd(1000),
        ),
        "zero amount": points_pb2.EarnPointsRequest(
            request_id=rid(), member=ref(member), purchase=usd(0)
        ),
        "negative amount": points_pb2.EarnPointsRequest(
            request_id=rid(), member=ref(member), purchase=usd(-100)
        ),
        "unknown currency": points_pb2.EarnPointsRequest(
            request_id=rid(), member=ref(member), purchase=usd(1000, "ZZZ")
        ),
        "missing request_id": bonus(member, 5, request_id=""),
        "request_id too long": bonus(member, 5, request_id="r" * 65),
        "missing basis": points_pb2.EarnPointsRequest(request_id=rid(), member=ref(member)),
        "missing member": points_pb2.EarnPointsRequest(request_id=rid(), purchase=usd(1000)),
        "negative points": bonus(member, -5),
        "hotel on behalf of an airline": bonus(member, 5, on_behalf_of="partners/skyways"),
    }
    requests: list[Any] = []
    good: list[Any] = []
    for bad_request in bad.values():
        neighbour = bonus(member, 1 + len(good))
        good.append(neighbour)
        requests += [neighbour, bad_request]
    requests.append(bonus(member, 100))
    good.append(requests[-1])

    answers = await stream(world.points, world.hotel, requests)

    assert_one_answer_each_in_order(answers, requests)
    assert [outcome(a) == "OK" for a in answers] == [r in good for r in requests]
    for (what, request), answer in zip(bad.items(), answers[1::2], strict=True):
        expected = await world.unary_error(world.hotel, request)
        assert item_error(answer) == expected, what
    assert await world.available(member) == sum(r.points for r in good)


async def test_an_oversized_field_fails_its_item_like_earn_points(world: Coalition) -> None:
    member = await world.enroll()
    oversized = bonus(member, 5, partner_reference="x" * 5000)
    answers = await stream(world.points, world.hotel, [oversized, bonus(member, 7)])
    assert [outcome(a) for a in answers] == ["INVALID_ARGUMENT FIELD_TOO_LONG", "OK"]
    code, reason, message, _ = await world.unary_error(world.hotel, oversized)
    assert item_error(answers[0])[:3] == (code, reason, message)
    assert await world.available(member) == 7


async def test_an_oversized_field_is_named_as_earn_points_names_it(world: Coalition) -> None:
    member = await world.enroll()
    oversized = bonus(member, 5, partner_reference="x" * 5000)
    (answer,) = await stream(world.points, world.hotel, [oversized])
    assert item_error(answer) == await world.unary_error(world.hotel, oversized)


async def test_a_malformed_item_is_its_own_error_and_the_stream_goes_on(
    world: Coalition,
) -> None:
    member = await world.enroll()
    raw = world.gw.channel.stream_stream(
        "/coalition.v1.PointsService/StreamEarnPoints",
        request_serializer=None,  # the items are sent as the bytes given
        response_deserializer=points_pb2.StreamEarnPointsResponse.FromString,
    )
    good = [bonus(member, 3), bonus(member, 4)]

    async def items() -> AsyncIterator[bytes]:
        yield points_pb2.StreamEarnPointsRequest(request=good[0]).SerializeToString()
        yield b"\xff\xff\xff"  # not a protobuf message
        yield points_pb2.StreamEarnPointsRequest(request=good[1]).SerializeToString()

    answers = [a async for a in raw(items(), metadata=world.hotel, timeout=CALL_TIMEOUT_S)]

    assert [a.index for a in answers] == [0, 1, 2]
    assert [outcome(a) for a in answers] == ["OK", "INVALID_ARGUMENT MALFORMED_REQUEST", "OK"]
    assert [a.request_id for a in answers] == [good[0].request_id, "", good[1].request_id]
    assert await world.available(member) == 7


# -- idempotency -------------------------------------------------------------------------------


async def test_resending_a_stream_replays_every_answer_and_creates_nothing(
    world: Coalition,
) -> None:
    members = [await world.enroll(f"Member {i}") for i in range(2)]
    requests = [bonus(members[i % 2], 10 + i) for i in range(150)]
    requests += [
        points_pb2.EarnPointsRequest(
            request_id=rid(), member=ref(members[0]), purchase=usd(4321), partner_reference="F-1"
        ),
        bonus(members[1], 0),  # fails: no campaign rewards BONUS with 0 points (stored)
    ]

    first = await stream(world.points, world.hotel, requests)
    balances = [await world.available(m) for m in members]
    histories = [[t.name for t in await world.history(m)] for m in members]
    again = await stream(world.points, world.hotel, requests)

    assert_one_answer_each_in_order(again, requests)
    assert outcome(first[-1]) == "FAILED_PRECONDITION ACTION_NOT_REWARDED"
    assert [wire(a) for a in again] == [wire(a) for a in first]
    assert [await world.available(m) for m in members] == balances
    assert [[t.name for t in await world.history(m)] for m in members] == histories
    assert balances[0] == sum(r.points for r in requests[:150:2]) + first[150].transaction.points


async def test_a_request_id_used_by_earn_points_replays_in_a_stream_and_back(
    world: Coalition,
) -> None:
    member = await world.enroll()
    unary_first = points_pb2.EarnPointsRequest(
        request_id="folio-1", member=ref(member), purchase=usd(12345), partner_reference="F-1"
    )
    unary = (await world.points.EarnPoints(unary_first, metadata=world.hotel)).transaction
    streamed_first = bonus(member, 40, request_id="bonus-1")

    answers = await stream(
        world.points, world.hotel, [bonus(member, 3), unary_first, streamed_first]
    )

    assert [outcome(a) for a in answers] == ["OK", "OK", "OK"]
    assert answers[1].transaction == unary
    replayed = await world.points.EarnPoints(streamed_first, metadata=world.hotel)
    assert replayed.transaction == answers[2].transaction
    assert await world.available(member) == 3 + unary.points + 40
    assert len(await world.history(member)) == 3


async def test_a_request_id_reused_for_another_earn_is_refused_in_the_stream(
    world: Coalition,
) -> None:
    member = await world.enroll()
    await world.points.EarnPoints(bonus(member, 10, request_id="once"), metadata=world.hotel)
    changed = bonus(member, 11, request_id="once")

    answers = await stream(world.points, world.hotel, [changed, bonus(member, 1)])

    assert [outcome(a) for a in answers] == ["ALREADY_EXISTS REQUEST_ID_REUSED", "OK"]
    assert item_error(answers[0]) == await world.unary_error(world.hotel, changed)
    assert answers[0].error.metadata["request_id"] == "once"
    assert await world.available(member) == 11


async def test_a_request_id_twice_in_one_stream_counts_once(world: Coalition) -> None:
    member = await world.enroll()
    twice = bonus(member, 25, request_id="twice")
    reused = bonus(member, 26, request_id="twice")
    far = bonus(member, 30, request_id="far")
    requests = [twice, bonus(member, 1), twice, reused, far]
    requests += [bonus(member, 1) for _ in range(2 * STREAM_BATCH_MAX)] + [far]

    answers = await stream(world.points, world.hotel, requests)

    assert_one_answer_each_in_order(answers, requests)
    assert outcome(answers[3]) == "ALREADY_EXISTS REQUEST_ID_REUSED"
    assert outcome(answers[0]) == "OK"
    assert wire(answers[2].transaction) == wire(answers[0].transaction)
    assert wire(answers[-1].transaction) == wire(answers[4].transaction)
    assert len(await world.history(member)) == 2 + 2 * STREAM_BATCH_MAX + 1
    assert await world.available(member) == 25 + 1 + 30 + 2 * STREAM_BATCH_MAX


# -- travel agencies ---------------------------------------------------------------------------


def skyways(body: str) -> str:
    return programs.with_check_digit(programs.CheckDigit.MOD7, body)


def booking(
    number: str, amount_minor: int, program: str = "partners/skyways", **fields: Any
) -> Any:
    fields.setdefault("on_behalf_of", "partners/skyways")
    return points_pb2.EarnPointsRequest(
        request_id=rid(),
        member=common_pb2.MemberRef(
            program_number=common_pb2.ProgramNumber(program=program, number=number)
        ),
        purchase=usd(amount_minor),
        partner_reference=fields.pop("partner_reference", "PNR"),
        **fields,
    )


async def test_an_agency_stream_credits_linked_numbers_and_parks_the_others(
    world: Coalition,
) -> None:
    await world.setup_airline()
    ada, grace = await world.enroll("Ada"), await world.enroll("Grace")
    linked, unlinked = skyways("12345678"), skyways("87654321")
    await world.link(ada, linked)
    bad_digit = linked[:-1] + str((int(linked[-1]) + 1) % 7)
    requests = [
        booking(linked, 40000, partner_reference="PNR-1"),  # 2,000 points
        booking(unlinked, 10000, partner_reference="PNR-2"),  # 500, parked
        booking(bad_digit, 10000),
        booking(linked, 10000, "partners/oceanic", on_behalf_of="partners/oceanic"),
        booking(unlinked, 20000, partner_reference="PNR-3"),  # 1,000, parked
        booking(linked, 2000, partner_reference="PNR-4"),  # 100
    ]

    answers = await stream(world.points, world.agency, requests)

    assert_one_answer_each_in_order(answers, requests)
    assert [outcome(a) for a in answers] == [
        "OK",
        "OK",
        "INVALID_ARGUMENT INVALID_PROGRAM_NUMBER",
        "PERMISSION_DENIED AIRLINE_NOT_AUTHORIZED",
        "OK",
        "OK",
    ]
    for i in (2, 3):
        assert item_error(answers[i]) == await world.unary_error(world.agency, requests[i])
    credited = [answers[i].transaction for i in (0, 5)]
    parked = [answers[i].transaction for i in (1, 4)]
    assert [(t.state, t.points) for t in credited] == [(POSTED, 2000), (POSTED, 100)]
    assert all(t.name.startswith(ada + "/transactions/") for t in credited)
    assert [(t.state, t.points) for t in parked] == [(PARKED, 500), (PARKED, 1000)]
    assert all(t.name.startswith("parkedEarns/") for t in parked)
    for t in credited + parked:
        assert (t.partner, t.channel_partner) == ("partners/skyways", "partners/wanderlust")
    assert await world.available(ada) == 2100

    await world.link(grace, unlinked)

    assert await world.available(grace) == 1500
    async with world.gw.ctx.database.connect() as conn:
        states = (await conn.execute(select(PARKED_EARNS.c.state))).scalars().all()
    assert sorted(states) == ["CLAIMED", "CLAIMED"]
    # Resent after the link, the parked bookings replay their first (PARKED) answer.
    again = await stream(world.points, world.agency, requests)
    assert [wire(a) for a in again] == [wire(a) for a in answers]
    assert (await world.available(ada), await world.available(grace)) == (2100, 1500)


# -- flow control ------------------------------------------------------------------------------


async def test_a_client_that_writes_far_ahead_of_reading_gets_every_answer_in_order(
    world: Coalition,
) -> None:
    members = [await world.enroll(f"Member {i}") for i in range(2)]
    count = 2000  # far more than the server reads ahead (STREAM_WINDOW) and answers unread
    requests = [bonus(members[i % 2], 1 + i % 3, request_id=f"item-{i}") for i in range(count)]
    # No BDP probing: the client's receive window stays small, so the server's answers back up.
    channel = grpc.aio.insecure_channel(world.gw.target, options=[("grpc.http2.bdp_probe", 0)])
    call = points_pb2_grpc.PointsServiceStub(channel).StreamEarnPoints(
        metadata=world.hotel, timeout=CALL_TIMEOUT_S
    )
    written = 0

    async def write_all() -> None:
        nonlocal written
        for request in requests:
            await call.write(points_pb2.StreamEarnPointsRequest(request=request))
            written += 1
        await call.done_writing()

    writer = asyncio.create_task(write_all())
    try:
        # Read nothing until the writer has written everything or stopped making progress,
        # and the server has stopped applying earns (its answers wait for the client).
        last = -1
        while not writer.done() and written != last:
            last = written
            await asyncio.wait({writer}, timeout=0.2)
        applied = -1
        for _ in range(READER_POLLS_MAX):
            now = sum([await world.available(m) for m in members])
            if now == applied:
                break
            applied = now
            await asyncio.sleep(5 * READER_POLL_S)

        answers: list[Item] = [answer async for answer in call]
        await writer
    finally:
        writer.cancel()
        await channel.close()

    assert_one_answer_each_in_order(answers, requests)
    assert Counter(outcome(a) for a in answers) == {"OK": count}
    for member in members:
        assert await world.available(member) == sum(
            r.points for r in requests if r.member.member == member
        )


# -- authentication ----------------------------------------------------------------------------


async def test_an_unauthenticated_stream_is_refused_and_writes_nothing(world: Coalition) -> None:
    member = await world.enroll()
    requests = [bonus(member, 10) for _ in range(3)]
    for meta, reason in [
        ([], "MISSING_CREDENTIALS"),
        (world.gw.auth("not-a-key"), "INVALID_CREDENTIALS"),
        ([("authorization", "Basic abc")], "INVALID_CREDENTIALS"),
    ]:
        # Refused before the server reads any item. (Nothing is written here: when the client
        # library is still sending items as the status arrives, grpc.aio itself may report
        # INTERNAL "Failed execute_batch" instead of the server's status.)
        call = world.points.StreamEarnPoints(metadata=meta, timeout=CALL_TIMEOUT_S)
        await expect_error(_answers(call), grpc.StatusCode.UNAUTHENTICATED, reason)
        # With items sent, the stream still ends without a single answer.
        sent = world.points.StreamEarnPoints(
            items_of(requests), metadata=meta, timeout=CALL_TIMEOUT_S
        )
        with pytest.raises(grpc.aio.AioRpcError):
            await _answers(sent)
    assert await world.available(member) == 0
    # The same requests with the partner's key go through: nothing was recorded for them.
    answers = await stream(world.points, world.hotel, requests)
    assert [outcome(a) for a in answers] == ["OK"] * 3
    assert await world.available(member) == 30


async def _answers(call: Any) -> list[Item]:
    return [answer async for answer in call]


# -- concurrent streams (PostgreSQL) -----------------------------------------------------------


@pytest.mark.postgres
async def test_concurrent_streams_over_the_same_members_in_different_orders_lose_nothing(
    gateway: Any, world: Coalition
) -> None:
    members = [await world.enroll(f"Member {i}") for i in range(12)]
    per_member = 25
    orders = [
        members,  # ascending
        members[::-1],  # descending
        members[1::2] + members[::2],  # interleaved
    ]
    streams = [
        [bonus(m, 1 + (s + i) % 5) for i in range(per_member) for m in order]
        for s, order in enumerate(orders)
    ]
    channels = [grpc.aio.insecure_channel(gateway.target) for _ in streams]
    try:
        results = await asyncio.gather(
            *(
                stream(points_pb2_grpc.PointsServiceStub(channel), world.hotel, requests)
                for channel, requests in zip(channels, streams, strict=True)
            ),
            return_exceptions=True,
        )
    finally:
        for channel in channels:
            await channel.close()

    expected: dict[str, int] = defaultdict(int)
    for requests, answers in zip(streams, results, strict=True):
        assert not isinstance(answers, BaseException), f"a stream failed: {answers!r}"
        assert_one_answer_each_in_order(answers, requests)
        assert Counter(outcome(a) for a in answers) == {"OK": len(requests)}
        for request, answer in zip(requests, answers, strict=True):
            assert answer.transaction.name.startswith(request.member.member + "/")
            assert answer.transaction.points == request.points
            expected[request.member.member] += request.points
    names = [a.transaction.name for answers in results for a in answers]  # type: ignore[union-attr]
    assert len(set(names)) == len(names) == len(streams) * len(members) * per_member
    for member in members:
        assert await world.available(member) == expected[member]
        assert len(await world.history(member)) == len(streams) * per_member


@pytest.mark.postgres
async def test_the_same_stream_sent_twice_at_once_applies_each_item_once(
    gateway: Any, world: Coalition
) -> None:
    """A client resends a broken stream while the server still works on the first one."""
    members = [await world.enroll(f"Member {i}") for i in range(10)]
    requests = [bonus(members[(i * 7) % 10], 1 + i % 4) for i in range(600)]
    channels = [grpc.aio.insecure_channel(gateway.target) for _ in range(2)]
    try:
        results = await asyncio.gather(
            *(
                stream(points_pb2_grpc.PointsServiceStub(channel), world.hotel, requests)
                for channel in channels
            ),
            return_exceptions=True,
        )
    finally:
        for channel in channels:
            await channel.close()

    for answers in results:
        assert not isinstance(answers, BaseException), f"a stream failed: {answers!r}"
        assert_one_answer_each_in_order(answers, requests)
        assert Counter(outcome(a) for a in answers) == {"OK": len(requests)}
    first, second = results
    assert [wire(a) for a in first] == [wire(a) for a in second]  # type: ignore[union-attr]
    for member in members:
        mine = [r.points for r in requests if r.member.member == member]
        assert await world.available(member) == sum(mine)
        assert len(await world.history(member)) == len(mine)


# -- found by these tests (fixed in 636ee7e) ----------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [{"request_id": "folio\x00-1"}, {"partner_reference": "PNR\x00-1"}],
    ids=["request_id", "partner_reference"],
)
async def test_a_nul_in_a_string_field_fails_its_item_alone_as_invalid_argument(
    world: Coalition, fields: dict[str, str]
) -> None:
    """PostgreSQL cannot store a NUL: it must be refused as input on every backend, never reach
    the database (an INTERNAL error; once, the end of the stream with SQL in its details)."""
    member = await world.enroll()
    refused = bonus(member, 5, **fields)
    requests = [bonus(member, 1), refused, bonus(member, 2)]

    try:
        answers = await stream(world.points, world.hotel, requests)
    except grpc.aio.AioRpcError as err:
        assert "INSERT INTO" not in (err.details() or ""), "the stream leaked SQL to the client"
        raise

    assert_one_answer_each_in_order(answers, requests)
    assert [outcome(a) for a in answers] == ["OK", "INVALID_ARGUMENT INVALID_CHARACTERS", "OK"]
    expected = await world.unary_error(world.hotel, refused)
    assert expected[3] == {"field": next(iter(fields))}
    assert item_error(answers[1]) == expected
    assert await world.available(member) == 3


def stream_readers() -> dict[asyncio.Task[Any], Any]:
    """The server's StreamEarnPoints read-ahead tasks (the server runs in the test's event
    loop), each with its window."""
    found = {}
    for task in asyncio.all_tasks():
        coro = task.get_coro()
        if getattr(coro, "__qualname__", "").endswith("StreamEarnPoints.<locals>.read"):
            frame = getattr(coro, "cr_frame", None)
            found[task] = frame.f_locals.get("window") if frame is not None else None
    return found


async def test_a_stream_cancelled_with_a_full_window_leaves_no_task_behind(
    world: Coalition,
) -> None:
    member = await world.enroll()
    before = set(stream_readers())
    channel = grpc.aio.insecure_channel(world.gw.target, options=[("grpc.http2.bdp_probe", 0)])
    call = points_pb2_grpc.PointsServiceStub(channel).StreamEarnPoints(
        metadata=world.hotel, timeout=CALL_TIMEOUT_S
    )

    async def write_all() -> None:
        for _ in range(3000):
            await call.write(points_pb2.StreamEarnPointsRequest(request=bonus(member, 1)))
        await call.done_writing()

    writer = asyncio.create_task(write_all())
    try:
        # Read nothing: the server's answers fill the flow-control window, the server stops
        # applying earns, and its read-ahead window fills up behind them.
        for _ in range(READER_POLLS_MAX):
            readers = {t: w for t, w in stream_readers().items() if t not in before}
            if any(w is not None and w.full() for w in readers.values()):
                break
            await asyncio.sleep(READER_POLL_S)
        else:
            raise AssertionError("the server's read-ahead window never filled up")
        # ... and nothing more is applied (the batch in progress, if any, has committed).
        applied = await world.available(member)
        for _ in range(READER_POLLS_MAX):
            await asyncio.sleep(5 * READER_POLL_S)
            if applied == (applied := await world.available(member)):
                break
        assert 0 < applied < 3000, "the server stopped before the end of the stream"

        call.cancel()

        for _ in range(READER_POLLS_MAX):
            if not set(stream_readers()) - before:
                break
            await asyncio.sleep(READER_POLL_S)
        leaked = set(stream_readers()) - before
        assert not leaked, f"the cancelled stream left {leaked}"
    finally:
        call.cancel()
        stuck = set(stream_readers()) - before
        for task in stuck | {writer}:
            task.cancel()
        await asyncio.gather(*stuck, writer, return_exceptions=True)
        await channel.close()
