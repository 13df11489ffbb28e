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
from dataclasses import dataclass, field
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
CARDS_IN_FLIGHT_MAX = 8
"""Cards being pushed at once (their pushes share the APNs connection)."""
CARD_PUSH_INTERVAL_S = 2.0
"""A card that changed again while it was being pushed waits this long: a member whose balance
moves all the time gets a push every few seconds, not one per change."""
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
        self._google_class_ready = False

    async def claim(self) -> list[Claimed]:
        now = self.ctx.clock.now()
        due = or_(CHANGES.c.claim_time.is_(None), CHANGES.c.claim_time <= now)
        async with self.ctx.database.connect() as conn:  # an idle round takes no write lock
            if await conn.scalar(select(CHANGES.c.member_id).where(due).limit(1)) is None:
                return []
        async with self.ctx.database.begin() as conn:
            rows = (
                await conn.execute(
                    select(CHANGES.c.member_id, CHANGES.c.version, CHANGES.c.attempts)
                    .where(due)
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
        """One batch: rebuild the claimed cards in one transaction (one update tag, so the
        batch holds the tag counter once), push the changed ones, record the outcomes."""
        return await self.process(await self.claim())

    async def process(self, claimed: list[Claimed]) -> Round:
        """Bring these claimed marks' cards up to date and tell the devices and Google."""
        if not claimed:
            return Round()
        refreshed = await self._refresh_all(claimed)
        limit = asyncio.Semaphore(CARDS_IN_FLIGHT_MAX)

        async def tell(item: Claimed) -> Outcome:
            if item.member_id not in refreshed:
                return Outcome(ok=False)  # its rebuild failed: try again later
            card, tokens = refreshed[item.member_id]
            if card is None or card.update_tag <= card.pushed_tag:
                return Outcome(card=card)
            async with limit:
                try:
                    return await self._tell(card, tokens)
                except Exception:  # a bug must not strand the claimed mark
                    log.exception("wallet push of members/%s failed", item.member_id)
                    return Outcome(card=card, ok=False)

        outcomes = await asyncio.gather(*(tell(item) for item in claimed))
        await self._finish(list(zip(claimed, outcomes, strict=True)))
        return Round(
            len(claimed),
            sum(o.pushes for o in outcomes),
            sum(len(o.gone) for o in outcomes),
            sum(not o.ok for o in outcomes),
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

    async def _refresh_all(
        self, claimed: list[Claimed]
    ) -> dict[str, tuple[cards.CardView | None, dict[str, str]]]:
        """Rebuild each claimed card (a savepoint each: one bad card does not stop the batch)."""
        done: dict[str, tuple[cards.CardView | None, dict[str, str]]] = {}
        async with self.ctx.database.begin() as conn:
            tag: list[int] = []
            for item in claimed:
                try:
                    async with conn.begin_nested():
                        done[item.member_id] = await self._refresh(conn, item.member_id, tag)
                except Exception:
                    log.exception("wallet rebuild of members/%s failed", item.member_id)
        return done

    async def _refresh(
        self, conn: AsyncConnection, member_id: str, tag: list[int]
    ) -> tuple[cards.CardView | None, dict[str, str]]:
        """Rebuild the card (taking the batch's tag on the first change); its registered
        devices' push tokens by device id."""
        card = await cards.find(conn, member_id=member_id)
        member = await repo.find_member(conn, self.ctx.vault, id=member_id)
        if card is None or member is None:
            return None, {}
        content = await cards.current_content(conn, self.ctx, member)
        if content != card.content:
            if not tag:
                tag.append(await cards.next_tag(conn))
            card = await cards.store(conn, self.ctx, card, content, tag[0])
        rows = await conn.execute(
            select(DEVICES.c.device_library_id, DEVICES.c.push_token)
            .join(REGISTRATIONS, REGISTRATIONS.c.device_library_id == DEVICES.c.device_library_id)
            .where(REGISTRATIONS.c.serial_number == card.serial_number)
        )
        return card, {r.device_library_id: r.push_token for r in rows}

    async def _tell(self, card: cards.CardView, tokens: dict[str, str]) -> Outcome:
        """Push every device holding the card and update the Google object."""
        pushes, gone, failed = await self._push(card, tokens)
        google_ok = await self._google(card)
        if gone:
            async with self.ctx.database.begin() as conn:
                await forget_devices(conn, {d: tokens[d] for d in gone})
        return Outcome(card=card, ok=not failed and google_ok, pushes=pushes, gone=gone)

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
        """Patch the member's loyalty object; create it (and the program's class) if Google
        does not have it yet, so the card is current whenever the member saves it."""
        google = self.wallet.google
        if google is None:
            return True
        program = self.wallet.program
        object_id = program.google_object_id(card.serial_number)
        result = await google.client.patch_object(object_id, dc.loyalty_fields(card.content))
        if result.outcome is UpdateOutcome.NOT_SAVED:
            if not self._google_class_ready:
                made = await google.client.insert(
                    "loyaltyClass", dc.loyalty_class(program, cards.logo_url(self.wallet))
                )
                self._google_class_ready = made.outcome is not UpdateOutcome.RETRY
                result = made
            if self._google_class_ready:
                result = await google.client.insert(
                    "loyaltyObject", dc.loyalty_object(program, card.serial_number, card.content)
                )
                if result.outcome is UpdateOutcome.EXISTS:  # saved meanwhile: patch it
                    result = await google.client.patch_object(
                        object_id, dc.loyalty_fields(card.content)
                    )
        if result.outcome is UpdateOutcome.RETRY:
            log.warning("Google Wallet update of %s failed: %s", card.serial_number, result.detail)
            return False
        return True

    async def _finish(self, results: list[tuple[Claimed, Outcome]]) -> None:
        """Record a batch's outcomes. A mark goes only if it still has the version this round
        read (versions start at random, so a mark made again after a delete never matches an
        old claim); a bumped one waits CARD_PUSH_INTERVAL_S, a failed one backs off."""
        now = self.ctx.clock.now()
        async with self.ctx.database.begin() as conn:
            for item, outcome in results:
                attempts = item.attempts + 1
                gave_up = not outcome.ok and attempts >= UPDATE_ATTEMPTS_MAX
                if gave_up:
                    log.warning(
                        "wallet update of members/%s given up after %d attempts",
                        item.member_id,
                        attempts,
                    )
                card = outcome.card
                if card is not None and (outcome.ok or gave_up):
                    await conn.execute(
                        update(CARDS)
                        .where(
                            CARDS.c.member_id == card.member_id,
                            CARDS.c.pushed_tag < card.update_tag,
                        )
                        .values(pushed_tag=card.update_tag)
                    )
                mine = and_(
                    CHANGES.c.member_id == item.member_id, CHANGES.c.version == item.version
                )
                if not (outcome.ok or gave_up):
                    delay = min(RETRY_BASE_S * 2 ** (attempts - 1), RETRY_MAX_S)
                    await conn.execute(
                        update(CHANGES)
                        .where(mine)
                        .values(claim_time=now + timedelta(seconds=delay), attempts=attempts)
                    )
                elif (await conn.execute(delete(CHANGES).where(mine))).rowcount == 0:
                    # Changed again meanwhile: go again, but let the phones breathe first.
                    await conn.execute(
                        update(CHANGES)
                        .where(CHANGES.c.member_id == item.member_id)
                        .values(
                            claim_time=now + timedelta(seconds=CARD_PUSH_INTERVAL_S), attempts=0
                        )
                    )


@dataclass(frozen=True)
class Outcome:
    card: cards.CardView | None = None
    ok: bool = True
    pushes: int = 0
    gone: list[str] = field(default_factory=list)


async def forget_devices(conn: AsyncConnection, gone: dict[str, str]) -> None:
    """Drop devices whose push token APNs called dead, with all their registrations, unless the
    device registered again with a new token meanwhile. The device rows are locked first, so a
    concurrent registration either waits for this or is seen by it."""
    matches = or_(
        *(
            and_(DEVICES.c.device_library_id == device, DEVICES.c.push_token == token)
            for device, token in gone.items()
        )
    )
    stale = list(
        await conn.scalars(select(DEVICES.c.device_library_id).where(matches).with_for_update())
    )
    if stale:
        await conn.execute(
            delete(REGISTRATIONS).where(REGISTRATIONS.c.device_library_id.in_(stale))
        )
        await conn.execute(delete(DEVICES).where(DEVICES.c.device_library_id.in_(stale)))


async def drop_unregistered_devices(conn: AsyncConnection, device_ids: list[str]) -> None:
    """Forget devices that no longer hold any of our passes. The device rows are locked first:
    a registration racing this either commits before the check below (and keeps its device) or
    waits and then creates the device again."""
    await conn.execute(
        select(DEVICES.c.device_library_id)
        .where(DEVICES.c.device_library_id.in_(device_ids))
        .with_for_update()
    )
    await conn.execute(
        delete(DEVICES).where(
            DEVICES.c.device_library_id.in_(device_ids),
            ~exists().where(REGISTRATIONS.c.device_library_id == DEVICES.c.device_library_id),
        )
    )
