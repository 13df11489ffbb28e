"""Bulk ingestion: `coalition partners submit` of a large CSV, its speed and its memory.

    python bench/bulk_submit.py [--database-url URL] [--rows 100000] [--small 10000]

Starts a gateway in-process on port 0 (SQLite in a temp dir by default; pass a PostgreSQL URL
for the production setup; its schema is dropped and recreated), writes CSVs of hotel folios,
and measures in the same run:

    baseline   the same earns as unary EarnPoints, one at a time (first 1,000 rows)
    submit     the small file, then the big file, through the CLI (a separate process)
    resubmit   the big file again: every row replays; nothing new may be created

It prints rows/s and the ratio to the baseline, the ledger's transaction count before and after
the resubmit (must be equal), and memory: the CLI's peak RSS for the small and the big file and
the gateway's RSS growth over each. Flat memory means big/small close to 1 while the row count
grows tenfold. Absolute numbers vary with the machine; compare ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import grpc
from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import harness

from coalition.v1 import common_pb2, points_pb2, points_pb2_grpc
from gateway.adapters.models import LedgerTransactionRow, table_of
from gateway.clock import SystemClock
from gateway.domain.members import ContactDetails
from gateway.domain.partners import PartnerSettings, PartnerType
from gateway.domain.pii import PiiVault
from gateway.entrypoints.grpc.server import create_server
from gateway.service import members as members_service
from gateway.service import partners as partner_service
from gateway.service.context import AppContext

ROOT = Path(__file__).resolve().parents[1]
MEMBERS = 500
BASELINE_ROWS = 1000
TXNS = table_of(LedgerTransactionRow)


def write_csv(path: Path, rows: int, numbers: list[str], prefix: str) -> None:
    with path.open("w", newline="") as sink:
        out = csv.writer(sink)
        out.writerow(["partner_reference", "loyalty_number", "amount", "currency", "category"])
        for i in range(rows):
            out.writerow(
                [f"{prefix}-{i:07d}", numbers[i % len(numbers)], f"{50 + i % 400}.25", "USD", ""]
            )


async def run_cli(path: Path, target: str, key: str) -> tuple[float, int, str]:
    """(seconds, the CLI's peak RSS in KiB, its summary line)."""
    script = (
        "import resource, sys\n"
        "from gateway.entrypoints.cli import main\n"
        "code = main(sys.argv[1:])\n"
        "print('maxrss', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
        "sys.exit(code)\n"
    )
    began = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        "partners",
        "submit",
        str(path),
        "--target",
        target,
        "--api-key",
        key,
        "--quiet",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    out, err = await process.communicate()
    elapsed = time.perf_counter() - began
    lines = out.decode().splitlines()
    if process.returncode not in (0, 1) or not lines:
        raise SystemExit(f"submit failed ({process.returncode}): {err.decode()[-2000:]}")
    maxrss = int(next(line for line in lines if line.startswith("maxrss")).split()[1])
    return elapsed, maxrss, lines[0]


async def count_txns(ctx: AppContext) -> int:
    async with ctx.database.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(TXNS)) or 0)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=10_000)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp())
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
        numbers = [
            (await members_service.enroll(conn, ctx, ContactDetails(f"Member {i}"))).loyalty_number
            for i in range(MEMBERS)
        ]
    server, port = await create_server("127.0.0.1:0", ctx)
    await server.start()
    target = f"127.0.0.1:{port}"

    # Baseline: unary EarnPoints, one at a time, for the first rows of a file.
    async with grpc.aio.insecure_channel(target) as channel:
        stub = points_pb2_grpc.PointsServiceStub(channel)
        began = time.perf_counter()
        for i in range(BASELINE_ROWS):
            await stub.EarnPoints(
                points_pb2.EarnPointsRequest(
                    request_id=f"unary-{i}",
                    member=common_pb2.MemberRef(loyalty_number=numbers[i % MEMBERS]),
                    purchase=common_pb2.Purchase(amount_minor=5025, currency_code="USD"),
                ),
                metadata=(("authorization", f"Bearer {key}"),),
            )
        baseline = BASELINE_ROWS / (time.perf_counter() - began)
    print(f"database {database.dialect}; baseline unary EarnPoints: {baseline:,.0f} rows/s")

    small, big = tmp / "small.csv", tmp / "big.csv"
    write_csv(small, args.small, numbers, "S")
    write_csv(big, args.rows, numbers, "B")
    results = []
    for label, path, rows in (("submit small", small, args.small), ("submit big", big, args.rows)):
        before = harness.rss_kib()
        seconds, client_rss, summary = await run_cli(path, target, key)
        grew = harness.rss_kib() - before
        results.append((label, rows, seconds, client_rss, grew, summary))
    written = await count_txns(ctx)
    seconds, client_rss, summary = await run_cli(big, target, key)
    results.append(("resubmit big", args.rows, seconds, client_rss, 0, summary))
    after = await count_txns(ctx)

    print(f"{'run':<14}{'rows':>9}{'rows/s':>9}{'x base':>8}{'CLI RSS':>10}{'gw +RSS':>10}")
    for label, rows, seconds, client, grew, summary in results:
        rate = rows / seconds
        print(
            f"{label:<14}{rows:>9,}{rate:>9,.0f}{rate / baseline:>8.2f}"
            f"{client / 1024:>8.1f}MB{grew / 1024:>8.1f}MB   {summary}"
        )
    print(f"transactions before the resubmit: {written:,}; after: {after:,} (must be equal)")
    print(
        f"memory, big/small: CLI {results[1][3] / results[0][3]:.2f}x for "
        f"{args.rows / args.small:.0f}x the rows"
    )
    await server.stop(None)
    await database.dispose()


if __name__ == "__main__":
    asyncio.run(main())
