"""`coalition campaigns|rates|tiers`: the program manager's and operator's commands.

Campaign creation goes through the same idempotency keys as the operator's gRPC calls: the
request id defaults to a digest of the arguments, so running the same command twice creates
one campaign.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from google.protobuf import timestamp_pb2
from sqlalchemy.ext.asyncio import AsyncConnection

from coalition.v1 import partners_pb2 as pb
from gateway.domain import rules as dr
from gateway.domain.errors import CoalitionError
from gateway.domain.partners import parse_partner_id
from gateway.entrypoints.grpc.convert import campaign_from_proto, campaign_to_proto, request_hash
from gateway.service import campaigns, rates, tiers
from gateway.service import partners as partner_service
from gateway.service.context import AppContext
from gateway.service.idempotency import IdempotencyKey, run_once

RATES_FILE_ROWS_MAX = 10_000
"""Rows one `rates load` accepts; a bigger file is a mistake, not a rate sheet."""
DAY_NAMES = {"mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6, "sun": 7}
OPERATOR_SCOPE = "operator"

Context = Callable[[str], Awaitable[AppContext]]


class UsageError(Exception):
    """Bad command-line input; printed without a traceback."""


def _time(raw: str, flag: str) -> datetime:
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise UsageError(f"{flag}: an ISO 8601 time such as 2026-12-24T00:00:00Z") from None
    if when.tzinfo is None:
        raise UsageError(f"{flag}: say the zone (Z or +01:00); times are stored in UTC")
    return when.astimezone(UTC)


def _days(raw: str) -> list[int]:
    days = []
    for part in filter(None, (p.strip().lower()[:3] for p in raw.split(","))):
        if part not in DAY_NAMES:
            raise UsageError(f"--days: day names like sat,sun (got {part!r})")
        days.append(DAY_NAMES[part])
    return days


def _hours(raw: str) -> tuple[int, int]:
    try:
        start, end = (int(h) for h in raw.split("-"))
    except ValueError:
        raise UsageError("--hours: START-END in local hours, e.g. 18-22 or 22-2") from None
    return start, end


def _stamp(when: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(when)
    return stamp


def campaign_request(args: argparse.Namespace) -> pb.CreateCampaignRequest:
    start, end = _hours(args.hours) if args.hours else (0, 0)
    campaign = pb.Campaign(
        display_name=args.name,
        end_time=_stamp(_time(args.end, "--end")),
        days_of_week=[pb.DayOfWeek.ValueType(d) for d in _days(args.days or "")],
        start_hour=start,
        end_hour=end,
        categories=args.category or [],
        multiplier=args.multiplier or "",
        bonus_points=args.bonus,
        action=args.action or "",
        member_budget_points=args.member_budget,
        total_budget_points=args.total_budget,
    )
    if args.start:
        campaign.start_time.CopyFrom(_stamp(_time(args.start, "--start")))
    request = pb.CreateCampaignRequest(parent=f"partners/{args.partner}", campaign=campaign)
    request.request_id = args.request_id or "cli-" + request_hash(request)[:40]
    return request


def _show(campaign: pb.Campaign) -> str:
    days = (
        ",".join(pb.DayOfWeek.Name(d)[12:15].lower() for d in campaign.days_of_week) or "every day"
    )
    hours = (
        f"{campaign.start_hour:02d}-{campaign.end_hour:02d}h"
        if campaign.start_hour or campaign.end_hour
        else "all day"
    )
    reward = " ".join(
        part
        for part in (
            f"x{campaign.multiplier}" if campaign.multiplier else "",
            f"+{campaign.bonus_points:,}" if campaign.bonus_points else "",
        )
        if part
    )
    budget = (
        f"{campaign.spent_points:,}/{campaign.total_budget_points:,}"
        if campaign.total_budget_points
        else f"{campaign.spent_points:,}/no cap"
    )
    if campaign.member_budget_points:
        budget += f", at most {campaign.member_budget_points:,} per member"
    what = (
        f"action {campaign.action}"
        if campaign.action
        else (",".join(campaign.categories) or "all purchases")
    )
    return (
        f"{campaign.name}  {campaign.display_name!r}  {reward} on {what}, {days} {hours}, "
        f"{campaign.start_time.ToDatetime(UTC):%Y-%m-%d %H:%M} -> "
        f"{campaign.end_time.ToDatetime(UTC):%Y-%m-%d %H:%M} UTC, paid {budget}"
    )


def _rate(rate: rates.ExchangeRate) -> str:
    return f"1 {rate.base_currency} = {rate.rate} {rate.quote_currency}"


# -- commands --------------------------------------------------------------------------------


async def create_campaign(ctx: AppContext, args: argparse.Namespace) -> int:
    request = campaign_request(args)
    parent = parse_partner_id(args.partner, "partner")
    draft = campaign_from_proto(request.campaign, ctx.clock.now())

    async def work(conn: AsyncConnection) -> bytes:
        partner = await partner_service.get(conn, parent)
        campaign = await campaigns.create(conn, ctx, partner, draft)
        return pb.CreateCampaignResponse(
            campaign=campaign_to_proto(campaign, 0)
        ).SerializeToString()

    key = IdempotencyKey(
        OPERATOR_SCOPE, request.request_id, "CreateCampaign", request_hash(request)
    )
    response = pb.CreateCampaignResponse.FromString(
        await run_once(ctx.database, ctx.clock, key, work)
    )
    print(_show(response.campaign))
    return 0


async def list_campaigns(ctx: AppContext, args: argparse.Namespace) -> int:
    partner_id = parse_partner_id(args.partner, "partner")
    token, shown = "", 0
    async with ctx.database.connect() as conn:
        while True:
            page, token = await campaigns.list_page(conn, partner_id, 100, token)
            spent = await campaigns.spent(conn, [c.id for c in page])
            for campaign in page:
                print(_show(campaign_to_proto(campaign, spent.get(campaign.id, 0))))
                shown += 1
            if not token:
                break
    if not shown:
        print(f"partners/{partner_id} has no campaigns")
    return 0


async def end_campaign(ctx: AppContext, args: argparse.Namespace) -> int:
    async with ctx.database.begin() as conn:
        campaign = await campaigns.end(conn, ctx, args.name)
        spent = await campaigns.spent(conn, [campaign.id])
    print(_show(campaign_to_proto(campaign, spent.get(campaign.id, 0))))
    return 0


async def set_rate(ctx: AppContext, args: argparse.Namespace) -> int:
    rate = dr.parse_exchange_rate(args.rate)
    effective = _time(args.effective, "--effective") if args.effective else None
    async with ctx.database.begin() as conn:
        saved = await rates.set_rate(
            conn, ctx, args.base.upper(), args.quote.upper(), rate, effective
        )
    print(f"{_rate(saved)}, from {saved.effective_time:%Y-%m-%d %H:%M} UTC")
    return 0


async def load_rates(ctx: AppContext, args: argparse.Namespace) -> int:
    """A CSV with a header: base_currency,quote_currency,rate[,effective_time]; all or nothing."""
    path = Path(args.file)
    try:
        text = await asyncio.to_thread(path.read_text)
        rows = list(csv.DictReader(text.splitlines()))
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: {exc}") from None
    if len(rows) > RATES_FILE_ROWS_MAX:
        raise UsageError(f"{path}: at most {RATES_FILE_ROWS_MAX:,} rows")
    async with ctx.database.begin() as conn:
        for line, row in enumerate(rows, start=2):
            try:
                rate = dr.parse_exchange_rate(row.get("rate") or "", "rate")
                effective = row.get("effective_time") or ""
                await rates.set_rate(
                    conn,
                    ctx,
                    (row.get("base_currency") or "").upper(),
                    (row.get("quote_currency") or "").upper(),
                    rate,
                    _time(effective, "effective_time") if effective else None,
                )
            except (CoalitionError, UsageError) as exc:
                raise UsageError(f"{path}:{line}: {exc}; nothing was loaded") from None
    print(f"loaded {len(rows)} exchange rates from {path}")
    return 0


async def list_rates(ctx: AppContext, args: argparse.Namespace) -> int:
    async with ctx.database.connect() as conn:
        page, _ = await rates.list_page(conn, args.limit, "")
    for r in page:
        print(f"{r.effective_time:%Y-%m-%d %H:%M} UTC  {_rate(r)}")
    if not page:
        print("no exchange rates loaded")
    return 0


async def show_tiers(ctx: AppContext, args: argparse.Namespace) -> int:
    for tier in ctx.ladder.tiers:
        print(
            f"{tier.code:<12} {tier.display_name:<12} from {tier.threshold_points:>10,} "
            f"qualifying points, x{tier.multiplier} base points"
        )
    return 0


async def review_tiers(ctx: AppContext, args: argparse.Namespace) -> int:
    reviewed, changed = await tiers.run_reviews(ctx)
    print(f"reviewed {reviewed} members, {changed} changed tier")
    return 0


# -- parser ----------------------------------------------------------------------------------


def add_commands(
    sub: Any,
    with_db: Callable[[argparse.ArgumentParser], argparse.ArgumentParser],
    runner: Callable[[Callable[[AppContext, argparse.Namespace], Awaitable[int]]], Any],
) -> None:
    """Register the subcommands; `runner` wraps a command into the CLI's context handling."""
    group = sub.add_parser("campaigns", help="earn campaigns").add_subparsers(
        dest="campaigns", required=True
    )
    create = with_db(group.add_parser("create", help="create a campaign for a partner"))
    create.add_argument("partner", help="partner id")
    create.add_argument("--name", required=True, help="shown to members in the breakdown")
    create.add_argument("--end", required=True, help="ISO 8601 end time with a zone")
    create.add_argument("--start", help="ISO 8601 start time (default now)")
    create.add_argument("--days", help="days in the partner's time zone, e.g. sat,sun")
    create.add_argument("--hours", help="local hours START-END, e.g. 18-22")
    create.add_argument("--category", action="append", help="purchase category (repeatable)")
    create.add_argument("--multiplier", help='"2" = double base points')
    create.add_argument("--bonus", type=int, default=0, help="fixed bonus points")
    create.add_argument("--action", help="an action bonus for this action code (REVIEW, ...)")
    create.add_argument("--member-budget", type=int, default=0, help="most points per member")
    create.add_argument("--total-budget", type=int, default=0, help="most points in total")
    create.add_argument("--request-id", help="idempotency key (default: digest of the arguments)")
    create.set_defaults(run=runner(create_campaign))
    listing = with_db(group.add_parser("list", help="a partner's campaigns, newest first"))
    listing.add_argument("partner", help="partner id")
    listing.set_defaults(run=runner(list_campaigns))
    end = with_db(group.add_parser("end", help="end a campaign now"))
    end.add_argument("name", help="partners/{partner}/campaigns/{campaign}")
    end.set_defaults(run=runner(end_campaign))

    group = sub.add_parser("rates", help="exchange rates").add_subparsers(
        dest="rates", required=True
    )
    set_p = with_db(group.add_parser("set", help="1 BASE = RATE QUOTE from now (or --effective)"))
    set_p.add_argument("base")
    set_p.add_argument("quote")
    set_p.add_argument("rate")
    set_p.add_argument("--effective", help="ISO 8601 time the rate applies from")
    set_p.set_defaults(run=runner(set_rate))
    load = with_db(group.add_parser("load", help="load a CSV of rates (all or nothing)"))
    load.add_argument("file", help="columns base_currency,quote_currency,rate[,effective_time]")
    load.set_defaults(run=runner(load_rates))
    list_p = with_db(group.add_parser("list", help="the latest rates loaded"))
    list_p.add_argument("--limit", type=int, default=50)
    list_p.set_defaults(run=runner(list_rates))

    group = sub.add_parser("tiers", help="the tier ladder and reviews").add_subparsers(
        dest="tiers", required=True
    )
    with_db(group.add_parser("show", help="the ladder in force")).set_defaults(
        run=runner(show_tiers)
    )
    with_db(
        group.add_parser("review", help="run every tier review that is due (idempotent)")
    ).set_defaults(run=runner(review_tiers))
