"""The card updater: marked cards are rebuilt, and the devices and Google are told.

Marks (gateway.service.cards) are written with the balance, tier or name change they follow.
An updater claims a batch of marks with a lease (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so any
number of workers share the work), rebuilds each card, and when the card's update tag is ahead
of what was pushed, sends an APNs push to every registered device and PATCHes the Google object.
A mark is removed only if nobody bumped it meanwhile; a failed push is retried with backoff.
Tokens APNs reports as gone lose their registrations.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import and_, delete, exists, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.adapters import repository as repo
from gateway.adapters.models import WalletDeviceRow, table_of
from gateway.service.cards import CHANGES
from gateway.service.context import AppContext
from wallet.adapters.apns import PushOutcome
from wallet.adapters.google import UpdateOutcome
from wallet.config import Wallet
from wallet.domain import card as dc
from wallet.service import cards
from wallet.service.cards import CARDS, REGISTRATIONS

DEVICES = table_of(WalletDeviceRow)

UPDATE_BATCH_CARDS = 50
UPDATE_LEASE_S = 60.0
"""A claimed mark is not claimed again for this long (the pushes must finish within it)."""
UPDATE_ATTEMPTS_MAX = 8
RETRY_BASE_S = 15.0
RETRY_MAX_S = 3600.0
PUSHES_IN_FLIGHT_MAX = 20
"""Concurrent APNs requests per card (HTTP/2 streams on one connection)."""
IDLE_POLL_S = 1.0
ERROR_PAUSE_S = 5.0

log = logging.getLogger("coalition.wallet")


@dataclass(frozen=True)
class Claimed:
    member_id: str
    version: int
    attempts: int


@dataclass(frozen=True)
class Round:
    cards: int = 0
    pushes: int = 0
    gone: int = 0
    failed: int = 0


class CardUpdater:
    def __init__(self, ctx: AppContext, wallet: Wallet) -> None:
        self.ctx = ctx
        self.wallet = wallet

    async def claim(self) -> list[Claimed]:
        now = self.ctx.clock.now()
        async with self.ctx.database.begin() as conn:
            rows = (
                await conn.execute(
                    select(CHANGES.c.member_id, CHANGES.c.version, CHANGES.c.attempts)
                    .where(or_(CHANGES.c.claim_time.is_(None), CHANGES.c.claim_time <= now))
                    .order_by(CHANGES.c.member_id)
                    .limit(UPDATE_BATCH_CARDS)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            if rows:
                await conn.execute(
                    update(CHANGES)
                    .where(CHANGES.c.member_id.in_([r.member_id for r in rows]))
                    .values(claim_time=now + timedelta(seconds=UPDATE_LEASE_S))
                )
        return [Claimed(r.member_id, r.version, r.attempts) for r in rows]

    async def run_once(self) -> Round:
        claimed = await self.claim()
        results = await asyncio.gather(*(self.update(item) for item in claimed))
        return Round(
            len(claimed),
            sum(r.pushes for r in results),
            sum(r.gone for r in results),
            sum(r.failed for r in results),
        )

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                busy = (await self.run_once()).cards
                pause = IDLE_POLL_S
            except Exception:  # a database outage: log it, wait, carry on
                log.exception("wallet update round failed; retrying in %.0f s", ERROR_PAUSE_S)
                busy, pause = 0, ERROR_PAUSE_S
            if not busy:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), pause)

    async def update(self, item: Claimed) -> Round:
        try:
            return await self._update(item)
        except Exception:  # a bug or an outage must not strand the claimed mark
            log.exception("wallet update of members/%s failed", item.member_id)
            await self._finish(item, None, ok=False)
            return Round(cards=1, failed=1)

    async def _update(self, item: Claimed) -> Round:
        async with self.ctx.database.begin() as conn:
            card, tokens = await self._refresh(conn, item.member_id)
        if card is None or card.update_tag <= card.pushed_tag:
            await self._finish(item, card, ok=True)
            return Round(cards=1)
        pushes, gone, failed = await self._push(card, tokens)
        google_ok = await self._google(card)
        if gone:
            async with self.ctx.database.begin() as conn:
                await forget_devices(conn, {d: tokens[d] for d in gone})
        ok = not failed and google_ok
        await self._finish(item, card, ok=ok)
        return Round(1, pushes, len(gone), len(failed) + (not google_ok))

    async def _refresh(
        self, conn: AsyncConnection, member_id: str
    ) -> tuple[cards.CardView | None, dict[str, str]]:
        """Rebuild the card; its registered devices' push tokens by device id."""
        card = await cards.find(conn, member_id=member_id)
        member = await repo.find_member(conn, self.ctx.vault, id=member_id)
        if card is None or member is None:
            return None, {}
        content = await cards.current_content(conn, self.ctx, member)
        if content != card.content:
            card = await cards.store(conn, self.ctx, card, content)
        rows = await conn.execute(
            select(DEVICES.c.device_library_id, DEVICES.c.push_token)
            .join(REGISTRATIONS, REGISTRATIONS.c.device_library_id == DEVICES.c.device_library_id)
            .where(REGISTRATIONS.c.serial_number == card.serial_number)
        )
        return card, {r.device_library_id: r.push_token for r in rows}

    async def _push(
        self, card: cards.CardView, tokens: dict[str, str]
    ) -> tuple[int, list[str], list[str]]:
        """(pushes sent, devices whose token is gone, devices to retry)."""
        apple = self.wallet.apple
        if apple is None or not tokens:
            return 0, [], []
        limit = asyncio.Semaphore(PUSHES_IN_FLIGHT_MAX)

        async def one(token: str) -> PushOutcome:
            async with limit:
                result = await apple.apns.push(token, card.pass_type_id)
            if result.outcome is not PushOutcome.SENT:
                log.info(
                    "APNs push for %s: %s %s",
                    card.serial_number,
                    result.outcome.value,
                    result.detail,
                )
            return result.outcome

        devices = list(tokens)
        outcomes = await asyncio.gather(*(one(tokens[d]) for d in devices))
        sent = sum(o is PushOutcome.SENT for o in outcomes)
        gone = [d for d, o in zip(devices, outcomes, strict=True) if o is PushOutcome.GONE]
        failed = [d for d, o in zip(devices, outcomes, strict=True) if o is PushOutcome.RETRY]
        return sent, gone, failed

    async def _google(self, card: cards.CardView) -> bool:
        google = self.wallet.google
        if google is None or not self.wallet.program.google_issuer_id:
            return True
        result = await google.client.patch_object(
            self.wallet.program.google_object_id(card.serial_number),
            dc.loyalty_fields(card.content),
        )
        if result.outcome is UpdateOutcome.RETRY:
            log.warning("Google Wallet update of %s failed: %s", card.serial_number, result.detail)
            return False
        return True  # UPDATED, or NOT_SAVED: the member never saved it; nothing to update

    async def _finish(self, item: Claimed, card: cards.CardView | None, *, ok: bool) -> None:
        now = self.ctx.clock.now()
        attempts = item.attempts + 1
        gave_up = not ok and attempts >= UPDATE_ATTEMPTS_MAX
        if gave_up:
            log.warning(
                "wallet update of members/%s given up after %d attempts", item.member_id, attempts
            )
        async with self.ctx.database.begin() as conn:
            if card is not None and (ok or gave_up):
                await conn.execute(
                    update(CARDS)
                    .where(
                        CARDS.c.member_id == card.member_id, CARDS.c.pushed_tag < card.update_tag
                    )
                    .values(pushed_tag=card.update_tag)
                )
            if ok or gave_up:
                removed = await conn.execute(
                    delete(CHANGES).where(
                        CHANGES.c.member_id == item.member_id, CHANGES.c.version == item.version
                    )
                )
                if removed.rowcount == 0:  # bumped meanwhile: go again now
                    await conn.execute(
                        update(CHANGES)
                        .where(CHANGES.c.member_id == item.member_id)
                        .values(claim_time=None, attempts=0)
                    )
            else:
                delay = min(RETRY_BASE_S * 2 ** (attempts - 1), RETRY_MAX_S)
                await conn.execute(
                    update(CHANGES)
                    .where(CHANGES.c.member_id == item.member_id)
                    .values(claim_time=now + timedelta(seconds=delay), attempts=attempts)
                )


async def forget_devices(conn: AsyncConnection, gone: dict[str, str]) -> None:
    """Drop devices whose push token APNs called dead, with all their registrations, unless the
    device registered again with a new token meanwhile."""
    stale = list(
        await conn.scalars(
            select(DEVICES.c.device_library_id).where(
                or_(
                    *(
                        and_(DEVICES.c.device_library_id == device, DEVICES.c.push_token == token)
                        for device, token in gone.items()
                    )
                )
            )
        )
    )
    if stale:
        await conn.execute(
            delete(REGISTRATIONS).where(REGISTRATIONS.c.device_library_id.in_(stale))
        )
        await conn.execute(delete(DEVICES).where(DEVICES.c.device_library_id.in_(stale)))


async def drop_unregistered_devices(conn: AsyncConnection, device_ids: list[str]) -> None:
    """Forget devices that no longer hold any of our passes."""
    await conn.execute(
        delete(DEVICES).where(
            DEVICES.c.device_library_id.in_(device_ids),
            ~exists().where(REGISTRATIONS.c.device_library_id == DEVICES.c.device_library_id),
        )
    )
