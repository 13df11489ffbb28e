"""Campaigns and partner earn rules through real gRPC: what an earn gets, and why.

The hotel earns 10 points per USD in the America/New_York time zone; a purchase of USD 100.00
earns 1,000 base points. The clock starts on Monday 2026-01-05 12:00 UTC (07:00 in New York).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import grpc
import pytest
from earn_api import WEEKEND, Api, Meta, campaign, parts, progress, purchase, ts, when
from errors import expect_error  # tests/e2e/errors.py

from coalition.v1 import partners_pb2
from gateway.service import rates

FAILED = grpc.StatusCode.FAILED_PRECONDITION
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
DENIED = grpc.StatusCode.PERMISSION_DENIED
EXISTS = grpc.StatusCode.ALREADY_EXISTS

PARTNER = "partners/city-hotel"
NEW_YORK = ZoneInfo("America/New_York")
T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
END = T0 + timedelta(days=30)
USD_100 = 10_000
CAMPAIGNS_LIVE_MAX = 25


def local(year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=NEW_YORK)


@pytest.fixture
def api(gateway: Any) -> Api:
    return Api(gateway)


@pytest.fixture
async def hotel(gateway: Any) -> Meta:
    _, key = await gateway.create_partner("city-hotel", time_zone="America/New_York")
    return list(gateway.auth(key))


@pytest.fixture
async def member(api: Api) -> str:
    return await api.enroll()


async def spent(api: Api, name: str) -> int:
    return (await api.campaigns(PARTNER))[name].spent_points


# -- creating, listing, ending -----------------------------------------------------------------


async def test_create_campaign_returns_it_normalized(ctx: Any, api: Api, hotel: Meta) -> None:
    created = await api.create_campaign(
        PARTNER,
        campaign(
            END,
            display_name="  Spa weekend  ",
            days_of_week=[partners_pb2.DAY_OF_WEEK_SUNDAY, partners_pb2.DAY_OF_WEEK_SATURDAY],
            categories=["Spa"],
            multiplier="2.0",
            bonus_points=100,
            member_budget_points=5_000,
            total_budget_points=100_000,
        ),
    )
    assert re.fullmatch(r"partners/city-hotel/campaigns/[0-9a-f]+", created.name), created.name
    assert created.display_name == "Spa weekend"
    assert when(created.start_time) == T0, "an unset start_time means now"
    assert when(created.end_time) == END
    assert list(created.days_of_week) == WEEKEND
    assert list(created.categories) == ["spa"]
    assert created.multiplier == "2"
    assert (created.bonus_points, created.member_budget_points) == (100, 5_000)
    assert (created.total_budget_points, created.spent_points) == (100_000, 0)
    assert when(created.create_time) == T0
    assert await api.campaigns(PARTNER) == {created.name: created}


async def test_create_campaign_replay_returns_the_same_campaign(
    ctx: Any, api: Api, hotel: Meta
) -> None:
    message = campaign(END, multiplier="2")
    first = await api.create_campaign_call(PARTNER, message, request_id="campaign-1")
    ctx.clock.advance(timedelta(minutes=5))
    again = await api.create_campaign_call(PARTNER, message, request_id="campaign-1")
    assert again == first
    assert list(await api.campaigns(PARTNER)) == [first.campaign.name]

    changed = campaign(END, multiplier="3")
    info = await expect_error(
        api.create_campaign_call(PARTNER, changed, request_id="campaign-1"),
        EXISTS,
        "REQUEST_ID_REUSED",
    )
    assert info.metadata["request_id"] == "campaign-1"
    assert list(await api.campaigns(PARTNER)) == [first.campaign.name]


@pytest.mark.parametrize(
    ("fields", "reason", "field"),
    [
        pytest.param(
            {"end": None, "multiplier": "2"},
            "INVALID_CAMPAIGN_WINDOW",
            "campaign.end_time",
            id="no-end-time",
        ),
        pytest.param(
            {"start": T0 + timedelta(days=10), "end": T0 + timedelta(days=5), "multiplier": "2"},
            "INVALID_CAMPAIGN_WINDOW",
            "campaign.end_time",
            id="end-before-start",
        ),
        pytest.param(
            {"start": T0 - timedelta(days=10), "end": T0 - timedelta(days=1), "multiplier": "2"},
            "INVALID_CAMPAIGN_WINDOW",
            "campaign.end_time",
            id="already-over",
        ),
        pytest.param(
            {"multiplier": "1"}, "INVALID_MULTIPLIER", "campaign.multiplier", id="multiplier-1"
        ),
        pytest.param(
            {"multiplier": "0.5"}, "INVALID_MULTIPLIER", "campaign.multiplier", id="multiplier-0.5"
        ),
        pytest.param(
            {"multiplier": "10.5"}, "INVALID_MULTIPLIER", "campaign.multiplier", id="above-10"
        ),
        pytest.param(
            {"multiplier": "double"}, "INVALID_MULTIPLIER", "campaign.multiplier", id="not-number"
        ),
        pytest.param(
            {"multiplier": "1.00001"},
            "INVALID_MULTIPLIER",
            "campaign.multiplier",
            id="five-decimals",
        ),
        pytest.param({}, "NO_CAMPAIGN_REWARD", "campaign.multiplier", id="no-reward"),
        pytest.param(
            {"multiplier": "2", "bonus_points": -1},
            "INVALID_POINTS",
            "campaign.bonus_points",
            id="negative-bonus",
        ),
        pytest.param(
            {"bonus_points": 1_000_001},
            "INVALID_POINTS",
            "campaign.bonus_points",
            id="bonus-too-big",
        ),
        pytest.param(
            {"multiplier": "2", "start_hour": 24, "end_hour": 2},
            "INVALID_HOURS",
            "campaign.start_hour",
            id="start-hour-24",
        ),
        pytest.param(
            {"multiplier": "2", "start_hour": 1, "end_hour": 25},
            "INVALID_HOURS",
            "campaign.start_hour",
            id="end-hour-25",
        ),
        pytest.param(
            {"multiplier": "2", "start_hour": -1, "end_hour": 5},
            "INVALID_HOURS",
            "campaign.start_hour",
            id="negative-hour",
        ),
        pytest.param(
            {"multiplier": "2", "start_hour": 9, "end_hour": 9},
            "INVALID_HOURS",
            "campaign.start_hour",
            id="empty-hours",
        ),
        pytest.param(
            {"multiplier": "2", "days_of_week": [8]},
            "INVALID_DAY_OF_WEEK",
            "campaign.days_of_week[0]",
            id="day-8",
        ),
        pytest.param(
            {"multiplier": "2", "days_of_week": [partners_pb2.DAY_OF_WEEK_MONDAY, 0]},
            "INVALID_DAY_OF_WEEK",
            "campaign.days_of_week[1]",
            id="day-unspecified",
        ),
        pytest.param(
            {"multiplier": "2", "display_name": "   "},
            "EMPTY_NAME",
            "campaign.display_name",
            id="empty-name",
        ),
        pytest.param(
            {"multiplier": "2", "display_name": "x" * 201},
            "FIELD_TOO_LONG",
            "campaign.display_name",
            id="long-name",
        ),
        pytest.param(
            {"multiplier": "2", "categories": ["spa", "Spa!"]},
            "INVALID_CATEGORY",
            "campaign.categories[1]",
            id="bad-category",
        ),
        pytest.param(
            {"bonus_points": 10, "action": "review"},
            "INVALID_ACTION",
            "campaign.action",
            id="lower-case-action",
        ),
        pytest.param(
            {"bonus_points": 10, "action": "REVIEW", "categories": ["spa"]},
            "CATEGORIES_NOT_FOR_ACTIONS",
            "campaign.categories",
            id="action-with-categories",
        ),
        pytest.param(
            {"multiplier": "2", "member_budget_points": -1},
            "INVALID_BUDGET",
            "campaign.member_budget_points",
            id="negative-member-budget",
        ),
        pytest.param(
            {"multiplier": "2", "total_budget_points": -1},
            "INVALID_BUDGET",
            "campaign.total_budget_points",
            id="negative-total-budget",
        ),
    ],
)
async def test_invalid_campaign_is_invalid_argument(
    api: Api, hotel: Meta, fields: dict[str, Any], reason: str, field: str
) -> None:
    end = fields.pop("end", END)
    start = fields.pop("start", None)
    await expect_error(
        api.create_campaign_call(PARTNER, campaign(end, start, **fields)), INVALID, reason, field
    )
    assert await api.campaigns(PARTNER) == {}


@pytest.mark.parametrize(
    ("parent", "code", "reason", "field"),
    [
        pytest.param("city-hotel", INVALID, "INVALID_PARTNER_NAME", "parent", id="bad-parent"),
        pytest.param("partners/nowhere", NOT_FOUND, "PARTNER_NOT_FOUND", None, id="no-partner"),
    ],
)
async def test_campaign_for_a_bad_parent(
    api: Api, hotel: Meta, parent: str, code: grpc.StatusCode, reason: str, field: str | None
) -> None:
    await expect_error(
        api.create_campaign_call(parent, campaign(END, multiplier="2")), code, reason, field
    )
    await expect_error(api.list_campaigns_call(parent), code, reason, field)


@pytest.mark.parametrize("method", ["CreateCampaign", "ListCampaigns", "EndCampaign"])
async def test_a_partner_cannot_manage_campaigns(api: Api, hotel: Meta, method: str) -> None:
    created = await api.create_campaign(PARTNER, campaign(END, multiplier="2"))
    calls = {
        "CreateCampaign": lambda: api.create_campaign_call(
            PARTNER, campaign(END, multiplier="5"), meta=hotel
        ),
        "ListCampaigns": lambda: api.list_campaigns_call(PARTNER, meta=hotel),
        "EndCampaign": lambda: api.end_campaign_call(created.name, meta=hotel),
    }
    info = await expect_error(calls[method](), DENIED, "OPERATOR_ONLY")
    assert info.metadata["method"] == f"/coalition.v1.PartnerService/{method}"
    assert await api.campaigns(PARTNER) == {created.name: created}


@pytest.mark.parametrize("same_instant", [False, True], ids=["minutes-apart", "same-instant"])
async def test_list_campaigns_pages_newest_first_with_spent_points(
    ctx: Any, api: Api, hotel: Meta, member: str, same_instant: bool
) -> None:
    created = []
    for i in range(5):
        message = campaign(END, display_name=f"Bonus {i}", bonus_points=10 * (i + 1))
        created.append(await api.create_campaign(PARTNER, message))
        if not same_instant:
            ctx.clock.advance(timedelta(minutes=1))
    txn = await api.buy(hotel, member, USD_100)
    assert sum(p for kind, p in parts(txn) if kind == "CAMPAIGN") == 150

    pages, token = [], ""
    for _ in range(5):
        reply = await api.list_campaigns_call(PARTNER, page_size=2, page_token=token)
        pages.append([c.name for c in reply.campaigns])
        token = reply.next_page_token
        if not token:
            break
    assert [len(p) for p in pages] == [2, 2, 1]
    listed = [name for page in pages for name in page]
    expected = sorted(
        created, key=lambda c: (when(c.create_time), c.name.rsplit("/", 1)[1]), reverse=True
    )
    assert listed == [c.name for c in expected]
    if not same_instant:
        assert listed == [c.name for c in reversed(created)]
    spent_by = {c.name: c.spent_points for c in (await api.campaigns(PARTNER)).values()}
    assert spent_by == {c.name: c.bonus_points for c in created}


@pytest.mark.parametrize(
    ("page_size", "page_token", "reason", "field"),
    [
        pytest.param(0, "not-a-token", "INVALID_PAGE_TOKEN", "page_token", id="token"),
        pytest.param(-1, "", "INVALID_PAGE_SIZE", "page_size", id="size"),
    ],
)
async def test_list_campaigns_bad_page(
    api: Api, hotel: Meta, page_size: int, page_token: str, reason: str, field: str
) -> None:
    await expect_error(
        api.list_campaigns_call(PARTNER, page_size, page_token), INVALID, reason, field
    )


async def test_end_campaign_stops_it_and_cannot_end_twice(
    ctx: Any, api: Api, hotel: Meta, member: str
) -> None:
    created = await api.create_campaign(PARTNER, campaign(END, multiplier="2"))
    assert parts(await api.buy(hotel, member, USD_100)) == [("BASE", 1_000), ("CAMPAIGN", 1_000)]

    ctx.clock.advance(timedelta(hours=1))
    ended = (await api.end_campaign_call(created.name, request_id="end-1")).campaign
    assert ended.name == created.name
    assert when(ended.end_time) == T0 + timedelta(hours=1)
    assert ended.spent_points == 1_000
    assert parts(await api.buy(hotel, member, USD_100)) == [("BASE", 1_000)]

    ctx.clock.advance(timedelta(minutes=1))
    info = await expect_error(api.end_campaign_call(created.name), FAILED, "CAMPAIGN_ENDED")
    assert info.metadata["campaign"] == created.name
    replay = (await api.end_campaign_call(created.name, request_id="end-1")).campaign
    assert replay == ended
    assert (await api.campaigns(PARTNER))[created.name] == ended


@pytest.mark.parametrize(
    ("name", "code", "reason", "field"),
    [
        pytest.param(
            "partners/city-hotel/campaigns/0000",
            NOT_FOUND,
            "CAMPAIGN_NOT_FOUND",
            None,
            id="unknown",
        ),
        pytest.param(
            "partners/city-hotel", INVALID, "INVALID_CAMPAIGN_NAME", "name", id="malformed"
        ),
    ],
)
async def test_end_campaign_bad_name(
    api: Api, hotel: Meta, name: str, code: grpc.StatusCode, reason: str, field: str | None
) -> None:
    await expect_error(api.end_campaign_call(name), code, reason, field)


async def test_an_ended_campaign_pays_no_earn_recorded_after_the_end(
    ctx: Any, api: Api, hotel: Meta, member: str
) -> None:
    created = await api.create_campaign(PARTNER, campaign(END, multiplier="2"))
    bought_at = T0 + timedelta(hours=1)
    ctx.clock.set(T0 + timedelta(hours=2))
    await api.end_campaign_call(created.name)
    ctx.clock.advance(timedelta(hours=1))
    late = await api.buy(hotel, member, USD_100, occur_time=ts(bought_at))
    assert parts(late) == [("BASE", 1_000)], "a purchase made while it ran, reported after the end"
    assert await spent(api, created.name) == 0


async def test_a_campaign_past_its_end_time_still_pays_purchases_made_before_it(
    ctx: Any, api: Api, hotel: Meta, member: str
) -> None:
    short = await api.create_campaign(PARTNER, campaign(T0 + timedelta(days=1), multiplier="2"))
    ctx.clock.set(T0 + timedelta(days=2))
    late = await api.buy(hotel, member, USD_100, occur_time=ts(T0 + timedelta(hours=12)))
    assert parts(late) == [("BASE", 1_000), ("CAMPAIGN", 1_000)]
    assert parts(await api.buy(hotel, member, USD_100)) == [("BASE", 1_000)]
    assert await spent(api, short.name) == 1_000


async def test_ending_a_campaign_before_it_starts(
    ctx: Any, api: Api, hotel: Meta, member: str
) -> None:
    start = T0 + timedelta(days=1)
    created = await api.create_campaign(PARTNER, campaign(END, start, multiplier="2"))
    ended = (await api.end_campaign_call(created.name)).campaign
    assert when(ended.end_time) <= when(ended.start_time)
    await expect_error(api.end_campaign_call(created.name), FAILED, "CAMPAIGN_ENDED")

    ctx.clock.set(start + timedelta(hours=1))
    assert parts(await api.buy(hotel, member, USD_100)) == [("BASE", 1_000)]


async def test_ending_a_campaign_before_it_starts_frees_its_slot(
    ctx: Any, api: Api, hotel: Meta
) -> None:
    for i in range(CAMPAIGNS_LIVE_MAX - 1):
        await api.create_campaign(PARTNER, campaign(END, display_name=f"C{i}", multiplier="2"))
    later = await api.create_campaign(
        PARTNER, campaign(END, T0 + timedelta(days=7), display_name="Later", multiplier="2")
    )
    await api.end_campaign_call(later.name)
    ctx.clock.advance(timedelta(seconds=1))
    await api.create_campaign(PARTNER, campaign(END, multiplier="2"))


async def test_too_many_live_campaigns_until_one_ends(ctx: Any, api: Api, hotel: Meta) -> None:
    live = [
        await api.create_campaign(PARTNER, campaign(END, display_name=f"C{i}", multiplier="2"))
        for i in range(CAMPAIGNS_LIVE_MAX)
    ]
    info = await expect_error(
        api.create_campaign_call(PARTNER, campaign(END, multiplier="2")),
        FAILED,
        "TOO_MANY_CAMPAIGNS",
    )
    assert info.metadata["partner"] == PARTNER
    await api.end_campaign_call(live[0].name)
    ctx.clock.advance(timedelta(seconds=1))
    await api.create_campaign(PARTNER, campaign(END, multiplier="2"))
    assert len(await api.campaigns(PARTNER)) == CAMPAIGNS_LIVE_MAX + 1


# -- when a campaign applies -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("instant", "applies"),
    [
        pytest.param(local(2026, 1, 10, 12), True, id="saturday-noon"),
        pytest.param(local(2026, 1, 10, 0, 30), True, id="saturday-00:30"),
        pytest.param(local(2026, 1, 11, 22), True, id="sunday-22:00-monday-in-utc"),
        pytest.param(local(2026, 1, 9, 12), False, id="friday-noon"),
        pytest.param(local(2026, 1, 9, 23, 30), False, id="friday-23:30-saturday-in-utc"),
        pytest.param(local(2026, 1, 12, 0, 30), False, id="monday-00:30"),
    ],
)
async def test_weekend_double_points_in_the_partner_time_zone(
    ctx: Any, api: Api, hotel: Meta, member: str, instant: datetime, applies: bool
) -> None:
    weekend = await api.create_campaign(
        PARTNER,
        campaign(END, display_name="Double points weekend", days_of_week=WEEKEND, multiplier="2"),
    )
    ctx.clock.set(instant)
    txn = await api.buy(hotel, member, USD_100)
    if not applies:
        assert parts(txn) == [("BASE", 1_000)]
        assert await spent(api, weekend.name) == 0
        return
    assert parts(txn) == [("BASE", 1_000), ("CAMPAIGN", 1_000)]
    bonus = txn.breakdown[1]
    assert bonus.source == weekend.name
    assert bonus.description.startswith("Double points weekend"), bonus.description
    assert progress(txn.balance)[3] == 1_000, "only the base qualifies"
    assert await spent(api, weekend.name) == 1_000


async def test_a_late_reported_purchase_gets_the_campaign_of_its_day(
    ctx: Any, api: Api, hotel: Meta, member: str
) -> None:
    await api.create_campaign(PARTNER, campaign(END, days_of_week=WEEKEND, multiplier="2"))
    ctx.clock.set(local(2026, 1, 12, 9))  # Monday
    txn = await api.buy(hotel, member, USD_100, occur_time=ts(local(2026, 1, 10, 20)))
    assert parts(txn) == [("BASE", 1_000), ("CAMPAIGN", 1_000)]
    assert parts(await api.buy(hotel, member, USD_100)) == [("BASE", 1_000)]


@pytest.mark.parametrize(
    ("hour", "minute", "applies"),
    [
        pytest.param(21, 59, False, id="21:59"),
        pytest.param(22, 0, True, id="22:00"),
        pytest.param(23, 59, True, id="23:59"),
        pytest.param(1, 59, True, id="01:59"),
        pytest.param(2, 0, False, id="02:00"),
        pytest.param(12, 0, False, id="noon"),
    ],
)
async def test_night_hours_wrap_past_midnight(
    ctx: Any, api: Api, hotel: Meta, member: str, hour: int, minute: int, applies: bool
) -> None:
    await api.create_campaign(PARTNER, campaign(END, start_hour=22, end_hour=2, multiplier="2"))
    ctx.clock.set(local(2026, 1, 7, hour, minute))
    expected = [("BASE", 1_000), ("CAMPAIGN", 1_000)] if applies else [("BASE", 1_000)]
    assert parts(await api.buy(hotel, member, USD_100)) == expected


@pytest.mark.parametrize(
    ("category", "applies"),
    [
        pytest.param("spa", True, id="spa"),
        pytest.param("SPA", True, id="upper-case-spa"),
        pytest.param("room", False, id="room"),
        pytest.param("", False, id="no-category"),
    ],
)
async def test_category_campaign(
    api: Api, hotel: Meta, member: str, category: str, applies: bool
) -> None:
    await api.create_campaign(PARTNER, campaign(END, categories=["spa"], bonus_points=500))
    txn = await api.earn(hotel, member, purchase=purchase(USD_100, category=category))
    expected = [("BASE", 1_000), ("CAMPAIGN", 500)] if applies else [("BASE", 1_000)]
    assert parts(txn) == expected


async def test_quote_shows_the_breakdown_and_writes_nothing(
    ctx: Any, api: Api, hotel: Meta, member: str
) -> None:
    weekend = await api.create_campaign(
        PARTNER,
        campaign(
            END, days_of_week=WEEKEND, multiplier="2", bonus_points=100, total_budget_points=5_000
        ),
    )
    ctx.clock.set(local(2026, 1, 9, 12))  # Friday: a quote may ask about Saturday
    ahead = await api.quote_call(
        hotel, member, purchase=purchase(USD_100), occur_time=ts(local(2026, 1, 10, 12))
    )
    assert parts(ahead) == [("BASE", 1_000), ("CAMPAIGN", 1_100)]
    now = await api.quote_call(hotel, member, purchase=purchase(USD_100))
    assert parts(now) == [("BASE", 1_000)]

    ctx.clock.set(local(2026, 1, 10, 12))
    quotes = [await api.quote_call(hotel, member, purchase=purchase(USD_100)) for _ in range(3)]
    assert quotes[0] == quotes[1] == quotes[2] == ahead
    quote = quotes[0]
    assert (quote.points, quote.qualifying_points, quote.tier) == (2_100, 1_000, "BLUE")
    assert quote.breakdown[1].source == weekend.name

    balance = await api.balance(member)
    assert (balance.available_points, balance.pending_points, balance.qualifying_points) == (
        0,
        0,
        0,
    )
    assert await api.history(member) == []
    assert await spent(api, weekend.name) == 0

    txn = await api.buy(hotel, member, USD_100)
    assert list(txn.breakdown) == list(quote.breakdown)
    assert txn.points == quote.points
    assert await spent(api, weekend.name) == 1_100


# -- action bonuses --------------------------------------------------------------------------


async def test_action_bonus(ctx: Any, api: Api, hotel: Meta, member: str) -> None:
    review = await api.create_campaign(
        PARTNER, campaign(END, display_name="Review bonus", action="REVIEW", bonus_points=250)
    )
    only_bonus = await api.earn(hotel, member, action="REVIEW", points=0)
    assert parts(only_bonus) == [("CAMPAIGN", 250)]
    assert only_bonus.breakdown[0].source == review.name
    assert only_bonus.points == 250
    assert only_bonus.balance.available_points == 250

    with_own = await api.earn(hotel, member, action="REVIEW", points=100)
    assert parts(with_own) == [("ACTION", 100), ("CAMPAIGN", 250)]
    assert parts(await api.buy(hotel, member, USD_100)) == [("BASE", 1_000)]

    info = await expect_error(
        api.earn_call(hotel, member, action="APP_INSTALL", points=0), FAILED, "ACTION_NOT_REWARDED"
    )
    assert info.metadata["action"] == "APP_INSTALL"
    assert await spent(api, review.name) == 500

    ctx.clock.advance(timedelta(minutes=1))
    await api.end_campaign_call(review.name)
    await expect_error(
        api.earn_call(hotel, member, action="REVIEW", points=0), FAILED, "ACTION_NOT_REWARDED"
    )
    balance = await api.balance(member)
    assert (balance.available_points, balance.qualifying_points) == (1_600, 1_000)


async def test_action_bonus_multiplies_the_action_points(
    api: Api, hotel: Meta, member: str
) -> None:
    await api.create_campaign(PARTNER, campaign(END, action="RIDE_COMPLETED", multiplier="3"))
    txn = await api.earn(hotel, member, action="RIDE_COMPLETED", points=40)
    assert parts(txn) == [("ACTION", 40), ("CAMPAIGN", 80)]


# -- budgets ---------------------------------------------------------------------------------


async def test_member_budget_caps_each_member(ctx: Any, api: Api, hotel: Meta) -> None:
    capped = await api.create_campaign(
        PARTNER, campaign(END, multiplier="2", member_budget_points=1_500)
    )
    ada, grace = await api.enroll("Ada Lovelace"), await api.enroll("Grace Hopper")

    first = await api.buy(hotel, ada, USD_100, request_id="ada-1")
    assert parts(first) == [("BASE", 1_000), ("CAMPAIGN", 1_000)]
    second = await api.buy(hotel, ada, USD_100)
    assert parts(second) == [("BASE", 1_000), ("CAMPAIGN", 500)]
    assert "500 points left" in second.breakdown[1].description, second.breakdown[1].description
    third = await api.buy(hotel, ada, USD_100)
    assert parts(third) == [("BASE", 1_000), ("CAMPAIGN", 0)]
    assert "exhausted" in third.breakdown[1].description, third.breakdown[1].description
    assert await api.buy(hotel, ada, USD_100, request_id="ada-1") == first, "a replay pays nothing"

    assert parts(await api.buy(hotel, grace, USD_100)) == [("BASE", 1_000), ("CAMPAIGN", 1_000)]
    assert (await api.balance(ada)).available_points == 4_500
    assert (await api.balance(grace)).available_points == 2_000
    assert await spent(api, capped.name) == 2_500


async def test_total_budget_is_shared_by_every_member(ctx: Any, api: Api, hotel: Meta) -> None:
    budget = await api.create_campaign(
        PARTNER, campaign(END, bonus_points=300, total_budget_points=1_000)
    )
    members = [await api.enroll(f"Member {i}") for i in range(5)]
    paid = []
    for who in members:
        txn = await api.buy(hotel, who, USD_100)
        paid.append(txn.breakdown[1].points)
    assert paid == [300, 300, 300, 100, 0]
    quote = await api.quote_call(hotel, members[0], purchase=purchase(USD_100))
    assert parts(quote) == [("BASE", 1_000), ("CAMPAIGN", 0)]
    assert await spent(api, budget.name) == 1_000


# -- the partner's earn rules ----------------------------------------------------------------


async def test_update_partner_earn_rules_show_in_the_breakdown(
    api: Api, hotel: Meta, member: str
) -> None:
    updated = (
        await api.update_partner_call(
            PARTNER,
            ["category_rates", "minimum_spend_minor", "transaction_cap_points", "earn_rounding"],
            category_rates=[partners_pb2.CategoryRate(category="spa", earn_rate="15")],
            minimum_spend_minor=500,
            transaction_cap_points=2_000,
            earn_rounding=partners_pb2.EARN_ROUNDING_NEAREST,
        )
    ).partner
    assert [(r.category, r.earn_rate) for r in updated.category_rates] == [("spa", "15")]
    assert (updated.minimum_spend_minor, updated.transaction_cap_points) == (500, 2_000)
    assert updated.earn_rounding == partners_pb2.EARN_ROUNDING_NEAREST
    assert updated.time_zone == "America/New_York", "fields outside the mask keep their values"

    spa = await api.earn(hotel, member, purchase=purchase(USD_100, category="spa"))
    assert parts(spa) == [("CATEGORY", 1_500)]
    assert "spa" in spa.breakdown[0].description
    assert parts(await api.earn(hotel, member, purchase=purchase(USD_100, category="room"))) == [
        ("BASE", 1_000)
    ]
    capped = await api.buy(hotel, member, 30_000)
    assert parts(capped) == [("BASE", 3_000), ("CAP", -1_000)]
    assert capped.points == 2_000
    assert "2,000" in capped.breakdown[1].description
    assert parts(await api.buy(hotel, member, 1_235)) == [("BASE", 124)], "NEAREST: 123.5 -> 124"
    assert parts(await api.buy(hotel, member, 500)) == [("BASE", 50)], "the minimum itself earns"
    assert (await api.balance(member)).qualifying_points == 1_500 + 1_000 + 2_000 + 124 + 50


async def test_purchase_below_the_minimum_spend_earns_zero(
    api: Api, hotel: Meta, member: str
) -> None:
    await api.update_partner_call(PARTNER, ["minimum_spend_minor"], minimum_spend_minor=500)
    quote = await api.quote_call(hotel, member, purchase=purchase(499))
    assert (quote.points, parts(quote)) == (0, [("BASE", 0)])
    txn = await api.buy(hotel, member, 499)
    assert (txn.points, parts(txn)) == (0, [("BASE", 0)])
    assert "minimum spend" in txn.breakdown[0].description
    assert txn.balance.available_points == 0


async def test_rates_read_back_as_written(api: Api, hotel: Meta, member: str) -> None:
    partner = (
        await api.partners.GetPartner(
            partners_pb2.GetPartnerRequest(name=PARTNER), metadata=api.operator
        )
    ).partner
    base = await api.buy(hotel, member, USD_100)
    updated = (
        await api.update_partner_call(
            PARTNER,
            ["category_rates"],
            category_rates=[partners_pb2.CategoryRate(category="spa", earn_rate="20")],
        )
    ).partner
    spa = await api.earn(hotel, member, purchase=purchase(USD_100, category="spa"))
    tenfold = await api.create_campaign(PARTNER, campaign(END, multiplier="10"))
    seen = {
        "base_earn_rate": partner.base_earn_rate,
        "base description": base.breakdown[0].description,
        "category rate": updated.category_rates[0].earn_rate,
        "category description": spa.breakdown[0].description,
        "multiplier": tenfold.multiplier,
    }
    assert seen == {
        "base_earn_rate": "10",
        "base description": "10 points per USD on USD 100.00",
        "category rate": "20",
        "category description": "20 points per USD on spa, USD 100.00",
        "multiplier": "10",
    }


@pytest.mark.parametrize(
    ("rounding", "amount_minor", "points"),
    [
        pytest.param(partners_pb2.EARN_ROUNDING_UNSPECIFIED, 1_239, 123, id="default-down"),
        pytest.param(partners_pb2.EARN_ROUNDING_DOWN, 1_239, 123, id="down"),
        pytest.param(partners_pb2.EARN_ROUNDING_NEAREST, 1_234, 123, id="nearest-down"),
        pytest.param(partners_pb2.EARN_ROUNDING_NEAREST, 1_235, 124, id="nearest-half-up"),
        pytest.param(partners_pb2.EARN_ROUNDING_UP, 1_231, 124, id="up"),
        pytest.param(partners_pb2.EARN_ROUNDING_UP, 1_230, 123, id="up-exact"),
    ],
)
async def test_earn_rounding(
    api: Api, hotel: Meta, member: str, rounding: int, amount_minor: int, points: int
) -> None:
    await api.update_partner_call(PARTNER, ["earn_rounding"], earn_rounding=rounding)
    assert parts(await api.buy(hotel, member, amount_minor)) == [("BASE", points)]


@pytest.mark.parametrize(
    ("mask", "fields", "reason", "field"),
    [
        pytest.param(
            "category_rates",
            {
                "category_rates": [
                    partners_pb2.CategoryRate(category="spa", earn_rate="15"),
                    partners_pb2.CategoryRate(category="SPA", earn_rate="12"),
                ]
            },
            "DUPLICATE_CATEGORY",
            "partner.category_rates[1].category",
            id="duplicate-category",
        ),
        pytest.param(
            "category_rates",
            {"category_rates": [partners_pb2.CategoryRate(category="Spa!", earn_rate="15")]},
            "INVALID_CATEGORY",
            "partner.category_rates[0].category",
            id="bad-category",
        ),
        pytest.param(
            "category_rates",
            {"category_rates": [partners_pb2.CategoryRate(category="spa", earn_rate="fast")]},
            "INVALID_EARN_RATE",
            "partner.category_rates[0].earn_rate",
            id="bad-rate",
        ),
        pytest.param(
            "transaction_cap_points",
            {"transaction_cap_points": -1},
            "OUT_OF_RANGE",
            "partner.transaction_cap_points",
            id="negative-cap",
        ),
        pytest.param(
            "minimum_spend_minor",
            {"minimum_spend_minor": -1},
            "OUT_OF_RANGE",
            "partner.minimum_spend_minor",
            id="negative-minimum",
        ),
        pytest.param(
            "earn_rounding",
            {"earn_rounding": 9},
            "INVALID_ROUNDING",
            "partner.earn_rounding",
            id="unknown-rounding",
        ),
    ],
)
async def test_invalid_earn_rules_are_invalid_argument(
    api: Api, hotel: Meta, member: str, mask: str, fields: dict[str, Any], reason: str, field: str
) -> None:
    await expect_error(api.update_partner_call(PARTNER, [mask], **fields), INVALID, reason, field)
    assert parts(await api.buy(hotel, member, USD_100)) == [("BASE", 1_000)]


# -- purchases in another currency -----------------------------------------------------------


async def set_rate(ctx: Any, base: str, quote: str, rate: str, effective: datetime) -> None:
    async with ctx.database.begin() as conn:
        await rates.set_rate(conn, ctx, base, quote, Decimal(rate), effective)


async def test_foreign_currency_purchase_needs_an_exchange_rate(
    ctx: Any, api: Api, hotel: Meta, member: str
) -> None:
    euros = purchase(10_000, "EUR")
    info = await expect_error(
        api.earn_call(hotel, member, purchase=euros), FAILED, "NO_EXCHANGE_RATE"
    )
    assert (info.metadata["base_currency"], info.metadata["quote_currency"]) == ("EUR", "USD")
    await expect_error(api.quote_call(hotel, member, purchase=euros), FAILED, "NO_EXCHANGE_RATE")
    assert await api.history(member) == []

    await set_rate(ctx, "EUR", "USD", "1.08", T0)
    await set_rate(ctx, "JPY", "USD", "0.0067", T0)
    txn = await api.earn(hotel, member, purchase=euros)
    assert parts(txn) == [("BASE", 1_080)]
    assert "USD 108.00 at 1.08" in txn.breakdown[0].description, txn.breakdown[0].description
    yen = await api.earn(hotel, member, purchase=purchase(10_000, "JPY"))
    assert parts(yen) == [("BASE", 670)]
    assert (await api.balance(member)).qualifying_points == 1_750

    # A rate older than 8 days is stale: no earn is computed with it.
    ctx.clock.set(T0 + timedelta(days=8))
    assert parts(await api.earn(hotel, member, purchase=euros)) == [("BASE", 1_080)]
    ctx.clock.advance(timedelta(seconds=1))
    await expect_error(api.earn_call(hotel, member, purchase=euros), FAILED, "NO_EXCHANGE_RATE")


async def test_a_rate_applies_from_its_effective_time(
    ctx: Any, api: Api, hotel: Meta, member: str
) -> None:
    await set_rate(ctx, "EUR", "USD", "1.10", T0 + timedelta(hours=1))
    euros = purchase(10_000, "EUR")
    await expect_error(api.earn_call(hotel, member, purchase=euros), FAILED, "NO_EXCHANGE_RATE")
    ctx.clock.advance(timedelta(hours=1))
    assert parts(await api.earn(hotel, member, purchase=euros)) == [("BASE", 1_100)]
