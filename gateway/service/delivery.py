"""The outbox deliverer: partner webhooks and member notifications, at least once.

Workers (inside `coalition serve`, or `coalition worker` on their own; any number of them)
claim due deliveries in a short transaction that pushes each claimed row a lease ahead
(`FOR UPDATE SKIP LOCKED` on PostgreSQL, so two workers never claim the same row), send them
outside any transaction, then record the outcome. A worker that dies mid-send leaves its rows
to be claimed again when the lease runs out: nothing is lost across restarts, and a receiver
may see an event twice, which is why every event carries its id.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.adapters import repository as repo
from gateway.adapters.notify import Channel, ChannelError, Notification
from gateway.adapters.webhooks import WebhookSender
from gateway.domain import notices
from gateway.domain.delivery import DeliveryPolicy, DeliveryState
from gateway.domain.paging import page_size
from gateway.service.context import AppContext
from gateway.service.outbox import DELIVERIES, EVENTS

IDLE_POLL_S = 1.0
"""How often an idle worker looks for new deliveries."""
ERROR_PAUSE_S = 5.0
"""How long a worker waits after the database failed it (an outage, a failover)."""

log = logging.getLogger("coalition.delivery")


@dataclass(frozen=True)
class Claimed:
    id: int
    attempts: int
    """Including the attempt this claim is for."""
    destination: str
    event_id: str
    event_type: str
    payload: dict[str, Any]
    event_time: datetime


@dataclass(frozen=True)
class Outcome:
    state: DeliveryState
    error: str = ""


@dataclass(frozen=True)
class DeliveryView:
    """A delivery as the operator sees it."""

    id: int
    event_id: str
    event_type: str
    destination: str
    state: DeliveryState
    attempts: int
    next_attempt_time: datetime
    last_error: str
    update_time: datetime


class Deliverer:
    def __init__(
        self,
        ctx: AppContext,
        sender: WebhookSender,
        channel: Channel,
        policy: DeliveryPolicy | None = None,
    ) -> None:
        self.ctx = ctx
        self.sender = sender
        self.channel = channel
        self.policy = policy or DeliveryPolicy()

    async def claim(self) -> list[Claimed]:
        now = self.ctx.clock.now()
        lease = now + timedelta(seconds=self.policy.lease_s)
        async with self.ctx.database.begin() as conn:
            due = (
                await conn.execute(
                    select(DELIVERIES.c.id)
                    .where(
                        DELIVERIES.c.state == DeliveryState.PENDING.value,
                        DELIVERIES.c.next_attempt_time <= now,
                    )
                    .order_by(DELIVERIES.c.next_attempt_time, DELIVERIES.c.id)
                    .limit(self.policy.batch)
                    .with_for_update(skip_locked=True)
                )
            ).scalars()
            ids = list(due)
            if not ids:
                return []
            await conn.execute(
                update(DELIVERIES)
                .where(DELIVERIES.c.id.in_(ids))
                .values(
                    attempts=DELIVERIES.c.attempts + 1, next_attempt_time=lease, update_time=now
                )
            )
            rows = await conn.execute(
                select(
                    DELIVERIES.c.id,
                    DELIVERIES.c.attempts,
                    DELIVERIES.c.destination,
                    EVENTS.c.id.label("event_id"),
                    EVENTS.c.type,
                    EVENTS.c.payload,
                    EVENTS.c.create_time,
                )
                .join(EVENTS, EVENTS.c.seq == DELIVERIES.c.event_seq)
                .where(DELIVERIES.c.id.in_(ids))
                .order_by(DELIVERIES.c.id)
            )
            return [
                Claimed(
                    r.id,
                    r.attempts,
                    r.destination,
                    r.event_id,
                    r.type,
                    json.loads(r.payload),
                    r.create_time,
                )
                for r in rows
            ]

    async def run_once(self) -> int:
        """Claim one batch and deliver it concurrently; how many were attempted."""
        claimed = await self.claim()
        await asyncio.gather(*(self.deliver(item) for item in claimed))
        return len(claimed)

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until stopped, surviving database outages."""
        while not stop.is_set():
            try:
                busy = await self.run_once()
            except Exception:  # the database went away: log it, wait, carry on
                log.exception("delivery round failed; retrying in %.0f s", ERROR_PAUSE_S)
                busy, pause = 0, ERROR_PAUSE_S
            else:
                pause = IDLE_POLL_S
            if not busy:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), pause)

    async def deliver(self, item: Claimed) -> None:
        try:
            outcome = await self._send(item)
        except ChannelError as exc:
            outcome = Outcome(DeliveryState.PENDING, str(exc) or type(exc).__name__)
        except Exception as exc:  # a bug or an outage must not strand the claimed row
            log.exception("delivery %d of event %s failed", item.id, item.event_id)
            outcome = Outcome(DeliveryState.PENDING, f"{type(exc).__name__}: {exc}")
        await self._record(item, outcome)

    async def _send(self, item: Claimed) -> Outcome:
        kind, _, target = item.destination.partition(":")
        if kind == "partner":
            return await self._webhook(item, target)
        if kind == "member":
            return await self._notify(item, target)
        return Outcome(DeliveryState.SKIPPED, f"unknown destination {item.destination}")

    async def _webhook(self, item: Claimed, partner_id: str) -> Outcome:
        async with self.ctx.database.connect() as conn:
            row = (
                await conn.execute(
                    select(
                        repo.PARTNERS.c.webhook_url, repo.PARTNERS.c.webhook_secret_version
                    ).where(repo.PARTNERS.c.id == partner_id)
                )
            ).first()
        if row is None or not row.webhook_url:
            return Outcome(DeliveryState.SKIPPED, "the partner has no webhook URL any more")
        secret = self.ctx.vault.webhook_secret(partner_id, row.webhook_secret_version)
        attempt = await self.sender.post(
            row.webhook_url,
            secret.encode(),
            item.event_id,
            item.event_type,
            webhook_body(item),
            int(self.ctx.clock.now().timestamp()),
        )
        if attempt.ok:
            return Outcome(DeliveryState.DELIVERED)
        return Outcome(DeliveryState.PENDING, attempt.error)

    async def _notify(self, item: Claimed, member_id: str) -> Outcome:
        async with self.ctx.database.connect() as conn:
            member = await repo.find_member(conn, self.ctx.vault, id=member_id)
        if member is None:
            return Outcome(DeliveryState.SKIPPED, "no such member")
        rendered = notices.render(item.event_type, item.payload, member.contact.display_name)
        if rendered is None:
            return Outcome(DeliveryState.SKIPPED, f"{item.event_type} is not sent to members")
        if not member.contact.email:
            return Outcome(DeliveryState.SKIPPED, "the member has no email address")
        subject, text = rendered
        await self.channel.send(
            Notification(
                event_id=item.event_id,
                to_email=member.contact.email,
                to_name=member.contact.display_name,
                subject=subject,
                text=text,
            )
        )
        return Outcome(DeliveryState.DELIVERED)

    async def _record(self, item: Claimed, outcome: Outcome) -> None:
        now = self.ctx.clock.now()
        values: dict[str, Any] = {"update_time": now, "last_error": outcome.error[:500]}
        if outcome.state is not DeliveryState.PENDING:
            values["state"] = outcome.state.value
        elif self.policy.gives_up(item.attempts):
            values["state"] = DeliveryState.DEAD.value
            log.warning(
                "delivery %d of event %s to %s is dead after %d attempts: %s",
                item.id,
                item.event_id,
                item.destination,
                item.attempts,
                outcome.error,
            )
        else:
            values["next_attempt_time"] = now + self.policy.retry_after(item.attempts)
        async with self.ctx.database.begin() as conn:
            # Only if still ours: after a lease ran out another worker may own the row now.
            await conn.execute(
                update(DELIVERIES)
                .where(
                    DELIVERIES.c.id == item.id,
                    DELIVERIES.c.attempts == item.attempts,
                    DELIVERIES.c.state == DeliveryState.PENDING.value,
                )
                .values(**values)
            )


def webhook_body(item: Claimed) -> bytes:
    """The JSON a partner receives (docs/webhooks.md)."""
    return json.dumps(
        {
            "id": item.event_id,
            "type": item.event_type,
            "create_time": item.event_time.isoformat(),
            "data": item.payload,
        },
        sort_keys=True,
        separators=(",", ":"),
    ).encode()


# -- for the operator ------------------------------------------------------------------------


async def list_deliveries(
    conn: AsyncConnection, state: DeliveryState | None, limit: int, before_id: int = 0
) -> list[DeliveryView]:
    """Newest first."""
    query = select(
        DELIVERIES.c.id,
        EVENTS.c.id.label("event_id"),
        EVENTS.c.type,
        DELIVERIES.c.destination,
        DELIVERIES.c.state,
        DELIVERIES.c.attempts,
        DELIVERIES.c.next_attempt_time,
        DELIVERIES.c.last_error,
        DELIVERIES.c.update_time,
    ).join(EVENTS, EVENTS.c.seq == DELIVERIES.c.event_seq)
    if state is not None:
        query = query.where(DELIVERIES.c.state == state.value)
    if before_id:
        query = query.where(DELIVERIES.c.id < before_id)
    rows = await conn.execute(query.order_by(DELIVERIES.c.id.desc()).limit(page_size(limit)))
    return [
        DeliveryView(
            r.id,
            r.event_id,
            r.type,
            r.destination,
            DeliveryState(r.state),
            r.attempts,
            r.next_attempt_time,
            r.last_error,
            r.update_time,
        )
        for r in rows
    ]


async def retry(conn: AsyncConnection, ctx: AppContext, ids: list[int] | None) -> int:
    """Give dead deliveries (all of them, or these ids) a fresh set of attempts."""
    now = ctx.clock.now()
    query = update(DELIVERIES).where(DELIVERIES.c.state == DeliveryState.DEAD.value)
    if ids is not None:
        query = query.where(DELIVERIES.c.id.in_(ids))
    result = await conn.execute(
        query.values(
            state=DeliveryState.PENDING.value, attempts=0, next_attempt_time=now, update_time=now
        )
    )
    return result.rowcount
