"""A database outage under load: UNAVAILABLE while it lasts, service again without a restart.

A real `coalition serve` reaches PostgreSQL through a TCP proxy in this test (`TcpProxy`); the
real server is never touched (other runs use it). Under load from partner clients (raw stubs
that retry with the same request_id, and the SDK with its own retry loop), the proxy cuts the
database away for a few seconds: `refuse` drops every connection and refuses new ones (the
server went down), `blackhole` drops them and swallows new ones (a partition: only the
gateway's connect timeout ends the wait). Then:

- every failed call was UNAVAILABLE with ErrorInfo DATABASE_UNAVAILABLE and a RetryInfo delay,
  never INTERNAL or UNKNOWN, and came back before the client's deadline;
- the PassKit web service answered 503 with Retry-After, /readyz 503;
- once the proxy forwards again the same gateway process serves every client within seconds;
- nothing is half-written: every acknowledged request is in the ledger once, the audit finds
  nothing and `coalition ledger verify` passes.

A bulk client over StreamEarnPoints has a test of its own: each item must get its own answer
(an ItemError UNAVAILABLE while the database is away) without the stream ending.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from process_support import (
    CLIENT_CHANNEL_OPTIONS,
    EARN_POINTS,
    Attempted,
    CutMode,
    GatewayProcess,
    Network,
    TcpProxy,
    audit,
    bearer,
    earn_or_redeem,
    eventually,
    processes,
    run_cli,
    scratch_database,
    seed,
    until_answered,
)
from sqlalchemy.engine import make_url
from stress import count

from coalition.v1 import common_pb2, points_pb2, points_pb2_grpc
from gateway.adapters.db import DATABASE_UNAVAILABLE, POSTGRES_CONNECT_TIMEOUT_S
from partners.sdk import CoalitionClient, CoalitionError, RetryPolicy, error_from_rpc

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

CLIENTS = count(6, 24)
MEMBERS = count(6, 24)
CALL_DEADLINE_S = 10.0
"""The SDK's default deadline per attempt."""
OUTAGE_S = {
    "refuse": float(count(3, 10)),
    # Longer than the connect timeout, so connections opened in the dark time out, and than
    # the authentication cache (5 s), so API keys are looked up in the dark too.
    "blackhole": POSTGRES_CONNECT_TIMEOUT_S + 1.5,
}
LOAD_BEFORE_S = 1.0
LOAD_AFTER_S = 1.0
RECOVERY_S_MAX = 5.0
"""Every client served again this soon after the database is back (the issue: "a few s")."""
PROGRESS_TIMEOUT_S = 30.0
STREAM_ITEMS_PER_CALL = 40
UNAVAILABLE_CODE = grpc.StatusCode.UNAVAILABLE.value[0]
PASS_TYPE = "pass.com.example.coalition"
PROBE_DEADLINE_S = POSTGRES_CONNECT_TIMEOUT_S + 3.0
"""A client deadline comfortably above the gateway's connect timeout."""
PROBE_AFTER_CUT_S = 0.5
RUN_SEED = random.randrange(2**32)


def rid() -> str:
    return uuid.uuid4().hex


def ref(member: str) -> common_pb2.MemberRef:
    return common_pb2.MemberRef(member=member)


async def load(
    target: str,
    key: str,
    members: list[str],
    records: list[Attempted],
    stop: asyncio.Event,
    *,
    rng: random.Random,
) -> None:
    """Earns and redemptions on the raw stubs, each retried until answered."""
    async with grpc.aio.insecure_channel(target, options=CLIENT_CHANNEL_OPTIONS) as channel:
        points = points_pb2_grpc.PointsServiceStub(channel)
        while not stop.is_set():
            record, call, request = earn_or_redeem(points, members, rng)
            records.append(record)
            await until_answered(call, request, bearer(key), record, deadline_s=CALL_DEADLINE_S)


async def sdk_load(
    target: str,
    key: str,
    members: list[str],
    records: list[Attempted],
    reasons: Counter[str],
    stop: asyncio.Event,
    *,
    rng: random.Random,
) -> None:
    """Purchases through the partner SDK, which retries UNAVAILABLE itself."""

    def on_retry(_attempt: int, err: CoalitionError, _delay: float) -> None:
        reasons[f"{err.code.name} {err.reason}"] += 1

    policy = RetryPolicy(
        attempts_max=1_000, backoff_s_initial=0.05, backoff_s_max=0.5, on_retry=on_retry
    )
    async with CoalitionClient(target, key, retry=policy, timeout_s=CALL_DEADLINE_S) as client:
        while not stop.is_set():
            member, request_id = rng.choice(members), rid()
            record = Attempted("EarnPoints", request_id, member)
            records.append(record)
            try:
                txn = await client.earn_points(
                    member,
                    amount_minor=rng.randint(100, 5_000),
                    currency_code="USD",
                    partner_reference=request_id,
                    request_id=request_id,
                )
            except CoalitionError as err:
                record.outcome = f"{err.code.name} {err.reason}"
            else:
                record.outcome, record.transaction = "OK", txn.name
                record.points = txn.points
            record.answered_at = time.monotonic()


async def stream_load(
    target: str,
    key: str,
    members: list[str],
    records: list[Attempted],
    failures: Counter[tuple[str, str]],
    stop: asyncio.Event,
    *,
    rng: random.Random,
) -> None:
    """Bulk earns over StreamEarnPoints: what a stream did not answer with a transaction (an
    item error, or no answer when the stream itself failed) goes again, same request_ids, in
    the next stream. `failures` counts (kind, code + reason) of every failed stream and item."""
    pending: list[tuple[Attempted, points_pb2.EarnPointsRequest]] = []
    async with grpc.aio.insecure_channel(target, options=CLIENT_CHANNEL_OPTIONS) as channel:
        stub = points_pb2_grpc.PointsServiceStub(channel)
        while pending or not stop.is_set():
            while not stop.is_set() and len(pending) < STREAM_ITEMS_PER_CALL:
                member, request_id = rng.choice(members), rid()
                record = Attempted("EarnPoints", request_id, member, rng.randint(*EARN_POINTS))
                records.append(record)
                pending.append(
                    (
                        record,
                        points_pb2.EarnPointsRequest(
                            request_id=request_id,
                            member=ref(member),
                            action="BONUS",
                            points=record.points,
                            partner_reference=request_id,
                        ),
                    )
                )
            answers: dict[str, points_pb2.StreamEarnPointsResponse] = {}
            call = stub.StreamEarnPoints(
                (points_pb2.StreamEarnPointsRequest(request=r) for _, r in pending),
                metadata=bearer(key),
                timeout=CALL_DEADLINE_S,
            )
            try:
                async for answer in call:
                    answers[answer.request_id] = answer
            except grpc.aio.AioRpcError as rpc_err:
                err = error_from_rpc(rpc_err)
                failures[("stream", f"{err.code.name} {err.reason or err.message}")] += 1
            again = []
            for record, request in pending:
                record.attempts += 1
                answer = answers.get(record.request_id)
                if answer is not None and answer.HasField("transaction"):
                    record.outcome, record.answered_at = "OK", time.monotonic()
                    record.transaction = answer.transaction.name
                    continue
                if answer is not None:
                    code = (
                        grpc.StatusCode.UNAVAILABLE
                        if answer.error.code == UNAVAILABLE_CODE
                        else None
                    )
                    name = code.name if code else str(answer.error.code)
                    failures[("item", f"{name} {answer.error.reason}")] += 1
                again.append((record, request))
            pending = again
            if pending:
                await asyncio.sleep(rng.uniform(0.02, 0.1))


async def web_during_outage(base: str) -> dict[str, tuple[int, str | None]]:
    """What the HTTP side answers while the database is away: (status, Retry-After)."""
    timeout = aiohttp.ClientTimeout(total=CALL_DEADLINE_S * 2)
    paths = {
        "readyz": "/readyz",
        "passkit": f"/passkit/v1/devices/device-1/registrations/{PASS_TYPE}",
    }
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def get(path: str) -> tuple[int, str | None]:
            async with session.get(base + path) as response:
                await response.read()
                return response.status, response.headers.get("Retry-After")

        answers = await asyncio.gather(*(get(path) for path in paths.values()))
    return dict(zip(paths, answers, strict=True))


# -- the rig: a seeded database, the proxy, a gateway behind it --------------------------------


@dataclass
class Rig:
    url: str
    """The database, reached directly (the audit and `ledger verify` do not go through the
    proxy)."""
    network: Network
    proxy: TcpProxy
    gateway: GatewayProcess
    workdir: Path


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with scratch_database(tmp_path, "outage") as url:
        network = await seed(url, ["hotel"], MEMBERS)
        direct = make_url(url)
        proxy = TcpProxy(direct.host or "127.0.0.1", direct.port or 5432)
        await proxy.start()
        try:
            async with processes() as running:
                proxied = direct.set(host="127.0.0.1", port=proxy.port)
                gateway = GatewayProcess(proxied.render_as_string(hide_password=False), tmp_path)
                running.append(gateway)
                await gateway.start()
                yield Rig(url, network, proxy, gateway, tmp_path)
        finally:
            await proxy.close()


@dataclass
class Outage:
    mode: CutMode
    cut_at: float = 0.0
    back_at: float = 0.0
    recovered_s: float = 0.0
    """From the database's return until every client had an answer again."""
    web: dict[str, tuple[int, str | None]] = field(default_factory=dict)
    web_after: dict[str, tuple[int, str | None]] = field(default_factory=dict)


Load = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


async def cut_under_load(
    rig: Rig, mode: CutMode, loads: list[Load], clients: list[list[Attempted]]
) -> Outage:
    """Run the loads, cut the database for OUTAGE_S[mode], restore it, wait until every client
    (each list of `clients`) has had an OK answer since, run a little more, stop the loads."""
    outage = Outage(mode)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(load(stop)) for load in loads]
    try:
        await asyncio.sleep(LOAD_BEFORE_S)
        await rig.proxy.cut(mode)
        outage.cut_at = time.monotonic()
        outage.web = await web_during_outage(rig.gateway.web_url)
        await asyncio.sleep(max(0.0, OUTAGE_S[mode] - (time.monotonic() - outage.cut_at)))
        await rig.proxy.restore()
        outage.back_at = time.monotonic()

        async def everyone_served() -> bool:
            return all(
                any(r.outcome == "OK" and r.answered_at > outage.back_at for r in records)
                for records in clients
            )

        await eventually(everyone_served, PROGRESS_TIMEOUT_S, "service after the outage", tasks)
        outage.recovered_s = time.monotonic() - outage.back_at
        await asyncio.sleep(LOAD_AFTER_S)
    finally:
        stop.set()
        done = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 60)
    assert not [d for d in done if d is not None], done
    outage.web_after = await web_during_outage(rig.gateway.web_url)
    assert rig.gateway.starts == 1 and rig.gateway.running, "the gateway had to be restarted"
    assert await rig.gateway.stop() == 0, rig.gateway
    return outage


async def assert_nothing_half_written(rig: Rig, records: list[Attempted]) -> None:
    """Every acknowledged request once in the ledger, with its points; nothing else there; the
    audit and `coalition ledger verify` find nothing wrong."""
    found = await audit(rig.url)
    code, verify_out = await run_cli("ledger", "verify", url=rig.url, cwd=rig.workdir)
    outcomes = Counter(r.outcome for r in records)
    assert set(outcomes) <= {"OK", "INSUFFICIENT_POINTS"}, outcomes
    assert not found.problems, found.problems[:20]
    assert code == 0 and "OK checked" in verify_out, verify_out
    assert set(found.by_reference) <= {r.request_id for r in records}
    balances = {m.removeprefix("members/"): 0 for m in rig.network.members}
    for r in records:
        txns = found.by_reference.get(r.request_id, [])
        if r.outcome == "OK":
            assert [t.id for t in txns] == [r.transaction_id], (r, txns)
            sign = -1 if r.method == "RedeemPoints" else 1
            assert txns[0].points == sign * r.points, (r, txns)
            balances[r.member.removeprefix("members/")] += txns[0].points
        else:
            assert txns == [], (r, txns)
    assert found.available == balances


# -- the tests -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["refuse", "blackhole"])
async def test_a_database_outage_answers_unavailable_then_heals(rig: Rig, mode: CutMode) -> None:
    rng = random.Random(RUN_SEED)
    key, members = rig.network.partner_keys["hotel"], rig.network.members
    clients: list[list[Attempted]] = [[] for _ in range(CLIENTS + 1)]
    sdk_retries: Counter[str] = Counter()
    target = rig.gateway.target
    loads: list[Load] = [
        partial(load, target, key, members, clients[n], rng=random.Random(rng.random()))
        for n in range(CLIENTS)
    ]
    loads.append(
        partial(
            sdk_load,
            target,
            key,
            members,
            clients[CLIENTS],
            sdk_retries,
            rng=random.Random(rng.random()),
        )
    )
    outage = await cut_under_load(rig, mode, loads, clients)

    records = [r for records in clients for r in records]
    failures = [f for r in records for f in r.failures if f.reason != "INSUFFICIENT_POINTS"]
    felt = [f for f in failures if outage.cut_at <= f.at <= outage.back_at + RECOVERY_S_MAX]
    first_ok = min(
        r.answered_at for r in records if r.outcome == "OK" and r.answered_at > outage.back_at
    )
    print(
        f"\n{mode} outage (seed {RUN_SEED}): {outage.back_at - outage.cut_at:.1f} s cut, first "
        f"answer {first_ok - outage.back_at:.2f} s and every client {outage.recovered_s:.2f} s "
        f"after; {len(records)} requests {dict(Counter(r.outcome for r in records))}, "
        f"{len(failures)} failed attempts {dict(Counter((f.code, f.reason) for f in failures))}, "
        f"slowest failure {max((f.took_s for f in failures), default=0):.2f} s; SDK retries "
        f"{dict(sdk_retries)}; web during/after {outage.web} / {outage.web_after}; proxy "
        f"dropped {rig.proxy.dropped} connections"
    )
    assert felt, "no call noticed the outage: the test proved nothing"
    assert {(f.code, f.reason) for f in failures} == {("UNAVAILABLE", DATABASE_UNAVAILABLE)}
    assert all(f.retry_after_s and f.retry_after_s > 0 for f in failures), "no RetryInfo"
    assert max(f.took_s for f in failures) < CALL_DEADLINE_S
    assert sdk_retries == Counter({f"UNAVAILABLE {DATABASE_UNAVAILABLE}": sdk_retries.total()})
    assert outage.web["readyz"][0] == 503 and outage.web_after["readyz"][0] == 200, outage
    assert outage.web["passkit"] == (503, "1"), outage
    assert outage.web_after["passkit"] == (204, None), outage
    assert outage.recovered_s <= RECOVERY_S_MAX, outage
    await assert_nothing_half_written(rig, records)


async def test_a_stream_answers_every_item_through_an_outage(rig: Rig) -> None:
    """The stream contract (points.proto): one answer per item, a failed item is that item's
    ItemError (what EarnPoints would answer: UNAVAILABLE) and does not end the stream."""
    rng = random.Random(RUN_SEED)
    records: list[Attempted] = []
    failures: Counter[tuple[str, str]] = Counter()
    key, members = rig.network.partner_keys["hotel"], rig.network.members
    loads: list[Load] = [
        partial(stream_load, rig.gateway.target, key, members, records, failures, rng=rng)
    ]
    await cut_under_load(rig, "refuse", loads, [records])
    print(f"\nstream through an outage (seed {RUN_SEED}): {len(records)} items, {dict(failures)}")
    items = {what for kind, what in failures if kind == "item"}
    assert items, "no item noticed the outage: the test proved nothing"
    assert items == {f"UNAVAILABLE {DATABASE_UNAVAILABLE}"}, failures
    ended = {what: n for (kind, what), n in failures.items() if kind == "stream"}
    assert not ended, f"streams ended early: {ended}"
    await assert_nothing_half_written(rig, records)


async def test_an_outage_answer_comes_within_one_connect_timeout(rig: Rig) -> None:
    """In a partition (blackhole) a request that cannot get a connection is answered
    UNAVAILABLE once the connect timeout ran out: within any client deadline above it."""
    key, member = rig.network.partner_keys["hotel"], rig.network.members[0]

    def earn(request_id: str) -> points_pb2.EarnPointsRequest:
        return points_pb2.EarnPointsRequest(
            request_id=request_id,
            member=ref(member),
            action="BONUS",
            points=10,
            partner_reference=request_id,
        )

    records = [Attempted("EarnPoints", rid(), member, 10) for _ in range(3)]
    async with grpc.aio.insecure_channel(rig.gateway.target) as channel:
        stub = points_pb2_grpc.PointsServiceStub(channel)
        meta = bearer(key)
        await until_answered(
            stub.EarnPoints,
            earn(records[0].request_id),
            meta,
            records[0],
            deadline_s=CALL_DEADLINE_S,
        )  # a pooled connection, a cached key
        await rig.proxy.cut("blackhole")
        try:
            # The first request meets the dead pooled connection; the probe comes just after.
            opener = asyncio.ensure_future(
                stub.EarnPoints(earn(records[1].request_id), metadata=meta, timeout=60)
            )
            await asyncio.sleep(PROBE_AFTER_CUT_S)
            began = time.monotonic()
            try:
                await stub.EarnPoints(
                    earn(records[2].request_id), metadata=meta, timeout=PROBE_DEADLINE_S
                )
            except grpc.aio.AioRpcError as err:
                probe = (err.code(), error_from_rpc(err).reason, time.monotonic() - began)
            else:
                raise AssertionError("the probe succeeded with the database cut off")
            with contextlib.suppress(grpc.aio.AioRpcError):
                await opener
        finally:
            await rig.proxy.restore()
        for record in records[1:]:  # their outcome is unknown: ask again, same request_id
            await until_answered(
                stub.EarnPoints, earn(record.request_id), meta, record, deadline_s=CALL_DEADLINE_S
            )
    assert await rig.gateway.stop() == 0, rig.gateway
    print(f"\nprobe in a partition: {probe[0].name} {probe[1]} after {probe[2]:.2f} s")
    await assert_nothing_half_written(rig, records)
    assert probe[:2] == (grpc.StatusCode.UNAVAILABLE, DATABASE_UNAVAILABLE), probe
    assert probe[2] < POSTGRES_CONNECT_TIMEOUT_S + 1.0, probe
