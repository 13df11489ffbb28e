"""Ledger throughput over real gRPC, against the bare gRPC stack measured in the same run.

    python bench/ledger_throughput.py [--database-url URL] [--seconds S] [--concurrency N]

Starts a gateway in-process on port 0 (SQLite in a temp dir by default; pass a PostgreSQL URL
to measure the production setup), then runs, for the same wall time and concurrency:

    baseline   grpc.health.v1 Check: the gRPC stack with no database
    earn       EarnPoints, each a new request_id (one transaction, idempotency row, postings)
    earn+camp  the same with a live double-points campaign (no budget: nothing shared is locked)
    earn+budg  the same with a campaign with a total budget (its row is locked by every earn)
    redeem     RedeemPoints of 1 point (guarded balance update, FIFO draw from the oldest lot)
    reward     RedeemReward of an unlimited 1-point reward (a REWARD debit, a voucher, an event)
    balance    GetBalance (a read)

and prints requests/s, latency percentiles and the ratio to the baseline. Absolute numbers
vary with the machine; compare ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import harness

from coalition.v1 import (
    common_pb2,
    members_pb2,
    members_pb2_grpc,
    points_pb2,
    points_pb2_grpc,
    rewards_pb2,
    rewards_pb2_grpc,
)
from gateway.clock import SystemClock
from gateway.domain.members import ContactDetails
from gateway.domain.partners import PartnerSettings, PartnerType
from gateway.domain.pii import PiiVault
from gateway.domain.rewards import RewardDraft, RewardKind
from gateway.domain.rules import Campaign
from gateway.entrypoints.grpc.server import create_server
from gateway.service import campaigns, rewards
from gateway.service import members as members_service
from gateway.service import partners as partner_service
from gateway.service.context import AppContext

MEMBERS = 200
"""Spread load over members, as real traffic is: no single hot balance row."""
CHANNELS = 8


async def measure(
    name: str, call: Callable[[int], Awaitable[object]], seconds: float, concurrency: int
) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    codes: dict[str, int] = {}
    counter = itertools.count()
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                await call(next(counter))
            except grpc.aio.AioRpcError as err:
                errors += 1
                code = f"{err.code().name} {err.details()[:40]}"
                codes[code] = codes.get(code, 0) + 1
            latencies.append(time.perf_counter() - started)

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - began
    latencies.sort()
    if codes:
        print(f"  {name}: errors by status {codes}", file=sys.stderr)

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1e3

    return {
        "name": name,
        "rps": len(latencies) / elapsed,
        "p50": pct(0.50),
        "p95": pct(0.95),
        "p99": pct(0.99),
        "mean": statistics.fmean(latencies) * 1e3,
        "errors": errors,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()

    tmp = tempfile.mkdtemp()
    url = args.database_url or f"sqlite:///{tmp}/bench.db"
    database = await harness.fresh_database(url)
    # rate_limit_per_s=0: the bench measures the gateway, not the per-partner limit it would
    # otherwise hit at 1,000 requests/s (COALITION_RATE_LIMIT_PER_S).
    ctx = AppContext(
        database,
        PiiVault(b"bench-secret-key-0123456789abcdef-0123"),
        SystemClock(),
        rate_limit_per_s=0,
    )

    async with database.begin() as conn:
        await partner_service.create(
            conn,
            ctx,
            "bench-hotel",
            PartnerType.HOTEL,
            PartnerSettings("Bench Hotel", base_earn_rate=Decimal(10)),
        )
        _, key = await partner_service.create_api_key(conn, ctx, "bench-hotel")
        free = RewardDraft("Bench gift", "", RewardKind.GIFT, 1, 0, None, None, timedelta(days=1))
        reward_name = (await rewards.create(conn, ctx, "bench-hotel", free)).name
        numbers = []
        for i in range(MEMBERS):
            member = await members_service.enroll(conn, ctx, ContactDetails(f"Member {i}"))
            numbers.append(member.loyalty_number)

    server, port = await create_server("127.0.0.1:0", ctx)
    await server.start()
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for _ in range(CHANNELS)]
    auth = [("authorization", f"Bearer {key}")]
    health = [health_pb2_grpc.HealthStub(c) for c in channels]
    points = [points_pb2_grpc.PointsServiceStub(c) for c in channels]
    members = [members_pb2_grpc.MemberServiceStub(c) for c in channels]
    rewards_stubs = [rewards_pb2_grpc.RewardServiceStub(c) for c in channels]
    run = f"{time.time_ns()}"

    def ref(i: int) -> common_pb2.MemberRef:
        return common_pb2.MemberRef(loyalty_number=numbers[i % MEMBERS])

    async def baseline(i: int) -> object:
        return await health[i % CHANNELS].Check(health_pb2.HealthCheckRequest())

    def earner(tag: str) -> Callable[[int], Awaitable[object]]:
        """EarnPoints with request ids of their own: a row must not replay another's."""

        async def earn(i: int) -> object:
            return await earn_as(f"{run}-{tag}{i}", i)

        return earn

    async def earn_as(request_id: str, i: int) -> object:
        return await points[i % CHANNELS].EarnPoints(
            points_pb2.EarnPointsRequest(
                request_id=request_id,
                member=ref(i),
                purchase=common_pb2.Purchase(amount_minor=10_00, currency_code="USD"),
            ),
            metadata=auth,
        )

    async def redeem(i: int) -> object:
        return await points[i % CHANNELS].RedeemPoints(
            points_pb2.RedeemPointsRequest(request_id=f"{run}-r{i}", member=ref(i), points=1),
            metadata=auth,
        )

    async def reward(i: int) -> object:
        return await rewards_stubs[i % CHANNELS].RedeemReward(
            rewards_pb2.RedeemRewardRequest(
                request_id=f"{run}-w{i}", member=ref(i), reward=reward_name
            ),
            metadata=auth,
        )

    async def balance(i: int) -> object:
        return await members[i % CHANNELS].GetBalance(
            members_pb2.GetBalanceRequest(member=ref(i)), metadata=auth
        )

    async def add_campaign(budget: int) -> None:
        now = ctx.clock.now()
        async with database.begin() as conn:
            hotel = await partner_service.get(conn, "bench-hotel")
            draft = Campaign(
                "",
                "",
                f"Bench x2 (budget {budget})",
                now,
                now + timedelta(days=1),
                multiplier=Decimal(2),
                total_budget_points=budget,
            )
            await campaigns.create(conn, ctx, hotel, draft)

    async def end_campaigns() -> None:
        async with database.begin() as conn:
            page, _ = await campaigns.list_page(conn, "bench-hotel", 100, "")
            for campaign in page:
                if campaign.end_time > ctx.clock.now():
                    await campaigns.end(conn, ctx, campaign.name)

    results = []
    for name, call, before in [
        ("baseline", baseline, None),
        ("earn", earner("e"), None),
        ("earn+camp", earner("c"), lambda: add_campaign(0)),
        ("earn+budg", earner("b"), lambda: add_campaign(10**12)),
        ("redeem", redeem, end_campaigns),
        ("reward", reward, None),
        ("balance", balance, None),
    ]:
        if before is not None:
            await before()
        results.append(await measure(name, call, args.seconds, args.concurrency))

    base = results[0]["rps"]
    print(
        f"database: {database.dialect}   concurrency: {args.concurrency}   "
        f"seconds per row: {args.seconds}"
    )
    print(
        f"{'rpc':<10}{'req/s':>10}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}"
        f"{'errors':>8}{'vs baseline':>13}"
    )
    for r in results:
        print(
            f"{r['name']:<10}{r['rps']:>10.0f}{r['p50']:>10.2f}{r['p95']:>10.2f}"
            f"{r['p99']:>10.2f}{r['errors']:>8.0f}{r['rps'] / base:>13.3f}"
        )

    for channel in channels:
        await channel.close()
    await server.stop(None)
    from gateway.service.verify import verify

    report = await verify(ctx)
    print("ledger verify:", "OK" if report.ok else report.problems[:5])
    await database.dispose()


if __name__ == "__main__":
    asyncio.run(main())
