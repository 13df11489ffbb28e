"""Linking an airline number while agencies book for it, under real concurrent clients
(PostgreSQL only).

An agency booking for a valid number nobody has linked is PARKED and credited to the member who
links the number; a booking for a linked number is credited at once. Both paths take the
number's lock, so however a burst of bookings and the link interleave, every booking ends up
credited to the member exactly once and none stays parked. The ctx fixture runs `ledger verify`
after each test.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from errors import decode_status, details_of  # tests/e2e/errors.py
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
from gateway.service.verify import verify

pytestmark = pytest.mark.postgres

CHANNELS = 20
BOOKINGS = 40
CALL_TIMEOUT_S = 60.0
"""Only so that a hung call fails instead of hanging the run; nothing is timed."""
PARKED_EARNS = table_of(ParkedEarnRow)
POSTED = common_pb2.TRANSACTION_STATE_POSTED
PARKED = common_pb2.TRANSACTION_STATE_PARKED
OK = "OK"

Meta = list[tuple[str, str]]

SKYWAYS_FORMAT = partners_pb2.ProgramNumberFormat(
    min_length=9,
    max_length=9,
    charset=partners_pb2.NUMBER_CHARSET_DIGITS,
    check_digit=partners_pb2.CHECK_DIGIT_SCHEME_MOD7,
)


def skyways(body: str) -> str:
    return programs.with_check_digit(programs.CheckDigit.MOD7, body)


def program_number(number: str) -> common_pb2.ProgramNumber:
    return common_pb2.ProgramNumber(program="partners/skyways", number=number)


def outcome(result: object) -> str:
    """OK, "CODE REASON" of a failed call, or the unexpected exception itself."""
    if isinstance(result, grpc.aio.AioRpcError):
        infos = details_of(decode_status(result), error_details_pb2.ErrorInfo)
        reason = infos[0].reason if infos else result.details()
        return f"{result.code().name} {reason}"
    if isinstance(result, BaseException):
        return f"{type(result).__name__}: {result!r}"
    return OK


async def fire(calls: list[Callable[[], Awaitable[Any]]]) -> list[Any]:
    """Start every call at once; each one's result or exception, in call order."""
    return list(await asyncio.gather(*(call() for call in calls), return_exceptions=True))


class Clients:
    """Stubs over CHANNELS separate channels, an airline with mod-7 numbers (5 points a
    dollar) and a travel agency authorized for it."""

    def __init__(self, gateway: Any, channels: list[grpc.aio.Channel]) -> None:
        self.gw = gateway
        self.points = [points_pb2_grpc.PointsServiceStub(c) for c in channels]
        self.members = [members_pb2_grpc.MemberServiceStub(c) for c in channels]
        self.member_stub = members_pb2_grpc.MemberServiceStub(gateway.channel)

    async def setup(self) -> Clients:
        await self.gw.create_partner(
            "skyways",
            "AIRLINE",
            base_earn_rate="5",
            program=partners_pb2.LoyaltyProgram(unit="MILES", number_format=SKYWAYS_FORMAT),
        )
        _, key = await self.gw.create_partner(
            "wanderlust", "TRAVEL_AGENCY", authorized_airlines=["partners/skyways"]
        )
        self.agency: Meta = self.gw.auth(key)
        return self

    async def enroll(self, name: str) -> str:
        reply = await self.member_stub.EnrollMember(
            members_pb2.EnrollMemberRequest(
                request_id=f"enroll-{name}", member=members_pb2.Member(display_name=name)
            ),
            metadata=self.gw.as_operator,
        )
        return str(reply.member.name)

    def book(self, i: int, request: points_pb2.EarnPointsRequest) -> Callable[[], Awaitable[Any]]:
        stub = self.points[i % CHANNELS]
        return lambda: stub.EarnPoints(request, metadata=self.agency, timeout=CALL_TIMEOUT_S)

    def link(self, i: int, member: str, number: str) -> Callable[[], Awaitable[Any]]:
        stub = self.members[i % CHANNELS]
        request = members_pb2.LinkAccountRequest(
            request_id=f"link-{member}-{number}",
            member=common_pb2.MemberRef(member=member),
            linked_account=members_pb2.LinkedAccount(program_number=program_number(number)),
        )
        return lambda: stub.LinkAccount(
            request, metadata=self.gw.as_operator, timeout=CALL_TIMEOUT_S
        )

    async def available(self, member: str) -> int:
        reply = await self.member_stub.GetBalance(
            members_pb2.GetBalanceRequest(member=common_pb2.MemberRef(member=member)),
            metadata=self.gw.as_operator,
        )
        return int(reply.balance.available_points)

    async def history(self, member: str) -> list[common_pb2.PointsTransaction]:
        found: list[common_pb2.PointsTransaction] = []
        token = ""
        while True:
            reply = await self.member_stub.ListTransactions(
                members_pb2.ListTransactionsRequest(
                    member=common_pb2.MemberRef(member=member), page_size=100, page_token=token
                ),
                metadata=self.gw.as_operator,
            )
            found.extend(reply.transactions)
            token = reply.next_page_token
            if not token:
                return found

    async def links(self, member: str) -> list[str]:
        reply = await self.member_stub.ListLinkedAccounts(
            members_pb2.ListLinkedAccountsRequest(member=common_pb2.MemberRef(member=member)),
            metadata=self.gw.as_operator,
        )
        return [a.program_number.number for a in reply.linked_accounts]

    async def parked_states(self) -> Counter[str]:
        async with self.gw.ctx.database.connect() as conn:
            rows = (await conn.execute(select(PARKED_EARNS.c.state))).scalars().all()
        return Counter(rows)


@pytest.fixture
async def clients(gateway: Any) -> AsyncIterator[Clients]:
    channels = [grpc.aio.insecure_channel(gateway.target) for _ in range(CHANNELS)]
    yield await Clients(gateway, channels).setup()
    for channel in channels:
        await channel.close()


def bookings(number: str, tag: str) -> list[points_pb2.EarnPointsRequest]:
    """BOOKINGS agency bookings for the number, of 25 to 100 points each."""
    return [
        points_pb2.EarnPointsRequest(
            request_id=f"{tag}-booking-{i}",
            member=common_pb2.MemberRef(program_number=program_number(number)),
            purchase=common_pb2.Purchase(amount_minor=500 * (1 + i % 4), currency_code="USD"),
            on_behalf_of="partners/skyways",
            partner_reference=f"{tag}-PNR-{i}",
        )
        for i in range(BOOKINGS)
    ]


@pytest.mark.parametrize("answered_first", [0, BOOKINGS // 4, 3 * BOOKINGS // 4])
async def test_bookings_racing_the_link_of_their_number_are_each_credited_once(
    ctx: Any, clients: Clients, answered_first: int
) -> None:
    """All bookings start at once; the link is sent once `answered_first` of them have been
    answered, so it races the rest."""
    member = await clients.enroll("Ada")
    number = skyways("24681357")
    requests = bookings(number, "race")
    tasks = [asyncio.ensure_future(clients.book(i, r)()) for i, r in enumerate(requests)]
    pending = set(tasks)
    while len(tasks) - len(pending) < answered_first:
        _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
    answered_before_link = [t for t in tasks if t.done()]
    link = asyncio.ensure_future(clients.link(0, member, number)())

    results = await asyncio.gather(link, *tasks, return_exceptions=True)

    assert Counter(outcome(r) for r in results) == {OK: BOOKINGS + 1}, [
        outcome(r) for r in results if outcome(r) != OK
    ]
    answers = [r.transaction for r in results[1:]]
    assert {t.state for t in answers} <= {POSTED, PARKED}
    # What was answered before the link was even sent was parked.
    assert all(t.result().transaction.state == PARKED for t in answered_before_link)
    for request, txn in zip(requests, answers, strict=True):
        assert txn.partner_reference == request.partner_reference
        assert (txn.partner, txn.channel_partner) == ("partners/skyways", "partners/wanderlust")
        if txn.state == POSTED:
            assert txn.name.startswith(member + "/transactions/")
        else:
            assert txn.name.startswith("parkedEarns/")
    parked = sum(t.state == PARKED for t in answers)

    # Every booking is the member's, once: credited at once or claimed when the link came.
    assert await clients.available(member) == sum(t.points for t in answers)
    earns = await clients.history(member)
    assert Counter(t.partner_reference for t in earns) == Counter(
        r.partner_reference for r in requests
    )
    assert all(
        (t.type, t.partner, t.channel_partner)
        == (common_pb2.TRANSACTION_TYPE_EARN, "partners/skyways", "partners/wanderlust")
        for t in earns
    )
    # Nothing stays parked: every parked booking was claimed.
    states = await clients.parked_states()
    assert states == (Counter({"CLAIMED": parked}) if parked else Counter())
    assert await clients.links(member) == [number]

    # Resent, every booking replays its first answer and credits nothing more.
    again = await fire([clients.book(i, r) for i, r in enumerate(requests)])
    assert [a.transaction for a in again] == answers
    assert await clients.available(member) == sum(t.points for t in answers)
    report = await verify(ctx)
    assert report.ok, report.problems


async def test_two_members_linking_one_number_at_once_one_wins(ctx: Any, clients: Clients) -> None:
    rounds = 10
    numbers = [skyways(f"1357{i:04d}") for i in range(rounds)]
    pairs = [
        (await clients.enroll(f"Ada {i}"), await clients.enroll(f"Grace {i}")) for i in numbers
    ]
    # Each number has a parked booking waiting: it must go to the winner only.
    parked = await fire([clients.book(i, bookings(n, f"n{i}")[0]) for i, n in enumerate(numbers)])
    assert [r.transaction.state for r in parked] == [PARKED] * rounds
    calls: list[Callable[[], Awaitable[Any]]] = []
    for i, (number, (ada, grace)) in enumerate(zip(numbers, pairs, strict=True)):
        calls += [clients.link(2 * i, ada, number), clients.link(2 * i + 1, grace, number)]

    results = await fire(calls)

    for i, (number, pair) in enumerate(zip(numbers, pairs, strict=True)):
        got = [outcome(r) for r in results[2 * i : 2 * i + 2]]
        assert sorted(got) == ["ALREADY_EXISTS ACCOUNT_ALREADY_LINKED", OK], (number, got)
        winner, loser = pair if got[0] == OK else pair[::-1]
        linked = results[2 * i + got.index(OK)].linked_account
        assert linked.name.startswith(winner + "/linkedAccounts/")
        assert linked.program_number.number == number
        assert (await clients.links(winner), await clients.links(loser)) == ([number], [])
        assert await clients.available(winner) == parked[i].transaction.points
        assert await clients.available(loser) == 0
        assert len(await clients.history(winner)) == 1
    assert await clients.parked_states() == Counter({"CLAIMED": rounds})
    report = await verify(ctx)
    assert report.ok, report.problems


async def test_one_member_linking_two_numbers_of_one_airline_at_once_keeps_one(
    ctx: Any, clients: Clients
) -> None:
    rounds = 10
    members = [await clients.enroll(f"Ada {i}") for i in range(rounds)]
    numbers = [(skyways(f"2468{i:04d}"), skyways(f"8642{i:04d}")) for i in range(rounds)]
    calls: list[Callable[[], Awaitable[Any]]] = []
    for i, (member, (first, second)) in enumerate(zip(members, numbers, strict=True)):
        calls += [clients.link(2 * i, member, first), clients.link(2 * i + 1, member, second)]

    results = await fire(calls)

    for i, member in enumerate(members):
        got = [outcome(r) for r in results[2 * i : 2 * i + 2]]
        assert sorted(got) == ["ALREADY_EXISTS PROGRAM_ALREADY_LINKED", OK], (member, got)
        assert await clients.links(member) == [numbers[i][got.index(OK)]]


async def test_bookings_racing_two_members_linking_their_number_go_to_the_winner_only(
    ctx: Any, clients: Clients
) -> None:
    ada, grace = await clients.enroll("Ada"), await clients.enroll("Grace")
    number = skyways("97531864")
    requests = bookings(number, "contest")
    calls = [clients.book(i, r) for i, r in enumerate(requests)]
    calls.insert(BOOKINGS // 3, clients.link(1, ada, number))
    calls.insert(2 * BOOKINGS // 3, clients.link(2, grace, number))
    links = [BOOKINGS // 3, 2 * BOOKINGS // 3]

    results = await fire(calls)

    link_outcomes = [outcome(results[i]) for i in links]
    assert sorted(link_outcomes) == ["ALREADY_EXISTS ACCOUNT_ALREADY_LINKED", OK]
    winner, loser = (ada, grace) if link_outcomes[0] == OK else (grace, ada)
    answers = [r for i, r in enumerate(results) if i not in links]
    assert Counter(outcome(r) for r in answers) == {OK: BOOKINGS}
    total = sum(r.transaction.points for r in answers)
    assert await clients.available(winner) == total
    assert await clients.available(loser) == 0
    assert len(await clients.history(winner)) == BOOKINGS
    assert await clients.history(loser) == []
    assert "PARKED" not in await clients.parked_states()
    report = await verify(ctx)
    assert report.ok, report.problems
