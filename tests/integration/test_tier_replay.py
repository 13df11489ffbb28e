"""Replaying a member's stored qualifying history gives the tier the live system reached.

The live system decides step by step (upgrades inside earns, reviews by the sweeper or lazily at
the next earn); gateway.domain.tiers.replay decides from the history alone. Random but seeded
histories over three years, with reversals, late and missing sweeper runs, must agree.
"""

from __future__ import annotations

import random
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from gateway.domain import tiers as dt
from gateway.domain.members import ContactDetails
from gateway.domain.partners import PartnerSettings, PartnerType
from gateway.service import earning, ledger, outbox, tiers
from gateway.service import members as members_service
from gateway.service import partners as partner_service
from gateway.service.context import AppContext

STEPS = 150
"""About four years: enough for upgrades, reviews and soft landings."""


async def _history(ctx: AppContext, member_id: str) -> list[dt.Qualifying]:
    async with ctx.database.connect() as conn:
        rows = await conn.execute(
            select(tiers.QUALIFYING).where(tiers.QUALIFYING.c.member_id == member_id)
        )
        return [dt.Qualifying(r.points, r.earn_time, r.record_time, r.id) for r in rows]


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
async def test_live_tier_equals_replay(ctx: AppContext, seed: int) -> None:
    rng = random.Random(seed)
    async with ctx.database.begin() as conn:
        hotel = await partner_service.create(
            conn,
            ctx,
            "replay-hotel",
            PartnerType.HOTEL,
            PartnerSettings("Replay Hotel", base_earn_rate=Decimal(1)),
        )
        member = await members_service.enroll(conn, ctx, ContactDetails("Replay Member"))
    earns: list[str] = []
    for step in range(STEPS):
        ctx.clock.advance(timedelta(days=rng.randint(1, 20), minutes=rng.randint(0, 600)))
        roll = rng.random()
        async with ctx.database.begin() as conn:
            if roll < 0.5 * (1 + (step // 40) % 2):  # busy and quiet years alternate
                stay = rng.randint(100_00, 1500_00)
                txn, _ = await earning.earn(
                    conn, ctx, hotel, member.id, earning.Purchase(stay, "USD"), f"F{step}"
                )
                earns.append(txn.name)
            elif roll < 0.85 and earns:
                target = rng.choice(earns)
                original = await ledger._load(conn, target, None)
                left = abs(original[1].points) - original[1].reversed_points
                if left > 0:
                    part = rng.choice([0, max(left // 3, 1)])  # all, or a third
                    await ledger.reverse(conn, ctx, None, target, part, "refund")
        if roll >= 0.85 and rng.random() < 0.5:
            await tiers.run_reviews(ctx)  # the sweeper, when it happens to run

    async with ctx.database.connect() as conn:
        held = await tiers.standing(conn, ctx, member.id)
        events = await outbox.events(conn, subject=member.name, type_=outbox.TIER_CHANGED)
    tier, review_time, changes = dt.replay(
        ctx.ladder, await _history(ctx, member.id), ctx.clock.now()
    )
    pending_review = held.review_time is not None and held.review_time <= ctx.clock.now()
    if pending_review:
        # The sweeper has not come by since the review fell due: the replay already applied it.
        await tiers.run_reviews(ctx)
        async with ctx.database.connect() as conn:
            held = await tiers.standing(conn, ctx, member.id)
            events = await outbox.events(conn, subject=member.name, type_=outbox.TIER_CHANGED)
    assert (held.tier, held.review_time) == (tier, review_time)
    assert [(e.payload["previous_tier"], e.payload["tier"]) for e in events] == [
        (c.previous.code, c.tier.code) for c in changes
    ]
    assert {c.reason for c in changes} <= {"QUALIFIED", "REVIEW"}
