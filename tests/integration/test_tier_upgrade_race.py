"""Two earns for one member at once, the first crossing a tier threshold (PostgreSQL only).

The second earn waits on the member's lock while the first upgrades the tier. When the lock is
granted it must read the tier the first one committed: PostgreSQL re-checks only the rows a
FOR UPDATE locked, so a tier read beside the lock (not under it) came back stale and the
upgrade guard failed (an AssertionError: INTERNAL to the partner). Found by bench/earn.py.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from gateway.domain.members import ContactDetails
from gateway.domain.partners import PartnerSettings, PartnerType
from gateway.service import earning, tiers
from gateway.service import members as members_service
from gateway.service import partners as partner_service
from gateway.service.context import AppContext

pytestmark = pytest.mark.postgres

LOCK_WAIT_S = 0.3
"""Long enough for the second earn to be queued on the member's lock."""


async def test_an_earn_queued_behind_an_upgrade_sees_the_new_tier(ctx: AppContext) -> None:
    async with ctx.database.begin() as conn:
        hotel = await partner_service.create(
            conn,
            ctx,
            "race-hotel",
            PartnerType.HOTEL,
            PartnerSettings("Race Hotel", base_earn_rate=Decimal(10)),
        )
        member = await members_service.enroll(conn, ctx, ContactDetails("Racer"))
    silver = ctx.ladder.get("SILVER")
    crossing = earning.Purchase(silver.threshold_points * 100 // 10 + 100, "USD")  # minor units
    small = earning.Purchase(10_00, "USD")

    async def second() -> str:
        async with ctx.database.begin() as conn:
            _, status = await earning.earn(conn, ctx, hotel, member.id, small, "second")
            return status.tier.code

    async with ctx.database.begin() as conn:
        _, status = await earning.earn(conn, ctx, hotel, member.id, crossing, "first")
        assert status.tier.code == "SILVER"
        queued = asyncio.create_task(second())
        await asyncio.sleep(LOCK_WAIT_S)
        assert not queued.done(), "the second earn must wait for the member's lock"
    assert await queued == "SILVER"
    async with ctx.database.connect() as conn:
        standing = await tiers.standing(conn, ctx, member.id)
    assert standing.tier.code == "SILVER"
