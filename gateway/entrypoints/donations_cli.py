"""Finance and operator commands for donations.

coalition donations report --period YYYY-MM [--html FILE] [--csv FILE] [--json FILE]
coalition donations run-pledges               pay the monthly pledges due now
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from gateway.adapters import documents
from gateway.domain import donations as dd
from gateway.domain.rules import money
from gateway.service import donations
from gateway.service.context import AppContext

Command = Callable[[AppContext, argparse.Namespace], Awaitable[int]]


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _summary(report: dd.DonationsReport) -> str:
    lines = [f"donations {report.period} (UTC), owed to each charity:"]
    for c in report.charities:
        owed = money(c.owed_minor, c.currency, c.currency_exponent)
        lines.append(
            f"  {c.charity_id}: {_count(c.donations, 'donation')} by {_count(c.donors, 'donor')}, "
            f"{c.points:,} points + {c.matched_points:,} matched = {owed}"
        )
    if not report.charities:
        lines.append("  no donations")
    return "\n".join(lines)


def _write(path: str, text: str) -> None:
    # A CLI process: nothing else waits on this event loop while the file is written.
    Path(path).write_text(text, encoding="utf-8")


async def report(ctx: AppContext, args: argparse.Namespace) -> int:
    async with ctx.database.connect() as conn:  # a bad --period is INVALID_PERIOD, printed
        result = await donations.report(conn, ctx, args.period)
    if args.html:
        _write(args.html, documents.donations_report_html(result))
    if args.csv:
        _write(args.csv, documents.donations_report_csv(result))
    if args.json:
        _write(args.json, json.dumps(asdict(result), default=str, indent=2))
    print(_summary(result))
    return 0


async def run_pledges(ctx: AppContext, args: argparse.Namespace) -> int:
    result = await donations.run_pledges(ctx)
    print(
        f"monthly pledges: {result.donations} donations of {result.points:,} points in all, "
        f"{result.skipped} skipped, {result.failed} failed (see the log; retried next run)"
    )
    return 1 if result.failed else 0


def add_commands(
    sub: Any,
    with_db: Callable[[argparse.ArgumentParser], argparse.ArgumentParser],
    runner: Callable[[Command], Callable[[argparse.Namespace], Awaitable[int]]],
) -> None:
    group = sub.add_parser("donations", help="charity donations").add_subparsers(
        dest="donations", required=True
    )
    totals = with_db(
        group.add_parser("report", help="a month's donations per charity: what each is owed")
    )
    totals.add_argument("--period", required=True, help="the UTC month, YYYY-MM")
    totals.add_argument("--html", help="write the report with a chart per charity here")
    totals.add_argument("--csv", help="write the totals per charity as CSV here")
    totals.add_argument("--json", help="write the totals, sponsors and days as JSON here")
    totals.set_defaults(run=runner(report))
    pledges = with_db(group.add_parser("run-pledges", help="pay the monthly pledges due now"))
    pledges.set_defaults(run=runner(run_pledges))
