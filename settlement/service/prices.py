"""Price list versions and period FX rates, which finance loads before a close."""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.adapters.models import FxRateRow, PriceListRow, table_of
from gateway.domain import paging
from gateway.domain.errors import AlreadyExists, FailedPrecondition, InvalidArgument
from gateway.service import partners as partner_service
from gateway.service.context import AppContext
from gateway.service.earning import currency_exponent
from settlement.domain.periods import Period
from settlement.domain.pricing import PriceList, parse_fx_rate
from settlement.service import state

PRICES = table_of(PriceListRow)
FX = table_of(FxRateRow)
PRICE_LIST_ID_BYTES = 8


def _price_list(row: Any) -> PriceList:
    return PriceList(
        id=row.id,
        partner_id=row.partner_id,
        valid_from=row.valid_from,
        currency=row.currency,
        issue_price=Decimal(row.issue_price),
        redemption_rate=Decimal(row.redemption_rate),
        conversion_price=Decimal(row.conversion_price),
        charity_value=Decimal(row.charity_value),
        fee_per_transaction_minor=row.fee_per_transaction_minor,
        fee_percent=Decimal(row.fee_percent),
        create_time=row.create_time,
    )


async def create_price_list(conn: AsyncConnection, ctx: AppContext, draft: PriceList) -> PriceList:
    """Add a version; draft.id, currency ("" = the partner's) and create_time are filled in."""
    partner = await partner_service.get(conn, draft.partner_id)
    currency = partner.settings.settlement_currency_code
    if draft.currency and draft.currency != currency:
        raise InvalidArgument.on_field(
            "price_list.currency_code",
            "CURRENCY_MISMATCH",
            f"{partner.name} settles in {currency}",
        )
    closed = await state.last_closed(conn)
    if closed is not None and draft.valid_from < closed.end:
        raise FailedPrecondition(
            "PERIOD_CLOSED",
            f"{closed.name} is closed: a new price can start at {closed.end.isoformat()} at the "
            "earliest",
            {"period": closed.name},
        )
    version = replace(
        draft,
        id=secrets.token_hex(PRICE_LIST_ID_BYTES),
        currency=currency,
        create_time=ctx.clock.now(),
    )
    try:
        async with conn.begin_nested():
            await conn.execute(
                insert(PRICES).values(
                    id=version.id,
                    partner_id=version.partner_id,
                    valid_from=version.valid_from,
                    currency=version.currency,
                    issue_price=str(version.issue_price),
                    redemption_rate=str(version.redemption_rate),
                    conversion_price=str(version.conversion_price),
                    charity_value=str(version.charity_value),
                    fee_per_transaction_minor=version.fee_per_transaction_minor,
                    fee_percent=str(version.fee_percent),
                    create_time=version.create_time,
                )
            )
    except IntegrityError:
        raise AlreadyExists(
            "PRICE_LIST_EXISTS",
            f"{partner.name} has a price list valid from {draft.valid_from.isoformat()}; "
            "versions are never edited: add one with a later valid_from",
        ) from None
    return version


async def list_price_lists(
    conn: AsyncConnection, partner_id: str, size: int, token: str
) -> tuple[list[PriceList], str]:
    await partner_service.get(conn, partner_id)
    limit = paging.page_size(size)
    position = paging.decode_token(token, ("v",))
    query = select(PRICES).where(PRICES.c.partner_id == partner_id)
    if position is not None:
        query = query.where(PRICES.c.valid_from < paging.time_of(position, "v"))
    rows = (await conn.execute(query.order_by(PRICES.c.valid_from.desc()).limit(limit + 1))).all()
    page = [_price_list(r) for r in rows[:limit]]
    more = len(rows) > limit
    return page, paging.encode_token({"v": page[-1].valid_from.isoformat()}) if more else ""


async def by_id(conn: AsyncConnection, ids: Iterable[str]) -> dict[str, PriceList]:
    ids = sorted(set(ids))
    if not ids:
        return {}
    rows = (await conn.execute(select(PRICES).where(PRICES.c.id.in_(ids)))).all()
    return {r.id: _price_list(r) for r in rows}


async def set_fx_rate(
    conn: AsyncConnection, ctx: AppContext, period: Period, currency: str, raw_rate: str
) -> tuple[str, Decimal, datetime]:
    """(currency, rate, update time) after setting; the same rate again changes nothing."""
    currency_exponent(currency, "currency_code")
    if currency == ctx.base_currency:
        raise InvalidArgument.on_field(
            "currency_code", "SAME_CURRENCY", f"{currency} is the base currency (rate 1)"
        )
    rate = parse_fx_rate(raw_rate)
    await state.require_open(conn, period)
    now = ctx.clock.now()
    key = (FX.c.period == period.id, FX.c.currency == currency)
    row = (await conn.execute(select(FX).where(*key).with_for_update())).first()
    if row is not None and Decimal(row.rate) == rate and row.base_currency == ctx.base_currency:
        return currency, rate, row.update_time
    values = {"rate": str(rate), "base_currency": ctx.base_currency, "update_time": now}
    if row is not None:
        await conn.execute(update(FX).where(*key).values(**values))
        return currency, rate, now
    try:
        async with conn.begin_nested():
            await conn.execute(insert(FX).values(period=period.id, currency=currency, **values))
    except IntegrityError:
        raise FailedPrecondition(
            "CONCURRENT_UPDATE", f"the {currency} rate of {period.name} changed meanwhile"
        ) from None
    return currency, rate, now


async def fx_rates(conn: AsyncConnection, ctx: AppContext, period: Period) -> dict[str, Decimal]:
    """The period's rates for the base currency in force."""
    rows = await conn.execute(
        select(FX.c.currency, FX.c.rate).where(
            FX.c.period == period.id, FX.c.base_currency == ctx.base_currency
        )
    )
    return {r.currency: Decimal(r.rate) for r in rows}
