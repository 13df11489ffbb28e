"""Campaign use cases: create, list, end; offers and budgets for an earn.

Budgets hold under concurrency because every award is decided under locks taken in one order:
the member's balance row first (the earn holds it: per-member budgets), then the rows of the
budgeted campaigns that apply, by id (total budgets). A campaign without a total budget is never
locked or updated by an earn, so it costs no contention; its spending is summed from the awards.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.adapters.models import CampaignAwardRow, CampaignRow, table_of
from gateway.domain import paging
from gateway.domain import rules as dr
from gateway.domain.errors import FailedPrecondition, InvalidArgument, NotFound
from gateway.domain.partners import Partner
from gateway.service.context import AppContext

CAMPAIGNS = table_of(CampaignRow)
AWARDS = table_of(CampaignAwardRow)
CAMPAIGN_ID_BYTES = 8
CAMPAIGNS_LIVE_MAX = 25
"""Campaigns of one partner not yet over; bounds the work of every earn."""


def _campaign(row: Any) -> dr.Campaign:
    return dr.Campaign(
        id=row.id,
        partner_id=row.partner_id,
        display_name=row.display_name,
        start_time=row.start_time,
        end_time=row.end_time,
        days_of_week=frozenset(int(d) for d in row.days_of_week),
        start_hour=row.start_hour,
        end_hour=row.end_hour,
        categories=frozenset(json.loads(row.categories)),
        multiplier=Decimal(row.multiplier) if row.multiplier else None,
        bonus_points=row.bonus_points,
        action=row.action,
        member_budget_points=row.member_budget_points,
        total_budget_points=row.total_budget_points,
        create_time=row.create_time,
        stop_time=row.stop_time,
    )


def parse_campaign_name(name: str, field: str = "name") -> tuple[str, str]:
    parts = name.split("/")
    if len(parts) != 4 or parts[0] != "partners" or parts[2] != "campaigns" or not all(parts):
        raise InvalidArgument.on_field(
            field, "INVALID_CAMPAIGN_NAME", 'expected "partners/{partner}/campaigns/{campaign}"'
        )
    return parts[1], parts[3]


async def create(
    conn: AsyncConnection, ctx: AppContext, partner: Partner, draft: dr.Campaign
) -> dr.Campaign:
    now = ctx.clock.now()
    campaign = dr.validate_campaign(draft, now)
    live = await conn.scalar(
        select(func.count())
        .select_from(CAMPAIGNS)
        .where(
            CAMPAIGNS.c.partner_id == partner.id,
            CAMPAIGNS.c.end_time > now,
            CAMPAIGNS.c.stop_time.is_(None),
        )
    )
    if (live or 0) >= CAMPAIGNS_LIVE_MAX:
        raise FailedPrecondition(
            "TOO_MANY_CAMPAIGNS",
            f"{partner.name} has {CAMPAIGNS_LIVE_MAX} campaigns not yet over; end one first",
            {"partner": partner.name},
        )
    campaign = replace(
        campaign, id=secrets.token_hex(CAMPAIGN_ID_BYTES), partner_id=partner.id, create_time=now
    )
    await conn.execute(
        insert(CAMPAIGNS).values(
            id=campaign.id,
            partner_id=partner.id,
            display_name=campaign.display_name,
            start_time=campaign.start_time,
            end_time=campaign.end_time,
            days_of_week="".join(str(d) for d in sorted(campaign.days_of_week)),
            start_hour=campaign.start_hour,
            end_hour=campaign.end_hour,
            categories=json.dumps(sorted(campaign.categories)),
            multiplier=str(campaign.multiplier) if campaign.multiplier is not None else "",
            bonus_points=campaign.bonus_points,
            action=campaign.action,
            member_budget_points=campaign.member_budget_points,
            total_budget_points=campaign.total_budget_points,
            budget_spent_points=0,
            create_time=now,
        )
    )
    return campaign


async def get(conn: AsyncConnection, name: str) -> dr.Campaign:
    partner_id, campaign_id = parse_campaign_name(name)
    row = (
        await conn.execute(
            select(CAMPAIGNS).where(
                CAMPAIGNS.c.id == campaign_id, CAMPAIGNS.c.partner_id == partner_id
            )
        )
    ).first()
    if row is None:
        raise NotFound("CAMPAIGN_NOT_FOUND", f"no campaign {name}", {"campaign": name})
    return _campaign(row)


async def end(conn: AsyncConnection, ctx: AppContext, name: str) -> dr.Campaign:
    """Stop a campaign now: no earn recorded from now on gets its bonus, even one whose purchase
    happened while the campaign ran (a campaign that simply reaches its end_time still pays
    purchases made before it, reported late)."""
    campaign = await get(conn, name)
    now = ctx.clock.now()
    if campaign.stop_time is not None or campaign.end_time <= now:
        ended = campaign.stop_time or campaign.end_time
        raise FailedPrecondition(
            "CAMPAIGN_ENDED", f"the campaign ended at {ended.isoformat()}", {"campaign": name}
        )
    # A campaign that has not started yet ends before it starts: it never applies.
    end_time = max(now, campaign.start_time)
    stopped = await conn.execute(
        update(CAMPAIGNS)
        .where(CAMPAIGNS.c.id == campaign.id, CAMPAIGNS.c.stop_time.is_(None))
        .values(end_time=end_time, stop_time=now)
    )
    if stopped.rowcount != 1:
        raise FailedPrecondition("CAMPAIGN_ENDED", "the campaign was ended meanwhile")
    return replace(campaign, end_time=end_time, stop_time=now)


async def spent(conn: AsyncConnection, campaign_ids: list[str]) -> dict[str, int]:
    """Bonus points paid so far, per campaign."""
    if not campaign_ids:
        return {}
    rows = await conn.execute(
        select(AWARDS.c.campaign_id, func.sum(AWARDS.c.points))
        .where(AWARDS.c.campaign_id.in_(campaign_ids))
        .group_by(AWARDS.c.campaign_id)
    )
    return {campaign_id: int(total) for campaign_id, total in rows}


async def list_page(
    conn: AsyncConnection, partner_id: str, size: int, token: str
) -> tuple[list[dr.Campaign], str]:
    """Newest first."""
    limit = paging.page_size(size)
    position = paging.decode_token(token, ("t", "id"))
    query = select(CAMPAIGNS).where(CAMPAIGNS.c.partner_id == partner_id)
    if position is not None:
        after = paging.time_of(position, "t")
        query = query.where(
            (CAMPAIGNS.c.create_time < after)
            | ((CAMPAIGNS.c.create_time == after) & (CAMPAIGNS.c.id < str(position["id"])))
        )
    rows = (
        await conn.execute(
            query.order_by(CAMPAIGNS.c.create_time.desc(), CAMPAIGNS.c.id.desc()).limit(limit + 1)
        )
    ).all()
    page = [_campaign(r) for r in rows[:limit]]
    last = page[-1] if page else None
    next_token = ""
    if len(rows) > limit and last is not None and last.create_time is not None:
        next_token = paging.encode_token({"t": last.create_time.isoformat(), "id": last.id})
    return page, next_token


# -- during an earn --------------------------------------------------------------------------


async def offers(
    conn: AsyncConnection,
    partner: Partner,
    member_id: str,
    at: datetime,
    category: str,
    action: str,
    lock: bool,
    now: datetime,
) -> list[dr.Offer]:
    """The partner's campaigns that apply at `at`, with what is left of their budgets.

    With lock=True (an earn, holding the member's balance lock) the budgeted campaigns' rows
    are locked until the transaction ends, so concurrent earns cannot overspend them.
    """
    rows = await conn.execute(
        select(CAMPAIGNS)
        .where(
            CAMPAIGNS.c.partner_id == partner.id,
            CAMPAIGNS.c.start_time <= at,
            CAMPAIGNS.c.end_time > at,
            or_(CAMPAIGNS.c.stop_time.is_(None), CAMPAIGNS.c.stop_time > now),
        )
        .order_by(CAMPAIGNS.c.start_time, CAMPAIGNS.c.id)
        .limit(CAMPAIGNS_LIVE_MAX)
    )
    zone = ZoneInfo(partner.settings.time_zone)
    applying = [c for c in map(_campaign, rows) if c.applies(at, zone, category, action)]
    if not applying:
        return []
    budgeted = sorted(c.id for c in applying if c.total_budget_points)
    total_spent: dict[str, int] = {}
    if budgeted:
        query = select(CAMPAIGNS.c.id, CAMPAIGNS.c.budget_spent_points).where(
            CAMPAIGNS.c.id.in_(budgeted)
        )
        if lock:
            query = query.order_by(CAMPAIGNS.c.id).with_for_update()
        total_spent = {r.id: r.budget_spent_points for r in await conn.execute(query)}
    capped = [c.id for c in applying if c.member_budget_points]
    member_spent: dict[str, int] = {}
    if capped:
        per_member = await conn.execute(
            select(AWARDS.c.campaign_id, func.sum(AWARDS.c.points))
            .where(AWARDS.c.campaign_id.in_(capped), AWARDS.c.member_id == member_id)
            .group_by(AWARDS.c.campaign_id)
        )
        member_spent = {campaign_id: int(total) for campaign_id, total in per_member}
    return [
        dr.Offer(
            c,
            member_left=c.member_budget_points - member_spent.get(c.id, 0)
            if c.member_budget_points
            else None,
            total_left=c.total_budget_points - total_spent.get(c.id, 0)
            if c.total_budget_points
            else None,
        )
        for c in applying
    ]


async def record_awards(
    conn: AsyncConnection,
    ctx: AppContext,
    offered: list[dr.Offer],
    member_id: str,
    transaction_id: str,
    awards: tuple[dr.Award, ...],
) -> None:
    budgets = {o.campaign.id: o.campaign.total_budget_points for o in offered}
    now = ctx.clock.now()
    for award in awards:
        await conn.execute(
            insert(AWARDS).values(
                campaign_id=award.campaign_id,
                member_id=member_id,
                transaction_id=transaction_id,
                points=award.points,
                create_time=now,
            )
        )
        total = budgets.get(award.campaign_id, 0)
        if total:
            charged = await conn.execute(
                update(CAMPAIGNS)
                .where(
                    CAMPAIGNS.c.id == award.campaign_id,
                    CAMPAIGNS.c.budget_spent_points + award.points <= total,
                )
                .values(budget_spent_points=CAMPAIGNS.c.budget_spent_points + award.points)
            )
            assert charged.rowcount == 1, "awards are decided under the campaign's row lock"
