"""Operator commands for expiry, rewards, the outbox and webhooks.

coalition ledger expire                       reminders, points expiry, voucher refunds
coalition members dormant [--months N] [--csv FILE]
coalition outbox list [--state DEAD] [--limit N]
coalition outbox retry (--all | ID...)
coalition partners webhook-secret PARTNER [--rotate]
coalition partners parked [--airline ID] [--overdue] [--csv FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import select, update

from gateway.adapters import repository as repo
from gateway.domain.delivery import DeliveryState
from gateway.domain.tiers import add_months
from gateway.service import delivery, expiry, links, rewards
from gateway.service.context import AppContext

Command = Callable[[AppContext, argparse.Namespace], Awaitable[int]]
DORMANT_MONTHS_DEFAULT = 12
DORMANT_COLUMNS = [
    "member",
    "loyalty_number",
    "display_name",
    "email",
    "available_points",
    "last_activity_time",
    "last_redeem_time",
]


class UsageError(Exception):
    pass


async def expire(ctx: AppContext, args: argparse.Namespace) -> int:
    report = await expiry.run(ctx)
    refunded = await rewards.refund_expired(ctx)
    print(
        f"policy {ctx.expiry.kind.value}"
        + (f" ({ctx.expiry.months} months)" if ctx.expiry.months else "")
        + f": sent {report.reminders} reminders, expired {report.expired_points} "
        f"points of {report.expired_members} members ({report.donated_points} of them went to "
        f"charities, as pledged); refunded {refunded} expired vouchers"
    )
    return 0


def _when(value: Any) -> str:
    return value.isoformat() if value is not None else ""


async def _dormant_rows(ctx: AppContext, since: datetime) -> AsyncIterator[list[object]]:
    after = ""
    while True:
        async with ctx.database.connect() as conn:
            page = await expiry.dormant_page(conn, since, after)
        for m in page:
            yield [
                f"members/{m.member_id}",
                m.loyalty_number,
                m.display_name,
                m.email,
                m.available,
                _when(m.last_activity_time),
                _when(m.last_redeem_time),
            ]
        if len(page) < expiry.DORMANT_PAGE_ROWS_MAX:
            return
        after = page[-1].member_id


async def dormant(ctx: AppContext, args: argparse.Namespace) -> int:
    if not 1 <= args.months <= 120:
        raise UsageError("--months must be between 1 and 120")
    since = add_months(ctx.clock.now(), -args.months)
    rows = 0
    with contextlib.ExitStack() as files:
        out: TextIO = sys.stdout
        if args.csv not in ("", "-"):
            # A CLI process: nothing else waits on this event loop while the file opens.
            out = files.enter_context(Path(args.csv).open("w", newline=""))  # noqa: ASYNC230
        writer = csv.writer(out)
        writer.writerow(DORMANT_COLUMNS)
        async for row in _dormant_rows(ctx, since):
            writer.writerow(row)
            rows += 1
    print(f"{rows} members hold points and redeemed nothing since {since.date()}", file=sys.stderr)
    return 0


PARKED_COLUMNS = [
    "parked_earn",
    "airline",
    "agency",
    "program_number",
    "points",
    "partner_reference",
    "occur_time",
    "create_time",
    "claim_deadline",
    "overdue",
]
PARKED_PAGE_ROWS = 500


async def parked(ctx: AppContext, args: argparse.Namespace) -> int:
    """Agency earns waiting for their airline number to be linked; --overdue: past the window,
    so linking no longer credits them (the airline and the operator decide what happens)."""
    now = ctx.clock.now()
    rows = points = 0
    with contextlib.ExitStack() as files:
        out: TextIO = sys.stdout
        if args.csv not in ("", "-"):
            out = files.enter_context(Path(args.csv).open("w", newline=""))  # noqa: ASYNC230
        writer = csv.writer(out)
        writer.writerow(PARKED_COLUMNS)
        after = ""
        while True:
            async with ctx.database.connect() as conn:
                page = await links.parked_page(
                    conn,
                    ctx,
                    airline_id=args.airline,
                    overdue_only=args.overdue,
                    size=PARKED_PAGE_ROWS,
                    after_id=after,
                )
            for earn in page:
                writer.writerow(
                    [
                        earn.name,
                        f"partners/{earn.airline_id}",
                        f"partners/{earn.agency_id}",
                        earn.number,
                        earn.points,
                        earn.partner_reference,
                        earn.occur_time.isoformat() if earn.occur_time else "",
                        earn.create_time.isoformat(),
                        earn.claim_deadline.isoformat(),
                        "yes" if earn.claim_deadline < now else "no",
                    ]
                )
                points += earn.points
            rows += len(page)
            if len(page) < PARKED_PAGE_ROWS:
                break
            after = page[-1].id
    kind = "overdue parked earns" if args.overdue else "parked earns"
    print(f"{rows} {kind}, {points:,} points", file=sys.stderr)
    return 0


async def list_outbox(ctx: AppContext, args: argparse.Namespace) -> int:
    state = DeliveryState(args.state) if args.state else None
    async with ctx.database.connect() as conn:
        views = await delivery.list_deliveries(conn, state, args.limit)
    for v in views:
        print(
            f"{v.id:>8}  {v.state.value:<9} {v.event_type:<16} {v.destination:<40} "
            f"attempts {v.attempts}  next {v.next_attempt_time:%Y-%m-%d %H:%M:%S}  "
            f"{v.last_error}"
        )
    if not views:
        print("no deliveries" + (f" in state {state.value}" if state else ""))
    return 0


async def retry_outbox(ctx: AppContext, args: argparse.Namespace) -> int:
    if bool(args.all) == bool(args.ids):
        raise UsageError("give delivery ids, or --all for every dead delivery")
    async with ctx.database.begin() as conn:
        count = await delivery.retry(conn, ctx, None if args.all else args.ids)
    print(f"{count} dead deliveries will be attempted again")
    return 0


async def webhook_secret(ctx: AppContext, args: argparse.Namespace) -> int:
    partners = repo.PARTNERS
    async with ctx.database.begin() as conn:
        if args.rotate:
            await conn.execute(
                update(partners)
                .where(partners.c.id == args.partner)
                .values(webhook_secret_version=partners.c.webhook_secret_version + 1)
            )
        version = await conn.scalar(
            select(partners.c.webhook_secret_version).where(partners.c.id == args.partner)
        )
    if version is None:
        raise UsageError(f"no partner {args.partner}")
    print(ctx.vault.webhook_secret(args.partner, version))
    if args.rotate:
        print("rotated: events are signed with this secret from now on", file=sys.stderr)
    return 0


def add_commands(
    sub: Any,
    groups: dict[str, Any],
    with_db: Callable[[argparse.ArgumentParser], argparse.ArgumentParser],
    runner: Callable[[Command], Callable[[argparse.Namespace], Awaitable[int]]],
) -> None:
    """groups: the existing "ledger" and "partners" subparser groups."""
    with_db(
        groups["ledger"].add_parser(
            "expire", help="send expiry reminders, expire due points, refund expired vouchers"
        )
    ).set_defaults(run=runner(expire))

    members = sub.add_parser("members", help="member reports").add_subparsers(
        dest="members", required=True
    )
    report = with_db(
        members.add_parser("dormant", help="CSV of members holding points who stopped redeeming")
    )
    report.add_argument("--months", type=int, default=DORMANT_MONTHS_DEFAULT)
    report.add_argument("--csv", default="-", help="file to write (default: standard output)")
    report.set_defaults(run=runner(dormant))

    outbox = sub.add_parser("outbox", help="event deliveries").add_subparsers(
        dest="outbox", required=True
    )
    listing = with_db(outbox.add_parser("list", help="deliveries, newest first"))
    listing.add_argument("--state", choices=[s.value for s in DeliveryState])
    listing.add_argument("--limit", type=int, default=50)
    listing.set_defaults(run=runner(list_outbox))
    retry = with_db(outbox.add_parser("retry", help="attempt dead deliveries again"))
    retry.add_argument("ids", type=int, nargs="*")
    retry.add_argument("--all", action="store_true", help="every dead delivery")
    retry.set_defaults(run=runner(retry_outbox))

    secret = with_db(
        groups["partners"].add_parser("webhook-secret", help="a partner's webhook signing secret")
    )
    secret.add_argument("partner", help="partner id")
    secret.add_argument("--rotate", action="store_true", help="replace it with a new one")
    secret.set_defaults(run=runner(webhook_secret))

    report = with_db(
        groups["partners"].add_parser(
            "parked", help="CSV of agency earns waiting for their airline number to be linked"
        )
    )
    report.add_argument("--airline", help="one airline's (partner id)")
    report.add_argument("--overdue", action="store_true", help="only those past the claim window")
    report.add_argument("--csv", default="-", help="file to write (default: standard output)")
    report.set_defaults(run=runner(parked))
