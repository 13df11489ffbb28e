"""The outbox: events written in the same transaction as the change they announce.

Each event names its destinations when it is written: a delivery row per partner webhook and
per member notification, so an event and its deliveries exist if and only if the change
committed. The deliverer (gateway.service.delivery) works through the pending deliveries;
delivery is at-least-once, and every event has a unique id that consumers use to ignore repeats.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.adapters import repository as repo
from gateway.adapters.models import DeliveryRow, OutboxEventRow, table_of
from gateway.service.context import AppContext

EVENTS = table_of(OutboxEventRow)
DELIVERIES = table_of(DeliveryRow)
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
    conn: AsyncConnection,
    ctx: AppContext,
    type_: str,
    subject: str,
    payload: dict[str, Any],
    *,
    member_id: str | None = None,
    partner_ids: tuple[str, ...] = (),
) -> str:
    """Write an event, to be delivered to the member (member_id) and to those of partner_ids
    that have a webhook."""
    event_id = secrets.token_hex(EVENT_ID_BYTES)
    now = ctx.clock.now()
    seq = await conn.scalar(
        insert(EVENTS)
        .values(
            id=event_id,
            type=type_,
            subject=subject,
            payload=json.dumps(payload, sort_keys=True),
            create_time=now,
        )
        .returning(EVENTS.c.seq)
    )
    destinations = [f"member:{member_id}"] if member_id else []
    if partner_ids:
        hooked = await conn.scalars(
            select(repo.PARTNERS.c.id)
            .where(repo.PARTNERS.c.id.in_(partner_ids), repo.PARTNERS.c.webhook_url != "")
            .order_by(repo.PARTNERS.c.id)
        )
        destinations += [f"partner:{partner}" for partner in hooked]
    if destinations:
        await conn.execute(
            insert(DELIVERIES),
            [
                {
                    "event_seq": seq,
                    "destination": destination,
                    "state": "PENDING",
                    "attempts": 0,
                    "next_attempt_time": now,
                    "last_error": "",
                    "create_time": now,
                    "update_time": now,
                }
                for destination in destinations
            ],
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
