"""Exchange rates the operator loads, for purchases in another currency than the partner's."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.adapters.models import ExchangeRateRow, table_of
from gateway.domain import paging
from gateway.domain.errors import AlreadyExists, FailedPrecondition, InvalidArgument
from gateway.domain.partners import parse_currency
from gateway.domain.rules import Conversion
from gateway.service.context import AppContext

RATES = table_of(ExchangeRateRow)
EXCHANGE_RATE_AGE_S_MAX = 8 * 24 * 3600
"""A rate older than this (weekly loads plus a day) is stale: no earn is computed with it."""


@dataclass(frozen=True)
class ExchangeRate:
    base_currency: str
    quote_currency: str
    rate: Decimal
    effective_time: datetime


async def set_rate(
    conn: AsyncConnection,
    ctx: AppContext,
    base: str,
    quote: str,
    rate: Decimal,
    effective_time: datetime | None = None,
) -> ExchangeRate:
    base, quote = parse_currency(base, "base_currency"), parse_currency(quote, "quote_currency")
    if base == quote:
        raise InvalidArgument.on_field("quote_currency", "SAME_CURRENCY", "two different codes")
    now = ctx.clock.now()
    effective = effective_time or now
    try:
        async with conn.begin_nested():
            await conn.execute(
                insert(RATES).values(
                    base_currency=base,
                    quote_currency=quote,
                    rate=str(rate),
                    effective_time=effective,
                    create_time=now,
                )
            )
    except IntegrityError:
        existing = await conn.scalar(
            select(RATES.c.rate).where(
                RATES.c.base_currency == base,
                RATES.c.quote_currency == quote,
                RATES.c.effective_time == effective,
            )
        )
        if existing is None or Decimal(existing) != rate:
            raise AlreadyExists(
                "RATE_EXISTS",
                f"another {base}/{quote} rate ({existing}) is effective at {effective.isoformat()}",
            ) from None
        # The same rate again (a rate sheet loaded twice): nothing to do.
    return ExchangeRate(base, quote, rate, effective)


async def conversion(conn: AsyncConnection, base: str, quote: str, at: datetime) -> Conversion:
    """The rate in force at `at`; FailedPrecondition NO_EXCHANGE_RATE if none or stale."""
    row = (
        await conn.execute(
            select(RATES.c.rate, RATES.c.effective_time)
            .where(
                RATES.c.base_currency == base,
                RATES.c.quote_currency == quote,
                RATES.c.effective_time <= at,
            )
            .order_by(RATES.c.effective_time.desc())
            .limit(1)
        )
    ).first()
    if row is None or at - row.effective_time > timedelta(seconds=EXCHANGE_RATE_AGE_S_MAX):
        detail = "no" if row is None else "only a stale"
        raise FailedPrecondition(
            "NO_EXCHANGE_RATE",
            f"{detail} {base}->{quote} rate at {at.isoformat()}; the operator loads rates",
            {"base_currency": base, "quote_currency": quote},
        )
    return Conversion(Decimal(row.rate), row.effective_time)


async def list_page(conn: AsyncConnection, size: int, token: str) -> tuple[list[ExchangeRate], str]:
    """Newest first."""
    limit = paging.page_size(size)
    position = paging.decode_token(token, ("id",))
    query = select(RATES)
    if position is not None:
        if not isinstance(position["id"], int):
            raise paging.invalid_token()
        query = query.where(RATES.c.id < position["id"])
    rows = (await conn.execute(query.order_by(RATES.c.id.desc()).limit(limit + 1))).all()
    page = rows[:limit]
    token = paging.encode_token({"id": page[-1].id}) if len(rows) > limit else ""
    rates = [
        ExchangeRate(r.base_currency, r.quote_currency, Decimal(r.rate), r.effective_time)
        for r in page
    ]
    return rates, token
