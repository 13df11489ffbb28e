"""The outbox deliverer against a real webhook receiver and a file notification channel.

Time travels with the FixedClock: retries are due when the clock says so, so every test is
deterministic and none of them sleeps for a backoff.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy import select, update

from gateway.adapters import repository as repo
from gateway.adapters.notify import FileChannel
from gateway.adapters.webhooks import WebhookSender
from gateway.domain.delivery import DeliveryPolicy, DeliveryState
from gateway.domain.members import ContactDetails
from gateway.domain.partners import PartnerSettings, PartnerType
from gateway.domain.rewards import RewardDraft, RewardKind
from gateway.service import delivery, earning, outbox, rewards
from gateway.service import members as members_service
from gateway.service import partners as partner_service
from gateway.service.context import AppContext
from partners import webhooks

POLICY = DeliveryPolicy(attempts_max=5, backoff_base_s=10, backoff_max_s=60, lease_s=30)


@dataclass
class Receiver:
    """A partner's webhook endpoint that fails the first `failures` requests."""

    failures: int = 0
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append((dict(request.headers), await request.read()))
        if len(self.received) <= self.failures:
            return web.Response(status=503, text="try later")
        return web.Response(status=204)

    @property
    def event_ids(self) -> list[str]:
        return [headers[webhooks.EVENT_ID_HEADER] for headers, _ in self.received]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    hook = Receiver()
    app = web.Application()
    app.router.add_post("/hook", hook.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    hook.url = f"http://127.0.0.1:{port}/hook"
    yield hook
    await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def _deliverer(
    ctx: AppContext, session: aiohttp.ClientSession, tmp_path: Path, policy: DeliveryPolicy = POLICY
) -> delivery.Deliverer:
    return delivery.Deliverer(
        ctx, WebhookSender(session, timeout_s=5), FileChannel(tmp_path / "mail.jsonl"), policy
    )


async def _partner(ctx: AppContext, partner_id: str, url: str) -> None:
    async with ctx.database.begin() as conn:
        await partner_service.create(
            conn,
            ctx,
            partner_id,
            PartnerType.HOTEL,
            PartnerSettings(partner_id.title(), base_earn_rate=Decimal(10), webhook_url=url),
        )


async def _emit(ctx: AppContext, partner_ids: tuple[str, ...], member_id: str | None = None) -> str:
    async with ctx.database.begin() as conn:
        return await outbox.emit(
            conn,
            ctx,
            "VoucherConsumed",
            "members/m1",
            {"code": "ABCD"},
            member_id=member_id,
            partner_ids=partner_ids,
        )


async def _states(ctx: AppContext) -> list[tuple[str, str, int]]:
    async with ctx.database.connect() as conn:
        rows = await conn.execute(
            select(
                outbox.DELIVERIES.c.destination,
                outbox.DELIVERIES.c.state,
                outbox.DELIVERIES.c.attempts,
            ).order_by(outbox.DELIVERIES.c.id)
        )
        return [(r.destination, r.state, r.attempts) for r in rows]


async def _drain(deliverer: delivery.Deliverer, ctx: AppContext, rounds: int) -> None:
    """Run the deliverer, moving the clock past any backoff between rounds."""
    for _ in range(rounds):
        await deliverer.run_once()
        ctx.clock.advance(timedelta(seconds=POLICY.backoff_max_s + 1))


async def test_webhook_is_signed_with_the_partners_secret(
    ctx: AppContext, receiver: Receiver, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    await _partner(ctx, "hotel", receiver.url)
    event_id = await _emit(ctx, ("hotel",))

    assert await _deliverer(ctx, session, tmp_path).run_once() == 1

    ((headers, body),) = receiver.received
    secret = ctx.vault.webhook_secret("hotel", 1).encode()
    now = int(ctx.clock.now().timestamp())
    assert webhooks.verify(secret, headers[webhooks.SIGNATURE_HEADER], body, now=now) == now
    assert headers[webhooks.EVENT_ID_HEADER] == event_id
    assert headers[webhooks.EVENT_TYPE_HEADER] == "VoucherConsumed"
    document = json.loads(body)
    assert document["id"] == event_id and document["data"] == {"code": "ABCD"}
    with pytest.raises(webhooks.WebhookSignatureError):  # another partner's secret fails
        webhooks.verify(
            ctx.vault.webhook_secret("other", 1).encode(),
            headers[webhooks.SIGNATURE_HEADER],
            body,
            now=now,
        )
    assert await _states(ctx) == [("partner:hotel", "DELIVERED", 1)]


async def test_a_redeemed_reward_reaches_the_partners_webhook(
    ctx: AppContext, receiver: Receiver, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    await _partner(ctx, "hotel", receiver.url)
    async with ctx.database.begin() as conn:
        hotel = await partner_service.get(conn, "hotel")
        member = await members_service.enroll(
            conn, ctx, ContactDetails("Ada Lovelace", email="ada@example.com")
        )
        await earning.earn(conn, ctx, hotel, member.id, earning.Purchase(500_00, "USD"), "stay")
        reward = await rewards.create(
            conn,
            ctx,
            "hotel",
            RewardDraft(
                "Free night", "", RewardKind.FREE_NIGHT, 1_000, 5, None, None, timedelta(days=30)
            ),
        )
        voucher, _ = await rewards.redeem(conn, ctx, member.id, reward.name)

    await _deliverer(ctx, session, tmp_path).run_once()

    ((headers, body),) = receiver.received
    assert headers[webhooks.EVENT_TYPE_HEADER] == rewards.VOUCHER_ISSUED
    data = json.loads(body)["data"]
    assert data["reward"] == reward.name and data["member"] == member.name
    assert data["code"].replace("-", "") == voucher.code
    mail = [json.loads(line) for line in (tmp_path / "mail.jsonl").read_text().splitlines()]
    # A batch is sent concurrently: in no particular order.
    assert sorted(m["subject"] for m in mail) == ["You reached Silver", "Your voucher: Free night"]
    assert {m["to"] for m in mail} == {"ada@example.com"}


async def test_three_failures_then_success_delivers_exactly_once_more(
    ctx: AppContext, receiver: Receiver, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    receiver.failures = 3
    await _partner(ctx, "hotel", receiver.url)
    event_id = await _emit(ctx, ("hotel",))
    deliverer = _deliverer(ctx, session, tmp_path)

    await deliverer.run_once()
    await deliverer.run_once()  # not due yet: the backoff holds it back
    assert len(receiver.received) == 1
    await _drain(deliverer, ctx, rounds=6)

    assert receiver.event_ids == [event_id] * 4  # three 503s, one success, nothing after
    assert await _states(ctx) == [("partner:hotel", "DELIVERED", 4)]


async def test_backoff_grows_and_has_jitter() -> None:
    waits = [POLICY.retry_after(n, uniform=lambda: 0.0).total_seconds() for n in range(1, 6)]
    assert waits == [5, 10, 20, 30, 30]  # half of base * 2^(n-1), capped at 60 / 2
    top = POLICY.retry_after(2, uniform=lambda: 1.0).total_seconds()
    assert top == 20  # the random half adds up to the other half


async def test_exhausted_attempts_are_dead_lettered_and_can_be_retried(
    ctx: AppContext, receiver: Receiver, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    receiver.failures = 1_000
    await _partner(ctx, "hotel", receiver.url)
    await _emit(ctx, ("hotel",))
    deliverer = _deliverer(ctx, session, tmp_path)

    await _drain(deliverer, ctx, rounds=POLICY.attempts_max + 3)

    assert len(receiver.received) == POLICY.attempts_max
    assert await _states(ctx) == [("partner:hotel", "DEAD", POLICY.attempts_max)]
    async with ctx.database.connect() as conn:
        (dead,) = await delivery.list_deliveries(conn, DeliveryState.DEAD, 10)
    assert dead.last_error.startswith("HTTP 503")

    receiver.failures = 0
    async with ctx.database.begin() as conn:
        assert await delivery.retry(conn, ctx, None) == 1
    await deliverer.run_once()
    assert await _states(ctx) == [("partner:hotel", "DELIVERED", 1)]


async def test_a_worker_that_dies_after_claiming_loses_nothing(
    ctx: AppContext, receiver: Receiver, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    await _partner(ctx, "hotel", receiver.url)
    event_ids = [await _emit(ctx, ("hotel",)) for _ in range(3)]
    crashed = _deliverer(ctx, session, tmp_path)
    assert len(await crashed.claim()) == 3  # ... and the process is killed before sending

    restarted = _deliverer(ctx, session, tmp_path)
    assert await restarted.run_once() == 0  # the lease still protects the claimed rows
    ctx.clock.advance(timedelta(seconds=POLICY.lease_s + 1))
    assert await restarted.run_once() == 3

    assert sorted(receiver.event_ids) == sorted(event_ids)
    assert {state for _, state, _ in await _states(ctx)} == {"DELIVERED"}


async def test_a_stale_worker_cannot_overwrite_a_newer_outcome(
    ctx: AppContext, receiver: Receiver, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    await _partner(ctx, "hotel", receiver.url)
    await _emit(ctx, ("hotel",))
    slow = _deliverer(ctx, session, tmp_path)
    (claimed,) = await slow.claim()
    ctx.clock.advance(timedelta(seconds=POLICY.lease_s + 1))
    await _deliverer(ctx, session, tmp_path).run_once()  # the lease ran out: another worker

    await slow._record(claimed, delivery.Outcome(DeliveryState.PENDING, "late failure"))

    assert await _states(ctx) == [("partner:hotel", "DELIVERED", 2)]


async def test_member_notifications_go_to_the_channel_or_are_skipped(
    ctx: AppContext, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async with ctx.database.begin() as conn:
        ada = await members_service.enroll(
            conn, ctx, ContactDetails("Ada Lovelace", email="ada@example.com")
        )
        anon = await members_service.enroll(conn, ctx, ContactDetails("No Mail"))
        for member in (ada, anon):
            await outbox.emit(
                conn,
                ctx,
                "PointsExpiring",
                member.name,
                {"member": member.name, "points": 1500, "expire_time": "2027-01-06T00:00:00+00:00"},
                member_id=member.id,
            )
        await outbox.emit(conn, ctx, "VoucherConsumed", ada.name, {}, member_id=ada.id)

    await _deliverer(ctx, session, tmp_path).run_once()

    (mail,) = [json.loads(line) for line in (tmp_path / "mail.jsonl").read_text().splitlines()]
    assert mail["to"] == "ada@example.com" and "1,500 points" in mail["subject"]
    assert [state for _, state, _ in await _states(ctx)] == ["DELIVERED", "SKIPPED", "SKIPPED"]
    async with ctx.database.connect() as conn:
        skipped = await delivery.list_deliveries(conn, DeliveryState.SKIPPED, 10)
    assert {s.last_error for s in skipped} == {
        "the member has no email address",
        "VoucherConsumed is not sent to members",
    }


async def test_events_reach_only_partners_with_a_webhook(
    ctx: AppContext, receiver: Receiver
) -> None:
    await _partner(ctx, "hotel", receiver.url)
    await _partner(ctx, "quiet", "")
    await _emit(ctx, ("hotel", "quiet"))
    assert await _states(ctx) == [("partner:hotel", "PENDING", 0)]


async def test_a_removed_webhook_skips_its_pending_deliveries(
    ctx: AppContext, receiver: Receiver, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    await _partner(ctx, "hotel", receiver.url)
    await _emit(ctx, ("hotel",))
    async with ctx.database.begin() as conn:
        await conn.execute(update(repo.PARTNERS).values(webhook_url=""))
    await _deliverer(ctx, session, tmp_path).run_once()
    assert receiver.received == []
    assert await _states(ctx) == [("partner:hotel", "SKIPPED", 1)]


async def test_the_worker_loop_delivers_and_stops(
    ctx: AppContext, receiver: Receiver, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    await _partner(ctx, "hotel", receiver.url)
    await _emit(ctx, ("hotel",))
    stop = asyncio.Event()
    task = asyncio.create_task(_deliverer(ctx, session, tmp_path).run(stop))
    for _ in range(100):
        if receiver.received:
            break
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert len(receiver.received) == 1


@pytest.mark.postgres
async def test_concurrent_workers_never_claim_the_same_delivery(
    ctx: AppContext, receiver: Receiver, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    await _partner(ctx, "hotel", receiver.url)
    for _ in range(40):
        await _emit(ctx, ("hotel",))
    workers = [_deliverer(ctx, session, tmp_path, DeliveryPolicy(batch=7)) for _ in range(6)]

    claims = await asyncio.gather(*(w.claim() for w in workers))

    ids = [c.id for batch in claims for c in batch]
    assert len(ids) == len(set(ids)) == 40
