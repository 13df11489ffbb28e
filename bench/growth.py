"""Growth: does EarnPoints slow down as the network grows? Nothing on the request path may scan
what grows (members, partners, history).

    python bench/growth.py [--database-url URL] [--seconds 10] [--concurrency 32]
                           [--members 10000,1000000] [--partners 10,200] [--json FILE]

For each backend, two fresh databases: a small network (10,000 members, 10 partners) and a large
one (1,000,000 members, 200 partners), members written straight into their tables. The same
unary EarnPoints load (N in flight, members spread over the whole range, partners taking turns)
runs against `coalition serve` on each; the large network's throughput over the small one's is
the figure. Target (issue 10): ratio >= 0.8.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

import grpc
import harness
from harness import Figure

from coalition.v1 import common_pb2, points_pb2, points_pb2_grpc

CHANNELS = 4


async def throughput(
    url: str, members: int, partners: int, seconds: float, concurrency: int
) -> harness.Stats:
    network = harness.Network()
    async with harness.opened(url) as ctx:
        await harness.seed_partners(ctx, partners, network)
        await harness.seed_members(ctx, members, network)
    keys = [(("authorization", f"Bearer {k}"),) for k in network.keys.values()]
    numbers = network.numbers
    run = harness.run_id()
    with harness.gateway_process(url) as gateway:
        channels = [grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") for _ in range(CHANNELS)]
        stubs = [points_pb2_grpc.PointsServiceStub(c) for c in channels]
        try:

            async def earn(i: int) -> object:
                # A stride coprime with the kept numbers walks the whole member range.
                number = numbers[(i * 7919) % len(numbers)]
                return await stubs[i % CHANNELS].EarnPoints(
                    points_pb2.EarnPointsRequest(
                        request_id=f"{run}-{i}",
                        member=common_pb2.MemberRef(loyalty_number=number),
                        purchase=common_pb2.Purchase(amount_minor=10_00, currency_code="USD"),
                    ),
                    metadata=keys[i % len(keys)],
                    timeout=30,
                )

            return await harness.load("earn", earn, seconds, concurrency)
        finally:
            for channel in channels:
                await channel.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="a PostgreSQL URL (its schema is recreated)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--members", default="10000,1000000")
    parser.add_argument("--partners", default="10,200")
    parser.add_argument("--sqlite", action="store_true", help="with a URL, measure SQLite too")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    small_m, large_m = (int(x) for x in args.members.split(","))
    small_p, large_p = (int(x) for x in args.partners.split(","))
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory() as tmp:
        urls = harness.database_urls(args.database_url, Path(tmp))
        if args.database_url and not args.sqlite:
            urls = urls[1:]
        for label, url in urls:
            small = await throughput(url, small_m, small_p, args.seconds, args.concurrency)
            large = await throughput(url, large_m, large_p, args.seconds, args.concurrency)
            figures += [
                Figure(
                    "growth",
                    f"{label}: earn req/s, {large_m:,} members / {large_p} partners",
                    large.rps,
                    "req/s",
                    small.rps,
                    f"{small_m:,} members / {small_p} partners",
                    ">= 0.8 x small",
                    large.rps / small.rps >= 0.8,
                    f"errors {large.error_codes}" if large.errors else "",
                ),
                Figure(
                    "growth",
                    f"{label}: earn p99, large network",
                    large.p99_ms,
                    "ms",
                    small.p99_ms,
                    "small network",
                ),
            ]
    harness.print_table("Growth: the same load on a small and a large network", figures)
    harness.write_json(args.json, "growth", figures)


if __name__ == "__main__":
    asyncio.run(main())
