"""Earning over gRPC: unary EarnPoints and StreamEarnPoints against the bare gRPC stack, and the
gateway's memory after a large number of earns.

    python bench/earn.py [--database-url URL] [--seconds 10] [--concurrency 32]
                         [--stream-items 100000] [--memory-earns 1000000] [--json FILE]

For SQLite (a temp file) and, with --database-url, PostgreSQL (its schema is dropped and
recreated), each in a fresh database with one hotel and 200 members:

    unary    the partner SDK (CoalitionClient.earn_points), N calls in flight, against
             `coalition serve` (durable commits), then against bench/echo_server.py answering
             the gateway's own response bytes without work: requests/s, p50/p99, ratio
    stream   StreamEarnPoints items/s, each item idempotent and committed, beside the echo
             server streaming the same responses
    memory   the gateway process's RSS when started, and after --memory-earns earns through
             the stream (PostgreSQL only, or SQLite when no URL is given)

Targets (issue 10): unary ratio >= 0.5 on PostgreSQL with p99 <= 30 ms at 32 in flight; stream
>= 20,000 items/s on PostgreSQL; RSS after 1,000,000 earns <= 200 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import harness
from harness import Figure

from coalition.v1 import common_pb2, points_pb2
from partners.sdk import CoalitionClient, RetryPolicy

MEMBERS = 200
"""Spread load over members, as real traffic is: no single hot balance row."""
CLIENTS = 4
"""Channels the load is spread over (one HTTP/2 connection each)."""
STREAM_CHUNK_ITEMS = 10_000
"""Items per StreamEarnPoints call: a partner's nightly file is sent as a few long streams."""


def earn_request(run: str, i: int, numbers: list[str]) -> points_pb2.EarnPointsRequest:
    return points_pb2.EarnPointsRequest(
        request_id=f"{run}-{i}",
        member=common_pb2.MemberRef(loyalty_number=numbers[i % len(numbers)]),
        purchase=common_pb2.Purchase(amount_minor=10_00, currency_code="USD"),
        partner_reference=f"folio-{run}-{i}",
    )


async def unary(target: str, key: str, numbers: list[str], seconds: float, n: int) -> harness.Stats:
    run = harness.run_id()
    once = RetryPolicy(attempts_max=1)  # a failure is counted, not retried
    clients = [CoalitionClient(target, key, retry=once) for _ in range(CLIENTS)]
    for client in clients:
        await client.__aenter__()
    try:

        async def call(i: int) -> object:
            return await clients[i % CLIENTS].earn_points(
                numbers[i % len(numbers)],
                amount_minor=10_00,
                currency_code="USD",
                partner_reference=f"folio-{run}-{i}",
                request_id=f"{run}-{i}",
            )

        return await harness.load("unary", call, seconds, n)
    finally:
        for client in clients:
            await client.close()


async def stream(
    target: str,
    key: str,
    numbers: list[str],
    items: int,
    streams: int,
    seconds_max: float = float("inf"),
) -> tuple[float, int]:
    """(items/s, items) over `streams` concurrent StreamEarnPoints calls, each sending chunks
    until its share is done or `seconds_max` has passed; every item must succeed."""
    run = harness.run_id()
    stop_at = time.perf_counter() + seconds_max
    per_stream = max(1, items // streams)

    async def one(s: int) -> int:
        async with CoalitionClient(target, key) as client:
            done = 0
            for start in range(0, per_stream, STREAM_CHUNK_ITEMS):
                if time.perf_counter() > stop_at:
                    break
                count = min(STREAM_CHUNK_ITEMS, per_stream - start)

                async def requests(
                    first: int = s * per_stream + start, count: int = count
                ) -> AsyncIterator[points_pb2.StreamEarnPointsRequest]:
                    for i in range(first, first + count):
                        yield points_pb2.StreamEarnPointsRequest(
                            request=earn_request(run, i, numbers)
                        )

                call = client.points.StreamEarnPoints(requests(), metadata=client.metadata)
                async for answer in call:
                    if answer.HasField("error"):
                        raise RuntimeError(f"stream item failed: {answer.error}")
                    done += 1
            return done

    began = time.perf_counter()
    done = sum(await asyncio.gather(*(one(s) for s in range(streams))))
    return done / (time.perf_counter() - began), done


async def canned_response(target: str, key: str, numbers: list[str]) -> bytes:
    async with CoalitionClient(target, key) as client:
        response = await client.points.EarnPoints(
            earn_request(harness.run_id(), 0, numbers), metadata=client.metadata
        )
    return bytes(response.SerializeToString())


async def backend(label: str, url: str, args: argparse.Namespace) -> list[Figure]:
    network = harness.Network()
    async with harness.opened(url) as ctx:
        await harness.seed_partners(ctx, 1, network)
        await harness.seed_members(ctx, MEMBERS, network, keep=MEMBERS)
    key = next(iter(network.keys.values()))
    numbers = network.numbers
    figures: list[Figure] = []
    with harness.gateway_process(url) as gateway:
        target = f"127.0.0.1:{gateway.port}"
        rss_start = gateway.rss_kib()
        canned = await canned_response(target, key, numbers)
        with harness.echo_process(canned) as echo:
            echo_target = f"127.0.0.1:{echo.port}"
            base = await unary(echo_target, key, numbers, args.seconds, args.concurrency)
            base_stream, _ = await stream(echo_target, key, numbers, args.stream_items, 2)
        got = await unary(target, key, numbers, args.seconds, args.concurrency)
        got_stream, _ = await stream(
            target, key, numbers, args.stream_items, 2, args.stream_seconds_max
        )
        pg = label == "postgresql"
        figures += [
            Figure(
                "earn",
                f"{label}: unary EarnPoints req/s (n={args.concurrency})",
                got.rps,
                "req/s",
                base.rps,
                "bare grpc.aio",
                ">= 0.5 x bare" if pg else "",
                (got.rps / base.rps >= 0.5) if pg else None,
                f"errors {got.error_codes}" if got.errors else "",
            ),
            Figure("earn", f"{label}: unary EarnPoints p50", got.p50_ms, "ms", base.p50_ms, "bare"),
            Figure(
                "earn",
                f"{label}: unary EarnPoints p99",
                got.p99_ms,
                "ms",
                base.p99_ms,
                "bare",
                "<= 30 ms" if pg else "",
                (got.p99_ms <= 30) if pg else None,
            ),
            Figure(
                "earn",
                f"{label}: StreamEarnPoints items/s",
                got_stream,
                "items/s",
                base_stream,
                "bare stream",
                ">= 20,000/s" if pg else "",
                (got_stream >= 20_000) if pg else None,
            ),
        ]
        if args.memory_earns and (pg or not args.database_url):
            _, done = await stream(
                target, key, numbers, args.memory_earns, 2, args.memory_seconds_max
            )
            rss_end = gateway.rss_kib()
            reached = done >= args.memory_earns
            figures.append(
                Figure(
                    "earn",
                    f"{label}: gateway RSS after {done:,} streamed earns",
                    rss_end / 1024,
                    "MiB",
                    rss_start / 1024,
                    "RSS at start",
                    f"<= 200 MB after {args.memory_earns:,}",
                    (rss_end * 1024 <= 200 * 10**6) if reached else None,
                    ""
                    if reached
                    else f"time budget of {args.memory_seconds_max:.0f} s ran out "
                    f"after {done:,} of {args.memory_earns:,} earns: target not measured",
                )
            )
    return figures


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="a PostgreSQL URL (its schema is recreated)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--stream-items", type=int, default=100_000)
    parser.add_argument("--memory-earns", type=int, default=1_000_000)
    parser.add_argument(
        "--memory-seconds-max", type=float, default=900, help="time budget of the memory run"
    )
    parser.add_argument(
        "--stream-seconds-max", type=float, default=120, help="time budget of the stream run"
    )
    parser.add_argument("--json", type=Path, help="merge the figures into this JSON file")
    args = parser.parse_args()
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, url in harness.database_urls(args.database_url, Path(tmp)):
            figures += await backend(label, url, args)
    harness.print_table("Earning: the gateway against the bare gRPC stack", figures)
    harness.write_json(args.json, "earn", figures)


if __name__ == "__main__":
    asyncio.run(main())
