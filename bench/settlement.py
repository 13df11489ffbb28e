"""Settlement: closing a month, its time and peak memory, as the month grows.

    python bench/settlement.py [--database-url URL] [--transactions 20000] [--growth 4]
                               [--partners 6] [--json FILE]

Writes a synthetic month straight into the ledger tables (earns and redemptions over the
partners and 2,000 members, postings included), then closes it with the real close, twice over:
with N transactions and with growth x N, each in a fresh database. For each size it prints:

    baseline   one aggregate query over the month's postings (what the database must read anyway)
    close      settlement.service.periods.close (lines, prices, statements, netting, totals),
               run in a child process
    peak RSS   that child's peak resident memory (the interpreter and libraries included)

Targets (issue 10): a month of 1,000,000 transactions across 50 partners closes in <= 15 s on
PostgreSQL with peak RSS <= 300 MB; memory does not grow with the month (ratio near 1), since
lines are settled and summed inside the database.
SQLite in a temp dir by default; a PostgreSQL URL has its schema dropped and recreated.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import harness  # first: it puts the repository on sys.path (bench/ is, as the script's dir)
from harness import ROOT, Figure
from sqlalchemy import func, insert, select

from gateway.adapters.db import open_database
from gateway.adapters.models import (
    LedgerTransactionRow,
    MemberRow,
    PartnerRow,
    PostingRow,
    table_of,
)
from gateway.clock import FixedClock
from gateway.domain.pii import PiiVault
from gateway.service.context import AppContext
from settlement.domain.periods import Period
from settlement.domain.pricing import PriceList
from settlement.service import periods, prices

SECRET = b"bench-settlement-secret-key-0123456789abcdef"
MONTH = Period(2026, 3)
PARTNERS = ["hotel-a", "hotel-b", "taxi-a", "air-a", "shop-a", "shop-b"]
MEMBERS = 2_000
BATCH = 5_000


async def _seed(ctx: AppContext, count: int) -> None:
    start = MONTH.start
    async with ctx.database.begin() as conn:
        for pid in PARTNERS:
            await conn.execute(
                insert(table_of(PartnerRow)).values(
                    id=pid,
                    type="HOTEL",
                    display_name=pid,
                    base_earn_rate="1",
                    earn_currency_code="USD",
                    settlement_currency_code="USD",
                    create_time=start,
                    update_time=start,
                )
            )
            draft = PriceList(
                "",
                pid,
                datetime(2026, 1, 1, tzinfo=UTC),
                "",
                Decimal("0.0125"),
                Decimal("0.0091"),
                fee_per_transaction_minor=1,
                fee_percent=Decimal("0.5"),
            )
            await prices.create_price_list(conn, ctx, draft)
        await conn.execute(
            insert(table_of(MemberRow)),
            [
                {
                    "id": f"m{i:05d}",
                    "loyalty_number": f"{i:012d}",
                    "display_name": f"M {i}",
                    "create_time": start,
                    "update_time": start,
                }
                for i in range(MEMBERS)
            ],
        )
    step = (MONTH.end - start) / (count + 1)
    for first in range(0, count, BATCH):
        txns, postings = [], []
        for n in range(first, min(first + BATCH, count)):
            member, partner = f"m{n % MEMBERS:05d}", PARTNERS[n % len(PARTNERS)]
            earn = n % 3 != 2
            points = 100 + n % 900
            txns.append(
                {
                    "seq": n + 1,
                    "id": f"t{n:031d}",
                    "member_id": member,
                    "partner_id": partner,
                    "type": "EARN" if earn else "REDEEM",
                    "state": "POSTED",
                    "points": points if earn else -points // 3,
                    "partner_reference": f"R{n}",
                    "available_after": 0,
                    "pending_after": 0,
                    "held_after": 0,
                    "create_time": start + step * (n + 1),
                    "breakdown": "[]",
                }
            )
            if earn:
                pair = (
                    (f"partner:{partner}:issued", -points),
                    (f"member:{member}:available", points),
                )
            else:
                spent = points // 3
                pair = (
                    (f"member:{member}:available", -spent),
                    (f"partner:{partner}:redeemed", spent),
                )
            postings += [
                {"transaction_seq": n + 1, "account": account, "asset": "PTS", "amount": amount}
                for account, amount in pair
            ]
        async with ctx.database.begin() as conn:
            await conn.execute(insert(table_of(LedgerTransactionRow)), txns)
            await conn.execute(insert(table_of(PostingRow)), postings)


async def _baseline(ctx: AppContext) -> float:
    postings, txns = table_of(PostingRow), table_of(LedgerTransactionRow)
    began = time.perf_counter()
    async with ctx.database.connect() as conn:
        await conn.execute(
            select(postings.c.account, func.sum(postings.c.amount), func.count())
            .join(txns, txns.c.seq == postings.c.transaction_seq)
            .where(txns.c.create_time >= MONTH.start, txns.c.create_time < MONTH.end)
            .group_by(postings.c.account)
        )
    return time.perf_counter() - began


CLOSE_IN_CHILD = """
import asyncio, importlib.util, json, sys
sys.path.insert(0, sys.argv[2])
spec = importlib.util.spec_from_file_location("bench_settlement", sys.argv[3])
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)
bench.PARTNERS[:] = sys.argv[4].split(",")
print(json.dumps(asyncio.run(bench.close(sys.argv[1]))))
"""


async def close(url: str) -> dict[str, float]:
    """The real close of MONTH, timed; runs in a child process so its peak RSS is its own."""
    db = open_database(url)
    clock = FixedClock()
    clock.set(MONTH.end + timedelta(days=1))
    ctx = AppContext(database=db, vault=PiiVault(SECRET), clock=clock)
    try:
        began = time.perf_counter()
        async with db.begin() as conn:
            closed = await periods.close(conn, ctx, MONTH)
        elapsed = time.perf_counter() - began
        async with db.connect() as conn:
            lines = sum(s.line_count for s in await periods.all_statements(conn, MONTH))
        return {
            "seconds": elapsed,
            "statements": closed.statement_count,
            "lines": lines,
            "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        }
    finally:
        await db.dispose()


async def run(url: str, count: int) -> dict[str, float]:
    db = await harness.fresh_database(url)
    clock = FixedClock()
    clock.set(MONTH.start - timedelta(days=1))
    ctx = AppContext(database=db, vault=PiiVault(SECRET), clock=clock)
    try:
        await _seed(ctx, count)
        baseline = await _baseline(ctx)
    finally:
        await db.dispose()
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            CLOSE_IN_CHILD,
            url,
            str(Path(__file__).parent),
            __file__,
            ",".join(PARTNERS),
        ],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    result: dict[str, float] = json.loads(child.stdout.strip().splitlines()[-1])
    assert result["statements"] == len(PARTNERS), result
    return {"transactions": count, "baseline_s": baseline, **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url")
    parser.add_argument("--transactions", type=int, default=20_000)
    parser.add_argument("--growth", type=int, default=4)
    parser.add_argument("--partners", type=int, default=len(PARTNERS))
    parser.add_argument("--json", type=Path, help="merge the figures into this JSON file")
    args = parser.parse_args()
    PARTNERS[:] = [f"partner-{i:03d}" for i in range(args.partners)]
    sizes = (args.transactions, args.transactions * args.growth)
    results = []
    for size in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            url = args.database_url or f"sqlite:///{tmp}/bench.db"
            results.append(asyncio.run(run(url, size)))
    label = "postgresql" if args.database_url else "sqlite"
    figures: list[Figure] = []
    for r in results:
        big = r["transactions"] >= 1_000_000 and label == "postgresql"
        n = f"{label}: close {r['transactions']:,} txns, {args.partners} partners"
        figures += [
            Figure(
                "settlement",
                f"{n}: seconds",
                r["seconds"],
                "s",
                r["baseline_s"],
                "one aggregate query",
                "<= 15 s" if big else "",
                r["seconds"] <= 15 if big else None,
                f"{r['lines']:,} lines",
            ),
            Figure(
                "settlement",
                f"{n}: peak RSS",
                r["peak_rss_kib"] / 1024,
                "MiB",
                target="<= 300 MB" if big else "",
                met=r["peak_rss_kib"] * 1024 <= 300 * 10**6 if big else None,
            ),
        ]
    small, large = results
    figures.append(
        Figure(
            "settlement",
            f"{label}: close time growth for x{args.growth} transactions",
            large["seconds"] / small["seconds"],
            "x",
            notes="linear is x" + str(args.growth),
        )
    )
    figures.append(
        Figure(
            "settlement",
            f"{label}: peak RSS growth for x{args.growth} transactions",
            large["peak_rss_kib"] / small["peak_rss_kib"],
            "x",
            target="near 1 (flat)",
        )
    )
    harness.print_table("Settlement close", figures)
    harness.write_json(args.json, "settlement", figures)


if __name__ == "__main__":
    main()
