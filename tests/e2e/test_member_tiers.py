"""Tiers through real gRPC: upgrades on earn, progress, reversals, the yearly review, events.

The default ladder: BLUE 0, SILVER 5,000 (x1.25), GOLD 15,000 (x1.5), PLATINUM 50,000 (x2)
qualifying points in the rolling 12 months. The hotel here earns 10 points per USD, so a
purchase of N x 10 cents earns N base points. The clock starts on Monday 2026-01-05 12:00 UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from earn_api import Api, Meta, campaign, parts, progress, purchase, tier_events, when

from gateway.service import tiers

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
ONE_YEAR_LATER = datetime(2027, 1, 5, 12, 0, tzinfo=UTC)
TWO_YEARS_LATER = datetime(2028, 1, 5, 12, 0, tzinfo=UTC)


@pytest.fixture
def api(gateway: Any) -> Api:
    return Api(gateway)


@pytest.fixture
async def hotel(gateway: Any) -> Meta:
    _, key = await gateway.create_partner("grand-hotel")
    return list(gateway.auth(key))


@pytest.fixture
async def member(api: Api) -> str:
    return await api.enroll()


async def earn_base(api: Api, hotel: Meta, member: str, points: int, **fields: Any) -> Any:
    """An earn of exactly `points` base points (a purchase of points x 10 cents)."""
    return await api.buy(hotel, member, points * 10, **fields)


def payload_time(raw: str | None) -> datetime | None:
    return None if raw is None else datetime.fromisoformat(raw)


def untimed(event: Any) -> dict[str, Any]:
    """A TierChanged payload without its two ISO 8601 times (compared as datetimes instead)."""
    assert set(event.payload) >= {"change_time", "review_time"}, event.payload
    return {k: v for k, v in event.payload.items() if k not in ("change_time", "review_time")}


# -- the acceptance ------------------------------------------------------------------


async def test_gold_by_an_earn_kept_through_a_reversal_then_one_step_down_at_review(
    ctx: Any, api: Api, hotel: Meta, member: str
) -> None:
    assert ctx.clock.now() == T0
    request_id = "folio-gold"
    crossing = await earn_base(api, hotel, member, 15_500, request_id=request_id)
    assert parts(crossing) == [("BASE", 15_500)], "the earn that qualifies has no tier bonus yet"
    assert progress(crossing.balance) == ("GOLD", "PLATINUM", 34_500, 15_500)
    assert when(crossing.balance.tier_review_time) == ONE_YEAR_LATER

    (upgrade,) = await tier_events(ctx, member)
    assert untimed(upgrade) == {
        "member": member,
        "previous_tier": "BLUE",
        "tier": "GOLD",
        "direction": "UP",
        "reason": "QUALIFIED",
        "qualifying_points": 15_500,
    }
    assert payload_time(upgrade.payload["change_time"]) == T0
    assert payload_time(upgrade.payload["review_time"]) == ONE_YEAR_LATER

    # A replay answers the first response and announces nothing again.
    replay = await earn_base(api, hotel, member, 15_500, request_id=request_id)
    assert replay == crossing
    assert len(await tier_events(ctx, member)) == 1

    # The next day 12,000 points are refunded: 3,500 qualifying points, still Gold.
    ctx.clock.advance(timedelta(days=1))
    reversal = (await api.reverse_call(hotel, crossing.name, 12_000)).transaction
    assert reversal.points == -12_000
    balance = await api.balance(member)
    assert progress(balance) == ("GOLD", "PLATINUM", 46_500, 3_500)
    assert balance.available_points == 3_500
    assert when(balance.tier_review_time) == ONE_YEAR_LATER
    assert len(await tier_events(ctx, member)) == 1

    # Mid-year, a Gold earn: the tier bonus is paid but only the base qualifies.
    ctx.clock.set(datetime(2026, 7, 1, 12, 0, tzinfo=UTC))
    mid = await earn_base(api, hotel, member, 1_000)
    assert parts(mid) == [("BASE", 1_000), ("TIER_BONUS", 500)]
    assert progress(mid.balance) == ("GOLD", "PLATINUM", 45_500, 4_500)
    assert len(await tier_events(ctx, member)) == 1

    # The review, run an hour late, uses the window [2026-01-05 12:00, 2027-01-05 12:00]: the
    # 3,500 left of the Gold earn (on the window's closed start) and the mid-year 1,000. Not
    # even Silver's 5,000, yet the member lands one step down.
    ctx.clock.set(ONE_YEAR_LATER + timedelta(hours=1))
    assert await tiers.run_reviews(ctx) == (1, 1)
    balance = await api.balance(member)
    # Now, an hour past the anniversary, only the mid-year earn is still in the window.
    assert progress(balance) == ("SILVER", "GOLD", 14_000, 1_000), "one step down, not to Blue"
    assert when(balance.tier_review_time) == TWO_YEARS_LATER
    assert (await api.get_member(member)).member.tier == "SILVER"

    first, review = await tier_events(ctx, member)
    assert first == upgrade
    assert untimed(review) == {
        "member": member,
        "previous_tier": "GOLD",
        "tier": "SILVER",
        "direction": "DOWN",
        "reason": "REVIEW",
        "qualifying_points": 4_500,
    }
    assert payload_time(review.payload["change_time"]) == ONE_YEAR_LATER
    assert payload_time(review.payload["review_time"]) == TWO_YEARS_LATER

    # Running the review again finds nothing due and changes nothing.
    assert await tiers.run_reviews(ctx) == (0, 0)
    assert await api.balance(member) == balance
    assert len(await tier_events(ctx, member)) == 2


# -- progress to the next tier ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("earned", "expected", "reviewed"),
    [
        pytest.param(0, ("BLUE", "SILVER", 5_000, 0), False, id="new-member"),
        pytest.param(4_999, ("BLUE", "SILVER", 1, 4_999), False, id="one-short-of-silver"),
        pytest.param(5_000, ("SILVER", "GOLD", 10_000, 5_000), True, id="silver-on-threshold"),
        pytest.param(13_760, ("SILVER", "GOLD", 1_240, 13_760), True, id="1240-to-gold"),
        pytest.param(50_000, ("PLATINUM", "", 0, 50_000), True, id="platinum-top"),
    ],
)
async def test_balance_and_member_show_progress_to_the_next_tier(
    api: Api,
    hotel: Meta,
    member: str,
    earned: int,
    expected: tuple[str, str, int, int],
    reviewed: bool,
) -> None:
    if earned:
        txn = await earn_base(api, hotel, member, earned)
        assert progress(txn.balance) == expected
    balance = await api.balance(member)
    assert progress(balance) == expected
    assert balance.HasField("tier_review_time") == reviewed
    if reviewed:
        assert when(balance.tier_review_time) == ONE_YEAR_LATER
    got = await api.get_member(member)
    assert got.member.tier == expected[0]
    assert progress(got.balance) == expected
    assert got.balance.HasField("tier_review_time") == reviewed


async def test_points_to_gold_are_exact(ctx: Any, api: Api, hotel: Meta, member: str) -> None:
    silver = await earn_base(api, hotel, member, 13_760)
    assert progress(silver.balance) == ("SILVER", "GOLD", 1_240, 13_760)

    # Exactly the 1,240 points shown: the Silver bonus comes on top but does not qualify.
    gold = await earn_base(api, hotel, member, 1_240)
    assert parts(gold) == [("BASE", 1_240), ("TIER_BONUS", 310)]
    assert progress(gold.balance) == ("GOLD", "PLATINUM", 35_000, 15_000)
    assert [
        (e.payload["previous_tier"], e.payload["tier"]) for e in await tier_events(ctx, member)
    ] == [
        ("BLUE", "SILVER"),
        ("SILVER", "GOLD"),
    ]


# -- what qualifies --------------------------------------------------------------------------


async def test_campaign_and_action_points_do_not_qualify(
    ctx: Any, api: Api, hotel: Meta, member: str
) -> None:
    end = ctx.clock.now() + timedelta(days=30)
    await api.create_campaign(
        "partners/grand-hotel", campaign(end, multiplier="3", bonus_points=5_000)
    )
    await api.create_campaign(
        "partners/grand-hotel",
        campaign(end, display_name="Review bonus", action="REVIEW", bonus_points=6_000),
    )

    quote = await api.quote_call(hotel, member, purchase=purchase(10_000))
    assert (quote.points, quote.qualifying_points, quote.tier) == (8_000, 1_000, "BLUE")
    bought = await api.buy(hotel, member, 10_000)
    assert parts(bought) == [("BASE", 1_000), ("CAMPAIGN", 7_000)]
    assert progress(bought.balance) == ("BLUE", "SILVER", 4_000, 1_000)

    action = await api.earn(hotel, member, action="BONUS", points=20_000)
    assert parts(action) == [("ACTION", 20_000)]
    reviewed = await api.earn(hotel, member, action="REVIEW", points=0)
    assert parts(reviewed) == [("CAMPAIGN", 6_000)]

    balance = await api.balance(member)
    assert balance.available_points == 34_000, "enough points for Gold, none of them qualifying"
    assert progress(balance) == ("BLUE", "SILVER", 4_000, 1_000)
    assert not balance.HasField("tier_review_time")
    assert await tier_events(ctx, member) == []


async def test_gold_tier_bonus_is_a_component_of_the_next_earn(
    api: Api, hotel: Meta, member: str
) -> None:
    crossing = await earn_base(api, hotel, member, 15_000)
    assert parts(crossing) == [("BASE", 15_000)]
    assert crossing.balance.tier == "GOLD"

    quote = await api.quote_call(hotel, member, purchase=purchase(12_345))
    assert quote.tier == "GOLD"
    assert parts(quote) == [("BASE", 1_234), ("TIER_BONUS", 617)]
    assert (quote.points, quote.qualifying_points) == (1_851, 1_234)

    txn = await api.buy(hotel, member, 12_345)
    assert parts(txn) == [("BASE", 1_234), ("TIER_BONUS", 617)]
    assert txn.points == 1_851
    bonus = txn.breakdown[1]
    assert "Gold" in bonus.description and "1.5" in bonus.description, bonus.description
    assert [c.description for c in txn.breakdown] == [c.description for c in quote.breakdown]
    assert progress(txn.balance) == ("GOLD", "PLATINUM", 33_766, 16_234)


# -- reversals -------------------------------------------------------------------------------


async def test_full_reversal_removes_the_qualifying_points_but_not_the_tier(
    ctx: Any, api: Api, hotel: Meta, member: str
) -> None:
    crossing = await earn_base(api, hotel, member, 15_000)
    ctx.clock.advance(timedelta(days=1))
    await api.reverse_call(hotel, crossing.name)
    balance = await api.balance(member)
    assert progress(balance) == ("GOLD", "PLATINUM", 50_000, 0)
    assert balance.available_points == 0
    assert when(balance.tier_review_time) == ONE_YEAR_LATER
    assert len(await tier_events(ctx, member)) == 1


async def test_reversal_response_balance_shows_the_tier_progress(
    api: Api, hotel: Meta, member: str
) -> None:
    crossing = await earn_base(api, hotel, member, 15_500)
    reversal = (await api.reverse_call(hotel, crossing.name, 1_000)).transaction
    assert progress(reversal.balance) == ("GOLD", "PLATINUM", 35_500, 14_500)
    assert progress(reversal.balance) == progress(await api.balance(member))


async def test_reversing_a_campaign_earn_nets_only_its_share_of_qualifying_points(
    ctx: Any, api: Api, hotel: Meta, member: str
) -> None:
    end = ctx.clock.now() + timedelta(days=30)
    await api.create_campaign("partners/grand-hotel", campaign(end, multiplier="3"))
    txn = await api.buy(hotel, member, 10_000)
    assert parts(txn) == [("BASE", 1_000), ("CAMPAIGN", 2_000)]
    await api.reverse_call(hotel, txn.name, 1_500)  # half of the 3,000 points
    assert progress(await api.balance(member)) == ("BLUE", "SILVER", 4_500, 500)
    await api.reverse_call(hotel, txn.name)  # the rest
    assert progress(await api.balance(member)) == ("BLUE", "SILVER", 5_000, 0)


# -- reviews ---------------------------------------------------------------------------------


@pytest.fixture
async def fallen_gold(ctx: Any, api: Api, hotel: Meta, member: str) -> str:
    """Gold at T0 by 15,000 points, 11,000 of them refunded the next day; now a day past the
    review (4,000 points in its window: one step down is due) and the sweeper has not run."""
    crossing = await earn_base(api, hotel, member, 15_000)
    ctx.clock.advance(timedelta(days=1))
    await api.reverse_call(hotel, crossing.name, 11_000)
    ctx.clock.set(ONE_YEAR_LATER + timedelta(days=1))
    return member


async def test_the_earn_that_brought_the_upgrade_counts_at_its_review(
    ctx: Any, api: Api, hotel: Meta, member: str
) -> None:
    await earn_base(api, hotel, member, 15_000)
    ctx.clock.set(ONE_YEAR_LATER)
    assert await tiers.run_reviews(ctx) == (1, 0)
    balance = await api.balance(member)
    assert progress(balance) == ("GOLD", "PLATINUM", 35_000, 15_000)
    assert when(balance.tier_review_time) == TWO_YEARS_LATER

    # A minute later the Gold earn has left the rolling window; the tier stays a year more.
    ctx.clock.advance(timedelta(minutes=1))
    assert progress(await api.balance(member)) == ("GOLD", "PLATINUM", 50_000, 0)
    assert [e.payload["reason"] for e in await tier_events(ctx, member)] == ["QUALIFIED"]


async def test_review_with_enough_points_keeps_the_tier_quietly(
    ctx: Any, api: Api, hotel: Meta, member: str
) -> None:
    crossing = await earn_base(api, hotel, member, 15_000)
    ctx.clock.advance(timedelta(days=1))
    await api.reverse_call(hotel, crossing.name)  # the Gold earn no longer counts
    ctx.clock.set(datetime(2026, 9, 1, tzinfo=UTC))
    await earn_base(api, hotel, member, 15_000)

    ctx.clock.set(ONE_YEAR_LATER + timedelta(minutes=1))
    assert await tiers.run_reviews(ctx) == (1, 0)
    balance = await api.balance(member)
    assert progress(balance) == ("GOLD", "PLATINUM", 35_000, 15_000)
    assert when(balance.tier_review_time) == TWO_YEARS_LATER
    assert [e.payload["reason"] for e in await tier_events(ctx, member)] == ["QUALIFIED"]


async def test_a_late_review_catches_up_one_tier_per_year(
    ctx: Any, api: Api, hotel: Meta, member: str
) -> None:
    await earn_base(api, hotel, member, 15_000)
    three_years_later = datetime(2029, 1, 5, 12, 0, tzinfo=UTC)
    ctx.clock.set(three_years_later + timedelta(days=1))
    assert await tiers.run_reviews(ctx) == (1, 1)

    balance = await api.balance(member)
    assert progress(balance) == ("BLUE", "SILVER", 5_000, 0)
    assert not balance.HasField("tier_review_time"), "the base tier has no review"
    events = await tier_events(ctx, member)
    # Year 1 kept Gold (the Gold earn still counts on its anniversary) and announced nothing.
    assert [
        (e.payload["previous_tier"], e.payload["tier"], e.payload["direction"], e.payload["reason"])
        for e in events
    ] == [
        ("BLUE", "GOLD", "UP", "QUALIFIED"),
        ("GOLD", "SILVER", "DOWN", "REVIEW"),
        ("SILVER", "BLUE", "DOWN", "REVIEW"),
    ]
    assert [payload_time(e.payload["change_time"]) for e in events] == [
        T0,
        TWO_YEARS_LATER,
        three_years_later,
    ]
    assert [e.payload["qualifying_points"] for e in events] == [15_000, 0, 0]
    assert await tiers.run_reviews(ctx) == (0, 0)


async def test_a_due_review_is_applied_by_the_next_earn_before_its_tier_bonus(
    ctx: Any, api: Api, hotel: Meta, fallen_gold: str
) -> None:
    txn = await earn_base(api, hotel, fallen_gold, 1_000)
    assert parts(txn) == [("BASE", 1_000), ("TIER_BONUS", 250)], "the Silver bonus, not Gold's"
    assert progress(txn.balance) == ("SILVER", "GOLD", 14_000, 1_000)
    assert when(txn.balance.tier_review_time) == TWO_YEARS_LATER
    (_, review) = await tier_events(ctx, fallen_gold)
    assert untimed(review) == {
        "member": fallen_gold,
        "previous_tier": "GOLD",
        "tier": "SILVER",
        "direction": "DOWN",
        "reason": "REVIEW",
        "qualifying_points": 4_000,
    }
    assert payload_time(review.payload["change_time"]) == ONE_YEAR_LATER
    assert await tiers.run_reviews(ctx) == (0, 0)


async def test_balance_shows_a_due_review_before_the_sweeper_records_it(
    ctx: Any, api: Api, fallen_gold: str
) -> None:
    balance = await api.balance(fallen_gold)
    # The Gold earn and its refund (both T0) have left the window that ends now.
    assert progress(balance) == ("SILVER", "GOLD", 15_000, 0)
    assert when(balance.tier_review_time) == TWO_YEARS_LATER
    got = await api.get_member(fallen_gold)
    assert got.member.tier == "SILVER"
    assert got.balance == balance
    assert len(await tier_events(ctx, fallen_gold)) == 1, "reading records nothing"

    assert await tiers.run_reviews(ctx) == (1, 1)
    assert await api.balance(fallen_gold) == balance
    (_, review) = await tier_events(ctx, fallen_gold)
    assert payload_time(review.payload["change_time"]) == ONE_YEAR_LATER


async def test_quote_after_a_due_review_matches_the_earn(
    api: Api, hotel: Meta, fallen_gold: str
) -> None:
    quote = await api.quote_call(hotel, fallen_gold, purchase=purchase(10_000))
    txn = await earn_base(api, hotel, fallen_gold, 1_000)
    assert parts(txn) == [("BASE", 1_000), ("TIER_BONUS", 250)]
    assert (quote.tier, parts(quote), quote.points) == ("SILVER", parts(txn), txn.points)
