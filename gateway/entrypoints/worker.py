"""Background work: the outbox deliverer and the periodic sweeps.

Wallet card updates (APNs pushes, Google object patches) run here too, when a wallet is set up.
Runs inside `coalition serve` (unless --no-worker) or alone as `coalition worker`; any number of
workers may run against one database: every job is idempotent and claims its rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import aiohttp

from gateway.adapters.notify import Channel
from gateway.adapters.webhooks import WebhookSender
from gateway.domain.delivery import DeliveryPolicy
from gateway.service import donations, expiry, ledger, rewards
from gateway.service.context import AppContext
from gateway.service.delivery import Deliverer
from wallet.config import Wallet
from wallet.service.updates import CardUpdater

SWEEP_INTERVAL_S = 60.0
"""Vesting, hold release, voucher refunds and monthly pledges run this often."""
EXPIRY_INTERVAL_S = 3600.0
"""Points expiry and reminders run this often (they are due at day boundaries)."""

log = logging.getLogger("coalition.worker")


async def vest_due(ctx: AppContext) -> int:
    """Vest due earns and release expired holds, batch after batch."""
    total = 0
    while True:
        async with ctx.database.begin() as conn:
            settled = await ledger.settle_due(conn, ctx)
        total += settled
        if settled < ledger.SETTLE_BATCH_ROWS:
            return total


async def _every(
    interval_s: float, stop: asyncio.Event, job: Callable[[], Awaitable[object]], name: str
) -> None:
    while not stop.is_set():
        try:
            await job()
        except Exception:  # a database outage, say: the next round tries again
            log.exception("%s failed; next try in %.0f s", name, interval_s)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)


async def run(
    ctx: AppContext,
    channel: Channel,
    stop: asyncio.Event,
    policy: DeliveryPolicy | None = None,
    wallet: Wallet | None = None,
) -> None:
    async def sweep() -> None:
        await vest_due(ctx)
        await rewards.refund_expired(ctx)
        await donations.run_pledges(ctx)

    async with aiohttp.ClientSession() as session:
        deliverer = Deliverer(ctx, WebhookSender(session), channel, policy)
        jobs = [] if wallet is None else [CardUpdater(ctx, wallet).run(stop)]
        await asyncio.gather(
            *jobs,
            deliverer.run(stop),
            _every(SWEEP_INTERVAL_S, stop, sweep, "sweep"),
            _every(EXPIRY_INTERVAL_S, stop, lambda: expiry.run(ctx), "points expiry"),
        )
