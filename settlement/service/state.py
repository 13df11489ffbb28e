"""Which periods are closed: the one fact prices, adjustments and closes all check."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.adapters.models import SettlementPeriodRow, table_of
from gateway.domain.errors import FailedPrecondition
from settlement.domain.periods import Period, parse_period

PERIODS = table_of(SettlementPeriodRow)


@dataclass(frozen=True)
class ClosedPeriod:
    period: Period
    close_time: datetime | None
    statement_count: int
    base_currency: str = ""
    totals: dict[str, Any] | None = None

    @property
    def closed(self) -> bool:
        return self.close_time is not None


async def last_closed(conn: AsyncConnection) -> Period | None:
    latest = await conn.scalar(select(func.max(PERIODS.c.period)))
    return parse_period(latest) if latest else None


async def require_open(conn: AsyncConnection, period: Period) -> None:
    """PERIOD_CLOSED if the period was closed, or settled by the close of a later one."""
    closed = await last_closed(conn)
    if closed is not None and period <= closed:
        raise FailedPrecondition(
            "PERIOD_CLOSED",
            f"{period.name} is closed (settlement is closed up to {closed.name}): book "
            "corrections in an open period",
            {"period": period.name},
        )


async def get_period(conn: AsyncConnection, period: Period) -> ClosedPeriod:
    row = (await conn.execute(select(PERIODS).where(PERIODS.c.period == period.id))).first()
    if row is None:
        return ClosedPeriod(period, None, 0)
    return ClosedPeriod(
        period, row.close_time, row.statement_count, row.base_currency, json.loads(row.totals)
    )


async def require_closed(conn: AsyncConnection, period: Period) -> ClosedPeriod:
    closed = await get_period(conn, period)
    if not closed.closed:
        raise FailedPrecondition(
            "PERIOD_NOT_CLOSED",
            f"{period.name} is not closed yet: statements exist once it is",
            {"period": period.name},
        )
    return closed
