"""Wallet card marks (gateway.service.cards) and the card updater that clears them
(wallet.service.updates), through the service functions: which changes mark a card, how a burst
coalesces into one versioned row, and when the updater removes, keeps or retries it.

The APNs and Google servers are the local fakes of tests/wallet_support.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select
from wallet_support import WalletRig, wallet_rig

from gateway.clock import FixedClock
from gateway.domain import members as dm
from gateway.domain.errors import FailedPrecondition
from gateway.domain.members import ContactDetails
from gateway.domain.partners import Partner, PartnerSettings, PartnerType
from gateway.service import earning, ledger, tiers
from gateway.service import members as members_service
from gateway.service import partners as partner_service
from gateway.service.cards import CARDS, CHANGES
from gateway.service.context import AppContext
from wallet.service import cards as wallet_cards
from wallet.service import passkit
from wallet.service.updates import (
    CARD_PUSH_INTERVAL_S,
    RETRY_BASE_S,
    RETRY_MAX_S,
    UPDATE_ATTEMPTS_MAX,
    CardUpdater,
    Round,
)

WEB_URL = "https://wallet.example.test"
PUSH_TOKEN = "c0ffee0123456789"
DEVICE = "marks-device-0001"
WAIT_S = 10.0


@pytest.fixture
async def rig(ctx: AppContext, tmp_path: Any) -> AsyncIterator[WalletRig]:
    async for made in wallet_rig(tmp_path, WEB_URL):
        yield made


@pytest.fixture
async def hotel(ctx: AppContext) -> Partner:
    async with ctx.database.begin() as conn:
        return await partner_service.create(
            conn,
            ctx,
            "marks-hotel",
            PartnerType.HOTEL,
            PartnerSettings("Marks Hotel", base_earn_rate=Decimal(10)),
        )


# -- helpers ---------------------------------------------------------------------------------


async def enroll(ctx: AppContext, name: str = "Ada Lovelace") -> dm.Member:
    async with ctx.database.begin() as conn:
        return await members_service.enroll(conn, ctx, ContactDetails(name))


async def issue(ctx: AppContext, rig: WalletRig, member: dm.Member) -> wallet_cards.CardView:
    async with ctx.database.begin() as conn:
        return await wallet_cards.issue(conn, ctx, rig.wallet, member)


async def earn(ctx: AppContext, hotel: Partner, member: dm.Member, usd: int) -> None:
    """An earn for a stay of `usd` dollars: 10 points a dollar at the base tier."""
    async with ctx.database.begin() as conn:
        await earning.earn(conn, ctx, hotel, member.id, earning.Purchase(usd * 100, "USD"))


async def redeem(ctx: AppContext, hotel: Partner, member: dm.Member, points: int) -> None:
    async with ctx.database.begin() as conn:
        await ledger.redeem(conn, ctx, hotel.id, member.id, points)


async def rename(ctx: AppContext, member: dm.Member, mask: list[str], **fields: Any) -> None:
    async with ctx.database.begin() as conn:
        await members_service.update(
            conn, ctx, member.name, ContactDetails(fields.pop("display_name", ""), **fields), mask
        )


async def register(ctx: AppContext, rig: WalletRig, card: wallet_cards.CardView) -> None:
    token = ctx.vault.pass_token(card.serial_number)
    async with ctx.database.begin() as conn:
        created = await passkit.register(
            conn,
            ctx,
            DEVICE,
            rig.wallet.program.pass_type_id,
            card.serial_number,
            f"ApplePass {token}",
            json.dumps({"pushToken": PUSH_TOKEN}).encode(),
        )
    assert created


async def mark_of(ctx: AppContext, member: dm.Member) -> Any:
    """The member's wallet_changes row, or None."""
    async with ctx.database.connect() as conn:
        return (await conn.execute(select(CHANGES).where(CHANGES.c.member_id == member.id))).first()


async def marks(ctx: AppContext) -> int:
    async with ctx.database.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(CHANGES)) or 0)


async def card_row(ctx: AppContext, member: dm.Member) -> Any:
    async with ctx.database.connect() as conn:
        return (await conn.execute(select(CARDS).where(CARDS.c.member_id == member.id))).one()


async def carded(
    ctx: AppContext, rig: WalletRig, hotel: Partner, *, device: bool = True
) -> tuple[dm.Member, wallet_cards.CardView]:
    """A member with 1,000 points and a card (registered on a device), and no mark yet."""
    member = await enroll(ctx)
    await earn(ctx, hotel, member, 100)
    card = await issue(ctx, rig, member)
    if device:
        await register(ctx, rig, card)
    # A new card is marked so the updater creates its Google object; settle that first.
    assert await CardUpdater(ctx, rig.wallet).run_once() == Round(cards=1, pushes=int(device))
    assert await mark_of(ctx, member) is None
    assert object_id(rig, card) in rig.google.inserted["loyaltyObject"]
    rig.google.patches.clear()
    rig.apns.pushes.clear()
    return member, card


def advance(ctx: AppContext, delta: timedelta) -> None:
    assert isinstance(ctx.clock, FixedClock)
    ctx.clock.advance(delta)


def object_id(rig: WalletRig, card: wallet_cards.CardView) -> str:
    return rig.wallet.program.google_object_id(card.serial_number)


# -- marks -----------------------------------------------------------------------------------


async def test_earns_and_redeems_mark_a_carded_member_and_bump_the_version(
    ctx: AppContext, rig: WalletRig, hotel: Partner
) -> None:
    member, _ = await carded(ctx, rig, hotel, device=False)
    plain = await enroll(ctx, "Grace Hopper")

    await earn(ctx, hotel, member, 50)
    await earn(ctx, hotel, plain, 50)
    first = await mark_of(ctx, member)
    assert (first.attempts, first.claim_time) == (0, None)
    assert await mark_of(ctx, plain) is None

    await earn(ctx, hotel, member, 20)
    assert (await mark_of(ctx, member)).version == first.version + 1
    await redeem(ctx, hotel, member, 300)
    assert (await mark_of(ctx, member)).version == first.version + 2
    await redeem(ctx, hotel, plain, 300)
    assert await mark_of(ctx, plain) is None

    # A refused redemption changes nothing and marks nothing.
    with pytest.raises(FailedPrecondition) as refused:
        await redeem(ctx, hotel, member, 1_000_000)
    assert refused.value.reason == "INSUFFICIENT_POINTS"
    assert (await mark_of(ctx, member)).version == first.version + 2
    assert await marks(ctx) == 1  # a burst is one row per member, not one per change


async def test_a_tier_change_marks_the_card(
    ctx: AppContext, rig: WalletRig, hotel: Partner
) -> None:
    member = await enroll(ctx)
    plain = await enroll(ctx, "Grace Hopper")
    card = await issue(ctx, rig, member)
    issued = (await mark_of(ctx, member)).version  # a new card is marked (its Google object)
    await earn(ctx, hotel, member, 600)  # 6,000 points: Silver at once
    await earn(ctx, hotel, plain, 600)
    async with ctx.database.connect() as conn:
        assert (await tiers.standing(conn, ctx, member.id)).tier.code == "SILVER"
        assert (await tiers.standing(conn, ctx, plain.id)).tier.code == "SILVER"
    # The earn marked the card, and so did the upgrade, in the same transaction.
    assert (await mark_of(ctx, member)).version == issued + 2
    assert (await CardUpdater(ctx, rig.wallet).run_once()).cards == 1
    assert await mark_of(ctx, member) is None

    # Two yearly reviews later (kept at the first, one step down at the second), with no
    # balance change at all: only the tier moved.
    advance(ctx, timedelta(days=25 * 31))
    reviewed, changed = await tiers.run_reviews(ctx)
    assert (reviewed, changed) == (2, 2)
    mark = await mark_of(ctx, member)
    assert mark is not None and mark.attempts == 0
    assert await mark_of(ctx, plain) is None
    assert await marks(ctx) == 1

    done = await CardUpdater(ctx, rig.wallet).run_once()
    assert done == Round(cards=1)
    # First the object was created (Silver), then patched after the review (Blue).
    created = rig.google.inserted["loyaltyObject"][object_id(rig, card)]
    assert created["textModulesData"][0]["body"] == "Silver"
    [_, (_, patch)] = rig.google.patches
    assert patch["textModulesData"][0]["body"] == "Blue"
    assert patch["loyaltyPoints"]["balance"] == {"int": 6_000}
    assert await mark_of(ctx, member) is None


async def test_a_name_or_locale_change_marks_the_card_and_an_email_change_does_not(
    ctx: AppContext, rig: WalletRig, hotel: Partner
) -> None:
    member, _ = await carded(ctx, rig, hotel, device=False)
    plain = await enroll(ctx, "Grace Hopper")

    await rename(ctx, member, ["email"], email="ada@example.org")
    assert await mark_of(ctx, member) is None
    await rename(ctx, member, ["display_name"], display_name="Ada King")
    first = (await mark_of(ctx, member)).version
    await rename(ctx, member, ["locale"], locale="fr-FR")
    assert (await mark_of(ctx, member)).version == first + 1
    await rename(ctx, member, ["display_name"], display_name="Ada King")  # no change
    assert (await mark_of(ctx, member)).version == first + 1

    await rename(ctx, plain, ["display_name"], display_name="Rear Admiral Hopper")
    assert await mark_of(ctx, plain) is None

    done = await CardUpdater(ctx, rig.wallet).run_once()
    assert done == Round(cards=1)  # no device; the Google object is patched
    row = await card_row(ctx, member)
    assert '"member_name":"Ada King"' in row.content and '"locale":"fr-FR"' in row.content
    assert row.pushed_tag == row.update_tag


# -- the updater -----------------------------------------------------------------------------


async def test_the_updater_pushes_once_and_removes_the_mark(
    ctx: AppContext, rig: WalletRig, hotel: Partner
) -> None:
    member, _ = await carded(ctx, rig, hotel)
    for usd in (10, 20, 30):  # a burst: one mark, one push
        await earn(ctx, hotel, member, usd)
    assert await marks(ctx) == 1
    before = await card_row(ctx, member)
    assert before.pushed_tag == before.update_tag  # the stored content is still the issued one

    done = await CardUpdater(ctx, rig.wallet).run_once()
    assert done == Round(cards=1, pushes=1)
    assert [p.token for p in rig.apns.pushes] == [PUSH_TOKEN]
    assert await mark_of(ctx, member) is None
    after = await card_row(ctx, member)
    assert after.update_tag > before.update_tag
    assert after.pushed_tag == after.update_tag
    assert after.update_time > before.update_time
    [(_, patch)] = rig.google.patches
    assert patch["loyaltyPoints"]["balance"] == {"int": 1_600}

    assert await CardUpdater(ctx, rig.wallet).run_once() == Round()
    assert len(rig.apns.pushes) == 1


async def test_a_mark_whose_card_did_not_change_is_removed_without_a_push(
    ctx: AppContext, rig: WalletRig, hotel: Partner
) -> None:
    member, _ = await carded(ctx, rig, hotel)
    await rename(ctx, member, ["display_name"], display_name="Ada King")
    await rename(ctx, member, ["display_name"], display_name="Ada Lovelace")  # and back
    assert await mark_of(ctx, member) is not None
    assert await CardUpdater(ctx, rig.wallet).run_once() == Round(cards=1)
    assert rig.apns.pushes == [] and rig.google.patches == []
    assert await mark_of(ctx, member) is None


async def test_apns_500_keeps_the_mark_and_retries_later(
    ctx: AppContext, rig: WalletRig, hotel: Partner
) -> None:
    member, _ = await carded(ctx, rig, hotel)
    await earn(ctx, hotel, member, 50)
    rig.apns.fail.add(PUSH_TOKEN)
    updater = CardUpdater(ctx, rig.wallet)

    assert await updater.run_once() == Round(cards=1, failed=1)
    mark = await mark_of(ctx, member)
    assert mark.attempts == 1
    assert mark.claim_time == ctx.clock.now() + timedelta(seconds=RETRY_BASE_S)
    row = await card_row(ctx, member)
    assert row.pushed_tag < row.update_tag  # the devices were not told yet
    assert await updater.run_once() == Round()  # backing off: not claimed again yet
    assert len(rig.apns.pushes) == 1

    advance(ctx, timedelta(seconds=RETRY_BASE_S))
    assert await updater.run_once() == Round(cards=1, failed=1)
    mark = await mark_of(ctx, member)
    assert mark.attempts == 2
    assert mark.claim_time == ctx.clock.now() + timedelta(seconds=2 * RETRY_BASE_S)

    rig.apns.fail.clear()
    advance(ctx, timedelta(seconds=2 * RETRY_BASE_S))
    assert await updater.run_once() == Round(cards=1, pushes=1)
    assert await mark_of(ctx, member) is None
    row = await card_row(ctx, member)
    assert row.pushed_tag == row.update_tag
    assert [p.token for p in rig.apns.pushes] == [PUSH_TOKEN] * 3
    async with ctx.database.connect() as conn:
        assert (await wallet_cards.get(conn, member.id)).registered_devices == 1


async def test_the_updater_gives_up_after_the_maximum_attempts(
    ctx: AppContext, rig: WalletRig, hotel: Partner, caplog: pytest.LogCaptureFixture
) -> None:
    member, _ = await carded(ctx, rig, hotel)
    await earn(ctx, hotel, member, 50)
    rig.apns.fail.add(PUSH_TOKEN)
    updater = CardUpdater(ctx, rig.wallet)
    with caplog.at_level(logging.INFO, logger="coalition.wallet"):
        for attempt in range(1, UPDATE_ATTEMPTS_MAX + 1):
            assert await updater.run_once() == Round(cards=1, failed=1), attempt
            mark = await mark_of(ctx, member)
            if attempt == UPDATE_ATTEMPTS_MAX:
                assert mark is None
                break
            assert mark.attempts == attempt
            delay = min(RETRY_BASE_S * 2 ** (attempt - 1), RETRY_MAX_S)
            assert mark.claim_time == ctx.clock.now() + timedelta(seconds=delay)
            advance(ctx, timedelta(seconds=delay))
    assert len(rig.apns.pushes) == UPDATE_ATTEMPTS_MAX
    assert f"given up after {UPDATE_ATTEMPTS_MAX} attempts" in caplog.text
    row = await card_row(ctx, member)
    assert row.pushed_tag == row.update_tag  # given up: not pushed again for this content
    assert await updater.run_once() == Round()

    # The next change starts afresh.
    rig.apns.fail.clear()
    await earn(ctx, hotel, member, 5)
    assert (await mark_of(ctx, member)).attempts == 0
    assert await updater.run_once() == Round(cards=1, pushes=1)
    assert await mark_of(ctx, member) is None


async def test_a_mark_bumped_while_its_push_is_in_flight_is_processed_again(
    ctx: AppContext, rig: WalletRig, hotel: Partner
) -> None:
    member, _ = await carded(ctx, rig, hotel)
    await earn(ctx, hotel, member, 50)  # 1,500
    rig.apns.hold = asyncio.Event()
    rig.apns.arrived.clear()
    updater = CardUpdater(ctx, rig.wallet)
    first_round = asyncio.create_task(updater.run_once())
    try:
        await asyncio.wait_for(rig.apns.arrived.wait(), WAIT_S)
        await earn(ctx, hotel, member, 70)  # 2,200, after the card was rebuilt for this push
    finally:
        rig.apns.hold.set()
    assert await asyncio.wait_for(first_round, WAIT_S) == Round(cards=1, pushes=1)
    mark = await mark_of(ctx, member)
    assert mark is not None, "the bump during the push was lost"
    # Again, after a breather for the phones rather than the whole lease.
    assert mark.claim_time == ctx.clock.now() + timedelta(seconds=CARD_PUSH_INTERVAL_S)
    assert mark.attempts == 0
    [(_, patch)] = rig.google.patches
    assert patch["loyaltyPoints"]["balance"] == {"int": 1_500}

    rig.apns.hold = None
    assert await updater.run_once() == Round()
    advance(ctx, timedelta(seconds=CARD_PUSH_INTERVAL_S))
    assert await updater.run_once() == Round(cards=1, pushes=1)
    assert await mark_of(ctx, member) is None
    assert len(rig.apns.pushes) == 2
    assert rig.google.patches[-1][1]["loyaltyPoints"]["balance"] == {"int": 2_200}
    async with ctx.database.connect() as conn:
        assert (await wallet_cards.get(conn, member.id)).content.balance_points == 2_200


async def test_a_mark_bumped_after_it_was_claimed_survives_the_update(
    ctx: AppContext, rig: WalletRig, hotel: Partner
) -> None:
    member, _ = await carded(ctx, rig, hotel)
    await earn(ctx, hotel, member, 50)
    updater = CardUpdater(ctx, rig.wallet)
    [claimed] = await updater.claim()
    assert (await mark_of(ctx, member)).claim_time is not None
    await earn(ctx, hotel, member, 5)  # bumped between the claim and the update
    assert await updater.process([claimed]) == Round(cards=1, pushes=1)
    mark = await mark_of(ctx, member)
    assert (mark.version, mark.attempts) == (claimed.version + 1, 0)
    # The card was rebuilt after the bump: nothing new to push, the mark goes.
    advance(ctx, timedelta(seconds=CARD_PUSH_INTERVAL_S))
    assert await updater.run_once() == Round(cards=1)
    assert await mark_of(ctx, member) is None


async def test_google_404_creates_the_object_and_google_503_is_retried(
    ctx: AppContext, rig: WalletRig, hotel: Partner
) -> None:
    member = await enroll(ctx)
    await earn(ctx, hotel, member, 50)
    card = await issue(ctx, rig, member)
    updater = CardUpdater(ctx, rig.wallet)
    assert await updater.run_once() == Round(cards=1)  # 404: unknown to Google, so created
    [(patched, _)] = rig.google.patches
    assert patched == object_id(rig, card)
    assert list(rig.google.inserted["loyaltyClass"]) == [rig.wallet.program.google_class_id]
    created = rig.google.inserted["loyaltyObject"][object_id(rig, card)]
    assert created["loyaltyPoints"]["balance"] == {"int": 500}
    assert await mark_of(ctx, member) is None
    row = await card_row(ctx, member)
    assert row.pushed_tag == row.update_tag

    rig.google.fail.add(object_id(rig, card))
    await earn(ctx, hotel, member, 5)
    assert await updater.run_once() == Round(cards=1, failed=1)
    mark = await mark_of(ctx, member)
    assert mark.attempts == 1
    assert mark.claim_time > ctx.clock.now()

    rig.google.fail.clear()
    advance(ctx, timedelta(seconds=RETRY_BASE_S))
    assert await updater.run_once() == Round(cards=1)
    assert await mark_of(ctx, member) is None
    assert rig.google.patches[-1][1]["loyaltyPoints"]["balance"] == {"int": 550}
