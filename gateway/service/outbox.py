"""The outbox: events written in the same transaction as the change they announce.

Deliverers (partner webhooks, wallet pass updates, member notifications) read it afterwards, so
an event exists if and only if its change committed. Delivery is at-least-once; every event has
a unique id that consumers use to ignore repeats.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.adapters.models import OutboxEventRow, table_of
from gateway.service.context import AppContext

EVENTS = table_of(OutboxEventRow)
EVENT_ID_BYTES = 12
EVENTS_PAGE_MAX = 500

TIER_CHANGED = "TierChanged"


@dataclass(frozen=True)
class Event:
    seq: int
    id: str
    type: str
    subject: str
    payload: dict[str, Any]
    create_time: datetime


async def emit(
    conn: AsyncConnection, ctx: AppContext, type_: str, subject: str, payload: dict[str, Any]
) -> str:
    event_id = secrets.token_hex(EVENT_ID_BYTES)
    await conn.execute(
        insert(EVENTS).values(
            id=event_id,
            type=type_,
            subject=subject,
            payload=json.dumps(payload, sort_keys=True),
            create_time=ctx.clock.now(),
        )
    )
    return event_id


async def events(
    conn: AsyncConnection,
    *,
    subject: str | None = None,
    type_: str | None = None,
    after_seq: int = 0,
    limit: int = EVENTS_PAGE_MAX,
) -> list[Event]:
    """Events in commit order, after `after_seq`, at most `limit` (capped at EVENTS_PAGE_MAX)."""
    query = select(EVENTS).where(EVENTS.c.seq > after_seq)
    if subject is not None:
        query = query.where(EVENTS.c.subject == subject)
    if type_ is not None:
        query = query.where(EVENTS.c.type == type_)
    rows = await conn.execute(query.order_by(EVENTS.c.seq).limit(min(limit, EVENTS_PAGE_MAX)))
    return [
        Event(r.seq, r.id, r.type, r.subject, json.loads(r.payload), r.create_time) for r in rows
    ]
