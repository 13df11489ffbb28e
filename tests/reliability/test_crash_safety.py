"""Crash safety: the gateway and the outbox worker are SIGKILLed at random moments under load.

Real processes (`coalition serve`, `coalition worker`) on a database of their own (a SQLite file,
or a fresh PostgreSQL database); clients retry every call with the SAME request_id until it is
answered, as the contract tells them to. A kill lands mid-request, mid-stream or mid-delivery:
no drain, no rollback but the database's own. Afterwards:

- every acknowledged transaction is in the ledger exactly once, under the id it was
  acknowledged with; a stored refusal (INSUFFICIENT_POINTS) moved nothing;
- a request its client gave up on is in the ledger at most once, and then whole;
- every transaction is complete (postings summing to zero), every balance is the sum of its
  postings and of the acknowledged amounts, every stored answer names a transaction that is
  there and every transaction is some request's answer (`audit`), and the real
  `coalition ledger verify` passes;
- every outbox event reaches its webhook at least once (consumers dedupe by event id).

Sizes come from `stress.count`: reduced in CI, COALITION_STRESS=full for the issue's scale.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from aiohttp import web
from process_support import (
    CLIENT_CHANNEL_OPTIONS,
    Attempted,
    GatewayProcess,
    Txn,
    WorkerProcess,
    app_context,
    audit,
    bearer,
    earn_or_redeem,
    eventually,
    never,
    processes,
    run_cli,
    scratch_database,
    seed,
    until_answered,
)
from sqlalchemy import func, select, update
from stress import count

from coalition.v1 import common_pb2, points_pb2, points_pb2_grpc
from gateway.service import outbox
from gateway.service.outbox import DELIVERIES
from partners import webhooks

pytestmark = pytest.mark.slow

KILLS = count(5, 20)
"""SIGKILLs of the gateway under unary load."""
CLIENTS = count(4, 16)
MEMBERS = count(6, 24)
ABANDON_SHARE = 0.1
"""Of the requests: the client gives up on it at its first failed attempt instead of retrying."""
CALL_DEADLINE_S = 10.0
LOAD_BEFORE_KILL_S = (0.2, 1.0)
"""How long the load runs after a restart before the next kill, drawn at random."""
ANSWERS_BEFORE_KILL_MIN = 5
"""Answers since the last restart before the next kill: every kill hits a serving gateway."""
LOAD_AFTER_LAST_KILL_S = 0.5
PROGRESS_TIMEOUT_S = 30.0
"""Bounds on waiting for load to flow; not timings under test."""

STREAM_ITEMS = count(400, 5_000)
STREAM_KILLS = count(2, 5)
"""Passes of the stream that end with the gateway killed; one more pass then completes."""
STREAM_UNANSWERED_MAX = 60
"""Items the client sends ahead of their answers: the kill always finds items in flight."""
STREAM_DEADLINE_S = 300.0

EVENTS = count(200, 3_000)
EVENTS_PER_COMMIT = 100
WORKER_KILLS = count(3, 10)
RECEIVER_DELAY_S = (0.02, 0.2)
"""How long the partner's webhook endpoint takes to answer: deliveries are in flight a while."""
DELIVERED_TIMEOUT_S = 60.0

RUN_SEED = random.randrange(2**32)
"""Printed by failing assertions: the random choices of a run (kill moments are real time)."""


def rid() -> str:
    return uuid.uuid4().hex


def ref(member: str) -> common_pb2.MemberRef:
    return common_pb2.MemberRef(member=member)


def lost_gateway(err: grpc.aio.AioRpcError) -> bool:
    """How a client sees a stream whose gateway died: UNAVAILABLE, or, when the connection
    broke while it was still writing items, grpc's own client-side INTERNAL "Internal error
    from Core" (no status came; the gateway's INTERNAL always carries an ErrorInfo)."""
    if err.code() is grpc.StatusCode.UNAVAILABLE:
        return True
    return err.code() is grpc.StatusCode.INTERNAL and err.details() == "Internal error from Core"


def give_up() -> bool:
    return True


def applied(records: Sequence[Attempted], txns: Mapping[str, Sequence[Txn]]) -> list[Attempted]:
    """The requests whose effect is in the ledger: acknowledged, or given up on but applied."""
    return [
        r for r in records if r.outcome == "OK" or (r.outcome == "ABANDONED" and txns[r.request_id])
    ]


# -- unary load ------------------------------------------------------------------------------


async def load(
    target: str,
    key: str,
    members: list[str],
    records: list[Attempted],
    stop: asyncio.Event,
    rng: random.Random,
) -> None:
    """One partner client: earns and redemptions until stopped, each retried until answered
    (or, now and then after a failed attempt, given up on)."""
    async with grpc.aio.insecure_channel(target, options=CLIENT_CHANNEL_OPTIONS) as channel:
        points = points_pb2_grpc.PointsServiceStub(channel)
        while not stop.is_set():
            record, call, request = earn_or_redeem(points, members, rng)
            records.append(record)
            impatient = rng.random() < ABANDON_SHARE
            await until_answered(
                call,
                request,
                bearer(key),
                record,
                deadline_s=CALL_DEADLINE_S,
                abandon=give_up if impatient else never,
            )


async def test_acknowledged_earns_and_redemptions_survive_sigkills(tmp_path: Path) -> None:
    rng = random.Random(RUN_SEED)
    async with scratch_database(tmp_path, "crash") as url, processes() as running:
        network = await seed(url, ["hotel"], MEMBERS)
        gateway = GatewayProcess(url, tmp_path)
        running.append(gateway)
        await gateway.start()

        records: list[Attempted] = []
        stop = asyncio.Event()
        key = network.partner_keys["hotel"]
        clients = [
            asyncio.create_task(
                load(
                    gateway.target, key, network.members, records, stop, random.Random(rng.random())
                )
            )
            for _ in range(CLIENTS)
        ]
        in_flight_at_kill: list[int] = []
        try:
            for _ in range(KILLS):
                answered = sum(1 for r in records if r.outcome)
                await eventually(
                    _answered_more(records, answered + ANSWERS_BEFORE_KILL_MIN),
                    PROGRESS_TIMEOUT_S,
                    f"load after restart {gateway.starts} (seed {RUN_SEED}); last failures "
                    f"{[r.failures[-3:] for r in records[-CLIENTS:]]}\n{gateway}",
                    watch=clients,
                )
                await asyncio.sleep(rng.uniform(*LOAD_BEFORE_KILL_S))
                in_flight_at_kill.append(sum(1 for r in records if not r.outcome))
                await gateway.kill()
                await gateway.start()
            await asyncio.sleep(LOAD_AFTER_LAST_KILL_S)
        finally:
            stop.set()
            done = await asyncio.wait_for(asyncio.gather(*clients, return_exceptions=True), 60)
        assert not [d for d in done if d is not None], done
        assert await gateway.stop() == 0, gateway

        found = await audit(url)
        code, verify_out = await run_cli("ledger", "verify", url=url, cwd=tmp_path)

    outcomes = Counter(r.outcome for r in records)
    retried = [r for r in records if r.attempts > 1]
    print(
        f"\nunary crash run (seed {RUN_SEED}): {gateway.kills} kills, starts took "
        f"{[round(s, 2) for s in gateway.start_times_s]} s; {len(records)} requests: "
        f"{dict(outcomes)}; {len(retried)} retried ({sum(r.attempts - 1 for r in retried)} "
        f"retries); in flight at each kill: {in_flight_at_kill}"
    )
    assert gateway.kills == KILLS
    assert all(n > 0 for n in in_flight_at_kill), in_flight_at_kill
    assert set(outcomes) <= {"OK", "INSUFFICIENT_POINTS", "ABANDONED"}, outcomes
    assert retried, "no request was interrupted by a kill: the run proved nothing"

    assert not found.problems, found.problems[:20]
    assert code == 0 and "OK checked" in verify_out, verify_out
    mine = {r.request_id for r in records}
    assert set(found.by_reference) <= mine, "the ledger holds transactions nobody asked for"
    for r in records:
        txns = found.by_reference.get(r.request_id, [])
        expected = ("EARN", r.points) if r.method == "EarnPoints" else ("REDEEM", -r.points)
        if r.outcome == "OK":
            assert [t.id for t in txns] == [r.transaction_id], (r, txns)
            assert (txns[0].type, txns[0].points) == expected, (r, txns)
        elif r.outcome == "INSUFFICIENT_POINTS":
            assert txns == [], (r, txns)
            assert found.keys[r.request_id] == "!INSUFFICIENT_POINTS", r
        else:  # abandoned: applied once (and whole, by the audit) or not at all
            assert len(txns) <= 1, (r, txns)
            if txns:
                assert found.keys[r.request_id] == txns[0].id, (r, txns)
                assert (txns[0].type, txns[0].points) == expected, (r, txns)
    balances: dict[str, int] = defaultdict(int)
    for r in applied(records, found.by_reference):
        balances[r.member] += r.points if r.method == "EarnPoints" else -r.points
    for member in network.members:
        member_id = member.removeprefix("members/")
        assert found.available[member_id] == balances[member], member
        assert found.available[member_id] >= 0, member


def _answered_more(records: list[Attempted], target: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return sum(1 for r in records if r.outcome) >= target

    return check


# -- the bulk stream -------------------------------------------------------------------------


@dataclass
class Pace:
    """Holds the request stream back so that at most STREAM_UNANSWERED_MAX items are sent and
    not yet answered: a kill then always finds items in flight, never a finished stream."""

    answered: int = 0
    ended: bool = False
    moved: asyncio.Event = field(default_factory=asyncio.Event)

    def answer(self) -> None:
        self.answered += 1
        self.moved.set()

    def end(self) -> None:
        self.ended = True
        self.moved.set()

    async def items(
        self, requests: Sequence[points_pb2.EarnPointsRequest]
    ) -> AsyncIterator[points_pb2.StreamEarnPointsRequest]:
        for index, request in enumerate(requests):
            while index - self.answered >= STREAM_UNANSWERED_MAX and not self.ended:
                self.moved.clear()
                await self.moved.wait()
            if self.ended:
                return
            yield points_pb2.StreamEarnPointsRequest(request=request)


async def stream_pass(
    target: str,
    key: str,
    requests: Sequence[points_pb2.EarnPointsRequest],
    kill_at: int | None,
    gateway: GatewayProcess,
) -> tuple[list[points_pb2.StreamEarnPointsResponse], grpc.aio.AioRpcError | None]:
    """Send the whole stream; with kill_at, SIGKILL the gateway once that many answers came."""
    answers: list[points_pb2.StreamEarnPointsResponse] = []
    pace = Pace()
    async with grpc.aio.insecure_channel(target, options=CLIENT_CHANNEL_OPTIONS) as channel:
        call = points_pb2_grpc.PointsServiceStub(channel).StreamEarnPoints(
            pace.items(requests), metadata=bearer(key), timeout=STREAM_DEADLINE_S
        )
        try:
            async for answer in call:
                answers.append(answer)
                pace.answer()
                if kill_at is not None and len(answers) == kill_at:
                    await gateway.kill()
        except grpc.aio.AioRpcError as err:
            return answers, err
        finally:
            pace.end()
    return answers, None


async def test_a_stream_resent_after_sigkills_counts_each_item_once(tmp_path: Path) -> None:
    rng = random.Random(RUN_SEED)
    async with scratch_database(tmp_path, "stream") as url, processes() as running:
        network = await seed(url, ["hotel"], MEMBERS)
        gateway = GatewayProcess(url, tmp_path)
        running.append(gateway)
        await gateway.start()
        key = network.partner_keys["hotel"]
        requests = [
            points_pb2.EarnPointsRequest(
                request_id=f"stream-{index:06d}",
                member=ref(network.members[index % len(network.members)]),
                action="BONUS",
                points=1 + index % 9,
                partner_reference=f"stream-{index:06d}",
            )
            for index in range(STREAM_ITEMS)
        ]
        passes: list[list[points_pb2.StreamEarnPointsResponse]] = []
        for number in range(STREAM_KILLS + 1):
            kill_at = rng.randint(STREAM_ITEMS // 10, STREAM_ITEMS * 9 // 10)
            killing = number < STREAM_KILLS
            answers, failed = await stream_pass(
                gateway.target, key, requests, kill_at if killing else None, gateway
            )
            passes.append(answers)
            if killing:
                assert failed is not None and lost_gateway(failed), (number, failed, len(answers))
                assert len(answers) < STREAM_ITEMS, "the stream ended before the kill"
                await gateway.start()
            else:
                assert failed is None, (number, failed, len(answers))
        assert await gateway.stop() == 0, gateway
        found = await audit(url)
        code, verify_out = await run_cli("ledger", "verify", url=url, cwd=tmp_path)

    print(
        f"\nstream crash run (seed {RUN_SEED}): {STREAM_ITEMS} items, {gateway.kills} kills, "
        f"answers per pass {[len(p) for p in passes]}"
    )
    final = passes[-1]
    assert [a.index for a in final] == list(range(STREAM_ITEMS))
    assert [a.WhichOneof("result") for a in final] == ["transaction"] * STREAM_ITEMS, [
        a.error for a in final if a.HasField("error")
    ][:5]
    for earlier in passes[:-1]:  # answered before a kill: the replay answers the same
        for answer in earlier:
            assert answer.transaction.name == final[answer.index].transaction.name, answer
    assert not found.problems, found.problems[:20]
    assert code == 0 and "OK checked" in verify_out, verify_out
    balances = {m.removeprefix("members/"): 0 for m in network.members}
    for request, answer in zip(requests, final, strict=True):
        txns = found.by_reference[request.request_id]
        assert [t.id for t in txns] == [answer.transaction.name.rpartition("/")[2]], request
        assert txns[0].points == request.points
        balances[request.member.member.removeprefix("members/")] += request.points
    assert len(found.transactions) == STREAM_ITEMS
    assert found.available == balances


# -- the outbox worker -----------------------------------------------------------------------


@dataclass
class Receiver:
    """A partner's webhook endpoint: slow to answer, so deliveries are in flight when the
    worker dies; it records every event id it is sent (at least once is the contract)."""

    secret: bytes = b""
    url: str = ""
    received: list[str] = field(default_factory=list)
    bad_signatures: int = 0
    in_flight: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.in_flight += 1
        try:
            body = await request.read()
            try:
                webhooks.verify(
                    self.secret,
                    request.headers[webhooks.SIGNATURE_HEADER],
                    body,
                    now=int(time.time()),
                )
            except webhooks.WebhookSignatureError:
                self.bad_signatures += 1
            self.received.append(request.headers[webhooks.EVENT_ID_HEADER])
            await asyncio.sleep(random.uniform(*RECEIVER_DELAY_S))
            return web.Response(status=204)
        finally:
            self.in_flight -= 1


async def _emit_events(url: str) -> list[str]:
    ctx = app_context(url)
    ids: list[str] = []
    try:
        while len(ids) < EVENTS:
            async with ctx.database.begin() as conn:
                for _ in range(min(EVENTS_PER_COMMIT, EVENTS - len(ids))):
                    ids.append(
                        await outbox.emit(
                            conn,
                            ctx,
                            "VoucherConsumed",
                            "members/m1",
                            {"n": len(ids)},
                            partner_ids=("hotel",),
                        )
                    )
    finally:
        await ctx.database.dispose()
    return ids


async def _lease_out(url: str) -> int:
    """What waiting out the claim lease (LEASE_S_DEFAULT, 120 s) would do: the rows the killed
    worker claimed become due again now. Returns how many were claimed and unfinished."""
    ctx = app_context(url)
    now = datetime.now(UTC)
    try:
        async with ctx.database.begin() as conn:
            result = await conn.execute(
                update(DELIVERIES)
                .where(DELIVERIES.c.state == "PENDING", DELIVERIES.c.next_attempt_time > now)
                .values(next_attempt_time=now)
            )
            return int(result.rowcount)
    finally:
        await ctx.database.dispose()


async def _delivery_states(url: str) -> dict[str, int]:
    ctx = app_context(url)
    try:
        async with ctx.database.connect() as conn:
            rows = await conn.execute(
                select(DELIVERIES.c.state, func.count()).group_by(DELIVERIES.c.state)
            )
            return {state: int(n) for state, n in rows}
    finally:
        await ctx.database.dispose()


async def test_the_outbox_worker_delivers_every_event_through_sigkills(tmp_path: Path) -> None:
    rng = random.Random(RUN_SEED)
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        receiver.url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
        async with scratch_database(tmp_path, "outbox") as url, processes() as running:
            await seed(url, ["hotel"], 0, webhook_url=receiver.url)
            receiver.secret = app_context(url).vault.webhook_secret("hotel", 1).encode()
            emitted = await _emit_events(url)
            worker = WorkerProcess(url, tmp_path)
            running.append(worker)
            in_flight_at_kill: list[int] = []
            reclaimed: list[int] = []
            for _ in range(WORKER_KILLS):
                before = len(receiver.received)
                goal = before + rng.randint(1, EVENTS // (WORKER_KILLS + 2))
                await worker.start()

                async def mid_delivery(goal: int = goal) -> bool:
                    return len(receiver.received) >= goal and receiver.in_flight > 0

                await eventually(mid_delivery, PROGRESS_TIMEOUT_S, "deliveries in flight")
                in_flight_at_kill.append(receiver.in_flight)
                await worker.kill()
                reclaimed.append(await _lease_out(url))
            await worker.start()

            async def all_delivered() -> bool:
                return await _delivery_states(url) == {"DELIVERED": EVENTS}

            await eventually(all_delivered, DELIVERED_TIMEOUT_S, f"{EVENTS} events delivered")
            assert await worker.stop() == 0, worker
    finally:
        await runner.cleanup()

    times = Counter(receiver.received)
    print(
        f"\noutbox crash run (seed {RUN_SEED}): {EVENTS} events, {worker.kills} worker kills, "
        f"in flight at each kill {in_flight_at_kill}, leased rows re-queued {reclaimed}, "
        f"{len(receiver.received)} webhook requests, "
        f"{sum(n - 1 for n in times.values())} duplicates"
    )
    assert all(n > 0 for n in in_flight_at_kill), in_flight_at_kill
    assert set(times) == set(emitted), "an event never reached the webhook"
    assert receiver.bad_signatures == 0
    # The deliveries cut off by a kill come again: the consumer sees duplicates, by event id.
    assert sum(reclaimed) > 0 and sum(n - 1 for n in times.values()) > 0, (reclaimed, times)
