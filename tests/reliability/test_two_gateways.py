"""Two gateway processes on one PostgreSQL: no overdraft and no duplicate, whichever serves.

Two real `coalition serve` processes share a fresh database; concurrent partner clients, split
across them, hammer the SAME few members with earns, redemptions and authorizations (captured,
voided, or raced: a capture on one gateway against a void on the other), and send duplicates:
one request, one request_id, to both gateways at once. Afterwards:

- no balance was ever negative (not in any answer, not at the end), and no member had more
  redeemed, captured or held than they earned;
- each request_id is one transaction, and both gateways gave a duplicate the same answer;
- a hold is captured or voided once, never both;
- the ledger is complete (`audit`) and `coalition ledger verify` passes.

PostgreSQL only: SQLite has one writer per file, and this is about gateways that do not.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import grpc
import pytest
from process_support import (
    CLIENT_CHANNEL_OPTIONS,
    Attempted,
    GatewayProcess,
    audit,
    bearer,
    processes,
    run_cli,
    scratch_database,
    seed,
    until_answered,
)
from stress import count

from coalition.v1 import common_pb2, points_pb2, points_pb2_grpc

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

MEMBERS = 3
"""Few on purpose: every client works on the same balances."""
PARTNERS = ["hotel", "rides"]
CLIENTS = count(8, 32)
OPERATIONS = count(40, 400)
"""Per client."""
EARN_POINTS = (30, 120)
SPEND_POINTS = (20, 120)
CALL_DEADLINE_S = 30.0
REFUSALS = frozenset({"INSUFFICIENT_POINTS", "HOLD_NOT_OPEN"})
"""The business answers these clients can get; anything else fails the test."""
RUN_SEED = random.randrange(2**32)


def rid() -> str:
    return uuid.uuid4().hex


class Client:
    """A partner's client with a channel to each gateway; `home` is the one it normally uses."""

    def __init__(self, targets: list[str], key: str, home: int, rng: random.Random) -> None:
        self.channels = [
            grpc.aio.insecure_channel(t, options=CLIENT_CHANNEL_OPTIONS) for t in targets
        ]
        self.stubs = [points_pb2_grpc.PointsServiceStub(c) for c in self.channels]
        self.meta = bearer(key)
        self.home = home
        self.rng = rng
        self.records: list[Attempted] = []
        self.duplicates: list[tuple[Attempted, Attempted]] = []

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()

    async def send(
        self, method: str, request: Any, member: str, points: int, via: int
    ) -> Attempted:
        record = Attempted(method, request.request_id, member, points)
        self.records.append(record)
        call = getattr(self.stubs[via], method)
        return await until_answered(
            call, request, self.meta, record, deadline_s=CALL_DEADLINE_S, answers=REFUSALS
        )

    async def run(self, members: list[str]) -> None:
        for _ in range(OPERATIONS):
            member = self.rng.choice(members)
            roll = self.rng.random()
            if roll < 0.3:
                await self.earn(member)
            elif roll < 0.5:
                await self.redeem(member, self.home)
            elif roll < 0.8:
                await self.authorize_then_settle(member)
            else:
                await self.duplicate(member)

    def ref(self, member: str) -> common_pb2.MemberRef:
        return common_pb2.MemberRef(member=member)

    async def earn(self, member: str) -> None:
        points = self.rng.randint(*EARN_POINTS)
        request_id = rid()
        request = points_pb2.EarnPointsRequest(
            request_id=request_id,
            member=self.ref(member),
            action="BONUS",
            points=points,
            partner_reference=request_id,
        )
        await self.send("EarnPoints", request, member, points, self.home)

    def redeem_request(self, member: str) -> tuple[points_pb2.RedeemPointsRequest, int]:
        points, request_id = self.rng.randint(*SPEND_POINTS), rid()
        request = points_pb2.RedeemPointsRequest(
            request_id=request_id,
            member=self.ref(member),
            points=points,
            partner_reference=request_id,
        )
        return request, points

    def authorize_request(self, member: str) -> tuple[points_pb2.AuthorizeRedemptionRequest, int]:
        points, request_id = self.rng.randint(*SPEND_POINTS), rid()
        request = points_pb2.AuthorizeRedemptionRequest(
            request_id=request_id,
            member=self.ref(member),
            points=points,
            partner_reference=request_id,
        )
        return request, points

    async def redeem(self, member: str, via: int) -> None:
        request, points = self.redeem_request(member)
        await self.send("RedeemPoints", request, member, points, via)

    async def authorize_then_settle(self, member: str) -> None:
        request, points = self.authorize_request(member)
        hold = await self.send("AuthorizeRedemption", request, member, points, self.home)
        if hold.outcome != "OK":
            return
        roll, other = self.rng.random(), 1 - self.home
        capture = points_pb2.CaptureRedemptionRequest(
            request_id=rid(),
            transaction=hold.transaction,
            points=self.rng.choice([0, self.rng.randint(1, points)]),  # all, or a part
        )
        void = points_pb2.VoidRedemptionRequest(request_id=rid(), transaction=hold.transaction)
        if roll < 0.35:
            await self.send("CaptureRedemption", capture, member, capture.points, self.home)
        elif roll < 0.6:
            await self.send("VoidRedemption", void, member, 0, other)
        elif roll < 0.85:  # a race: one of them wins, the other finds the hold closed
            won = await asyncio.gather(
                self.send("CaptureRedemption", capture, member, capture.points, self.home),
                self.send("VoidRedemption", void, member, 0, other),
            )
            assert sorted(r.outcome for r in won) == ["HOLD_NOT_OPEN", "OK"], won
        # else: left open; it holds its points to the end

    async def duplicate(self, member: str) -> None:
        """One request, one request_id, sent to both gateways at the same moment."""
        request: Any
        if self.rng.random() < 0.5:
            request, points = self.redeem_request(member)
            method = "RedeemPoints"
        else:
            request, points = self.authorize_request(member)
            method = "AuthorizeRedemption"
        first, second = await asyncio.gather(
            self.send(method, request, member, points, 0),
            self.send(method, request, member, points, 1),
        )
        self.duplicates.append((first, second))


async def test_two_gateways_never_overdraw_nor_duplicate(tmp_path: Path) -> None:
    rng = random.Random(RUN_SEED)
    async with scratch_database(tmp_path, "twogw") as url, processes() as running:
        network = await seed(url, PARTNERS, MEMBERS)
        gateways = [GatewayProcess(url, tmp_path, name=f"gateway-{n}") for n in range(2)]
        running.extend(gateways)
        await asyncio.gather(*(g.start() for g in gateways))
        targets = [g.target for g in gateways]
        clients = [
            Client(
                targets,
                network.partner_keys[PARTNERS[n % len(PARTNERS)]],
                n % 2,
                random.Random(rng.random()),
            )
            for n in range(CLIENTS)
        ]
        try:
            await asyncio.gather(*(c.run(network.members) for c in clients))
        finally:
            for client in clients:
                await client.close()
        for gateway in gateways:
            assert await gateway.stop() == 0, gateway
        found = await audit(url)
        code, verify_out = await run_cli("ledger", "verify", url=url, cwd=tmp_path)

    records = [r for c in clients for r in c.records]
    duplicates = [d for c in clients for d in c.duplicates]
    outcomes = Counter((r.method, r.outcome) for r in records)
    print(
        f"\ntwo gateways (seed {RUN_SEED}): {len(records)} calls by {CLIENTS} clients on "
        f"{MEMBERS} members, {len(duplicates)} duplicate pairs; {dict(outcomes)}; "
        f"{sum(r.attempts - 1 for r in records)} retries"
    )
    assert {outcome for _, outcome in outcomes} <= {"OK"} | REFUSALS, outcomes
    assert not found.problems, found.problems[:20]
    assert code == 0 and "OK checked" in verify_out, verify_out

    # Never negative, in any answer.
    negative = [r for r in records if r.available_after is not None and r.available_after < 0]
    assert not negative, negative[:5]
    # A duplicate got one answer, from whichever gateway asked.
    for first, second in duplicates:
        assert (first.outcome, first.transaction) == (second.outcome, second.transaction), (
            first,
            second,
        )
    # One transaction per request_id; refusals moved nothing.
    for r in records:
        if r.method not in ("EarnPoints", "RedeemPoints", "AuthorizeRedemption"):
            continue
        txns = [t for t in found.by_reference.get(r.request_id, []) if t.type in _FIRST_TYPES]
        if r.outcome == "OK":
            assert [t.id for t in txns] == [r.transaction_id], (r, txns)
        else:
            assert txns == [], (r, txns)
    for r in records:
        if r.method in ("CaptureRedemption", "VoidRedemption") and r.outcome == "OK":
            assert found.keys[r.request_id] == r.transaction_id, r
    # A hold closes once; what a member spent never passes what they earned.
    closings = Counter(t.related_id for t in found.transactions.values() if t.related_id)
    assert max(closings.values(), default=1) == 1, closings.most_common(3)
    totals: dict[str, Counter[str]] = defaultdict(Counter)
    for txn in found.transactions.values():
        totals[txn.member_id][txn.type] += txn.points
        if txn.type == "AUTHORIZATION":
            totals[txn.member_id]["HELD"] += txn.open_points
    for member_id, sums in totals.items():
        earned, redeemed, captured = sums["EARN"], -sums["REDEEM"], -sums["CAPTURE"]
        assert redeemed + captured + sums["HELD"] <= earned, (member_id, sums)
        assert found.available[member_id] == earned - redeemed - captured - sums["HELD"]
        assert found.available[member_id] >= 0, (member_id, sums)


_FIRST_TYPES = frozenset({"EARN", "REDEEM", "AUTHORIZATION"})
"""The transaction a request creates; captures and voids carry their hold's reference too."""
