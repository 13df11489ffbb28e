"""Liability and partner return reports, aggregated in SQL over closed periods."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import case, distinct, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.adapters.models import PartnerRow, table_of
from gateway.service.earning import currency_exponent
from settlement.domain import reports as dr
from settlement.domain.periods import Period, parse_period
from settlement.domain.pricing import to_base
from settlement.service.periods import LINES, STATEMENTS, statements_of
from settlement.service.state import PERIODS, require_closed

PARTNERS = table_of(PartnerRow)


async def _trailing(conn: AsyncConnection, period: Period) -> tuple[dr.PeriodPoints, ...]:
    ids = (
        await conn.execute(
            select(PERIODS.c.period)
            .where(PERIODS.c.period <= period.id)
            .order_by(PERIODS.c.period.desc())
            .limit(dr.TRAILING_PERIODS)
        )
    ).scalars()
    out = []
    for pid in sorted(ids):
        closed = await require_closed(conn, parse_period(pid))
        statements = await statements_of(conn, closed.period)
        base_exponent = currency_exponent(closed.base_currency, "base_currency")
        cost = sum(
            to_base(
                s.redemption_minor + s.conversion_minor + s.donation_minor,
                s.fx_rate,
                s.exponent,
                base_exponent,
            )
            for s in statements
        )
        out.append(
            dr.PeriodPoints(
                period=pid,
                issued=sum(s.points_issued + s.points_matched for s in statements),
                burned=sum(
                    s.points_redeemed + s.points_converted + s.points_donated for s in statements
                ),
                expired=sum(s.points_expired for s in statements),
                burn_cost_base_minor=cost,
            )
        )
    return tuple(out)


async def liability(
    conn: AsyncConnection, period: Period, breakage_percent: Decimal
) -> dr.Liability:
    closed = await require_closed(conn, period)
    outstanding = (closed.totals or {}).get("outstanding_points", {})
    trailing = await _trailing(conn, period)
    return dr.Liability(
        period=period.id,
        base_currency=closed.base_currency,
        base_exponent=currency_exponent(closed.base_currency, "base_currency"),
        available=int(outstanding.get("available", 0)),
        pending=int(outstanding.get("pending", 0)),
        held=int(outstanding.get("held", 0)),
        breakage_percent=breakage_percent,
        cost_per_point_base_minor=dr.cost_per_point(trailing),
        trailing=trailing,
    )


async def history(conn: AsyncConnection, period: Period) -> tuple[dr.PeriodPoints, ...]:
    """Points issued, burned and expired per closed period, up to `period` (at most 12)."""
    return await _trailing(conn, period)


async def partner_returns(conn: AsyncConnection, period: Period) -> list[dr.PartnerReturn]:
    """Per partner with a statement: points in and out, members, members shared with others."""
    await require_closed(conn, period)
    in_period = LINES.c.period == period.id
    shared = (
        select(LINES.c.member_id)
        .where(in_period, LINES.c.member_id != "")
        .group_by(LINES.c.member_id)
        .having(func.count(distinct(LINES.c.partner_id)) > 1)
        .subquery()
    )
    is_shared = LINES.c.member_id.in_(select(shared.c.member_id))
    issued = case((LINES.c.component.in_(["ISSUED", "MATCHED"]), LINES.c.points), else_=0)
    spent = case(
        (LINES.c.component.in_(["REDEEMED", "CONVERTED", "DONATED"]), -LINES.c.points), else_=0
    )
    rows = await conn.execute(
        select(
            LINES.c.partner_id,
            func.sum(issued).label("issued"),
            func.sum(spent).label("spent"),
            func.count(distinct(LINES.c.member_id)).label("members"),
            func.count(distinct(case((is_shared, LINES.c.member_id)))).label("shared"),
        )
        .where(in_period, LINES.c.kind != "ADJUSTMENT")
        .group_by(LINES.c.partner_id)
    )
    figures = {r.partner_id: r for r in rows}
    names = await display_names(conn)
    nets = {
        r.partner_id: r.net_base_minor
        for r in await conn.execute(
            select(STATEMENTS.c.partner_id, STATEMENTS.c.net_base_minor).where(
                STATEMENTS.c.period == period.id
            )
        )
    }
    out = []
    for partner_id in sorted(nets):
        r = figures.get(partner_id)
        out.append(
            dr.PartnerReturn(
                partner_id=partner_id,
                display_name=names.get(partner_id, partner_id),
                points_issued=int(r.issued) if r else 0,
                points_redeemed=int(r.spent) if r else 0,
                members=int(r.members) if r else 0,
                shared_members=int(r.shared) if r else 0,
                net_base_minor=int(nets[partner_id]),
            )
        )
    return out


async def display_names(conn: AsyncConnection) -> dict[str, str]:
    rows = await conn.execute(select(PARTNERS.c.id, PARTNERS.c.display_name))
    return {r.id: r.display_name for r in rows}
