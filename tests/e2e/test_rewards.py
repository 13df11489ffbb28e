"""The rewards catalog through real gRPC: publish, browse, redeem, and vouchers at the counter.

The hotel publishes; the taxi is another partner; the member starts with 4,000 points earned
at the hotel. The clock starts on Monday 2026-01-05 12:00 UTC and moves only when a test says.
After every test the ledger invariant checker (`coalition ledger verify`) must pass.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import grpc
import pytest
from earn_api import Api, Meta, rid, when
from errors import expect_error
from reward_api import (
    CODE_SHOWN,
    CONSUMED,
    EXPIRED,
    ISSUED,
    REFUNDED,
    Rewards,
    reward,
)
from sqlalchemy import select

from coalition.v1 import common_pb2, rewards_pb2
from gateway.domain.rewards import display_code, new_voucher_code, parse_voucher_code
from gateway.service import outbox
from gateway.service import rewards as reward_service

INVALID = grpc.StatusCode.INVALID_ARGUMENT
FAILED = grpc.StatusCode.FAILED_PRECONDITION
NOT_FOUND = grpc.StatusCode.NOT_FOUND
DENIED = grpc.StatusCode.PERMISSION_DENIED
EXISTS = grpc.StatusCode.ALREADY_EXISTS

HOTEL = "partners/grand-hotel"
TAXI = "partners/city-taxi"
HOTEL_WEBHOOK = "https://hotel.example/coalition/webhooks"
START_POINTS = 4_000
PRICE = 1_000
VALIDITY = timedelta(days=30)
REWARD_TXN = common_pb2.TRANSACTION_TYPE_REWARD
REVERSAL_TXN = common_pb2.TRANSACTION_TYPE_REVERSAL


@pytest.fixture
def api(gateway: Any) -> Api:
    return Api(gateway)


@pytest.fixture
def rewards(gateway: Any) -> Rewards:
    return Rewards(gateway)


@pytest.fixture
async def hotel(gateway: Any) -> Meta:
    _, key = await gateway.create_partner("grand-hotel", webhook_url=HOTEL_WEBHOOK)
    return list(gateway.auth(key))


@pytest.fixture
async def taxi(gateway: Any) -> Meta:
    _, key = await gateway.create_partner("city-taxi", "RIDE_SHARE")
    return list(gateway.auth(key))


@pytest.fixture
async def member(api: Api, hotel: Meta) -> str:
    name = await api.enroll()
    await api.earn(hotel, name, action="BONUS", points=START_POINTS)
    return name


@pytest.fixture
async def night(rewards: Rewards, hotel: Meta) -> rewards_pb2.Reward:
    """The hotel's free night: 1,000 points, 10 in stock, vouchers valid for 30 days."""
    return await rewards.create(hotel, reward(PRICE, stock=10, validity=VALIDITY))


async def available(api: Api, member: str) -> int:
    return (await api.balance(member)).available_points


async def events_of(ctx: Any, member: str, type_: str) -> list[outbox.Event]:
    async with ctx.database.connect() as conn:
        return await outbox.events(conn, subject=member, type_=type_)


async def destinations(ctx: Any, event: outbox.Event) -> list[str]:
    d = outbox.DELIVERIES
    async with ctx.database.connect() as conn:
        rows = await conn.scalars(
            select(d.c.destination).where(d.c.event_seq == event.seq).order_by(d.c.destination)
        )
        return list(rows)


# -- publishing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "parent", [pytest.param("", id="parent-empty"), pytest.param(HOTEL, id="parent-own-name")]
)
async def test_a_partner_publishes_under_its_own_name(
    ctx: Any, rewards: Rewards, hotel: Meta, parent: str
) -> None:
    message = reward(2_500, stock=3, validity=timedelta(days=90), description="Any room")
    created = await rewards.create(hotel, message, parent)
    assert created.name.startswith(f"{HOTEL}/rewards/")
    assert created.name != f"{HOTEL}/rewards/"
    assert (created.display_name, created.description) == ("Free night", "Any room")
    assert created.kind == rewards_pb2.Reward.KIND_FREE_NIGHT
    assert (created.points_price, created.stock, created.available_stock) == (2_500, 3, 3)
    assert created.voucher_validity.ToTimedelta() == timedelta(days=90)
    assert when(created.create_time) == ctx.clock.now()
    assert not created.HasField("start_time") and not created.HasField("end_time")
    assert await rewards.get(created.name) == created


async def test_the_operator_publishes_for_a_partner(
    rewards: Rewards, hotel: Meta, taxi: Meta
) -> None:
    created = await rewards.create(rewards.operator, reward(), TAXI)
    assert created.name.startswith(f"{TAXI}/rewards/")


async def test_the_operator_must_name_the_partner(rewards: Rewards) -> None:
    await expect_error(
        rewards.create_call(rewards.operator, reward()), INVALID, "MISSING_PARENT", "parent"
    )


async def test_the_operator_cannot_publish_for_an_unknown_partner(rewards: Rewards) -> None:
    await expect_error(
        rewards.create_call(rewards.operator, reward(), "partners/nobody"),
        NOT_FOUND,
        "PARTNER_NOT_FOUND",
    )


async def test_a_partner_cannot_publish_for_another(
    rewards: Rewards, hotel: Meta, taxi: Meta
) -> None:
    await expect_error(rewards.create_call(taxi, reward(), HOTEL), DENIED, "PARTNER_NOT_AUTHORIZED")
    assert await rewards.catalog(rewards.operator) == []


@pytest.mark.parametrize(
    ("fields", "reason", "field"),
    [
        pytest.param({"display_name": ""}, "MISSING_DISPLAY_NAME", "display_name", id="no-name"),
        pytest.param(
            {"display_name": "   "}, "MISSING_DISPLAY_NAME", "display_name", id="blank-name"
        ),
        pytest.param({"points_price": 0}, "INVALID_POINTS_PRICE", "points_price", id="free"),
        pytest.param({"points_price": -1}, "INVALID_POINTS_PRICE", "points_price", id="negative"),
        pytest.param({"stock": -1}, "INVALID_STOCK", "stock", id="negative-stock"),
        pytest.param({"stock": 10_000_001}, "INVALID_STOCK", "stock", id="too-much-stock"),
        pytest.param({"end_before_start": True}, "INVALID_TIME_RANGE", "end_time", id="window"),
        pytest.param(
            {"validity": timedelta(0)}, "INVALID_VOUCHER_VALIDITY", "voucher_validity", id="0s"
        ),
        pytest.param(
            {"validity": timedelta(seconds=-60)},
            "INVALID_VOUCHER_VALIDITY",
            "voucher_validity",
            id="negative-validity",
        ),
        pytest.param(
            {"validity": timedelta(days=3 * 366 + 1)},
            "INVALID_VOUCHER_VALIDITY",
            "voucher_validity",
            id="validity-over-three-years",
        ),
        pytest.param(
            {"kind": rewards_pb2.Reward.KIND_UNSPECIFIED}, "MISSING_KIND", "kind", id="no-kind"
        ),
        pytest.param(
            {"description": "d" * 2_001}, "FIELD_TOO_LONG", "description", id="long-description"
        ),
    ],
)
async def test_an_invalid_reward_names_its_field(
    ctx: Any, rewards: Rewards, hotel: Meta, fields: dict[str, Any], reason: str, field: str
) -> None:
    if fields.pop("end_before_start", False):
        now = ctx.clock.now()
        fields.update(start=now + timedelta(days=2), end=now + timedelta(days=1))
    request_id = rid()
    await expect_error(
        rewards.create_call(hotel, reward(**fields), request_id=request_id),
        INVALID,
        reason,
        f"reward.{field}",
    )
    # Bad input is not stored: the corrected request may reuse the request_id.
    assert (await rewards.create_call(hotel, reward(), request_id=request_id)).reward.name


async def test_a_replayed_create_returns_the_same_reward(rewards: Rewards, hotel: Meta) -> None:
    first = await rewards.create_call(hotel, reward(), request_id="publish-1")
    again = await rewards.create_call(hotel, reward(), request_id="publish-1")
    assert again == first
    assert len(await rewards.catalog(hotel)) == 1
    await expect_error(
        rewards.create_call(hotel, reward(points_price=5), request_id="publish-1"),
        EXISTS,
        "REQUEST_ID_REUSED",
    )


# -- browsing --------------------------------------------------------------------------------


async def test_the_catalog_is_ordered_by_partner_then_reward_and_pages(
    rewards: Rewards, hotel: Meta, taxi: Meta
) -> None:
    published = [await rewards.create(hotel, reward(display_name=f"Hotel {i}")) for i in range(4)]
    published += [await rewards.create(taxi, reward(display_name=f"Ride {i}")) for i in range(3)]
    names = sorted((r.name for r in published), key=lambda n: (n.split("/")[1], n.split("/")[3]))
    assert names[:3] == sorted(r.name for r in published if r.name.startswith(TAXI))

    whole = await rewards.catalog(taxi)
    assert [r.name for r in whole] == names
    for size in (1, 2, 3, 7):
        assert await rewards.catalog(hotel, page_size=size) == whole, f"pages of {size}"
    first = await rewards.list_call(hotel, page_size=7)
    assert first.next_page_token == "", "no token after the last page"


async def test_the_catalog_filters_by_partner(rewards: Rewards, hotel: Meta, taxi: Meta) -> None:
    ride = await rewards.create(taxi, reward(display_name="Ride"))
    await rewards.create(hotel, reward(display_name="Night"))
    assert await rewards.catalog(hotel, partner=TAXI) == [ride]
    assert await rewards.catalog(hotel, partner="partners/nobody") == []


async def test_available_only_hides_sold_out_and_out_of_window_rewards(
    ctx: Any, api: Api, rewards: Rewards, hotel: Meta, member: str
) -> None:
    now = ctx.clock.now()
    day = timedelta(days=1)
    open_ = await rewards.create(hotel, reward(display_name="Open", stock=5))
    unlimited = await rewards.create(hotel, reward(display_name="Unlimited", stock=0))
    window = await rewards.create(
        hotel, reward(display_name="This week", start=now - day, end=now + day)
    )
    last = await rewards.create(hotel, reward(display_name="Last one", stock=1))
    await rewards.create(hotel, reward(display_name="Later", start=now + day))
    await rewards.create(hotel, reward(display_name="Over", end=now))
    await rewards.redeem(hotel, member, last.name)

    shown = await rewards.catalog(hotel, available_only=True)
    assert sorted(r.display_name for r in shown) == sorted(
        r.display_name for r in (open_, unlimited, window)
    )
    assert len(await rewards.catalog(hotel)) == 6
    sold_out = await rewards.get(last.name)
    assert (sold_out.stock, sold_out.available_stock) == (1, 0)


async def test_an_invalid_page_token_is_refused(rewards: Rewards, hotel: Meta) -> None:
    await expect_error(
        rewards.list_call(hotel, page_token="not-a-token"), INVALID, "INVALID_PAGE_TOKEN"
    )


# -- redeeming -------------------------------------------------------------------------------


async def test_redeeming_debits_a_reward_transaction_and_issues_a_voucher(
    ctx: Any, api: Api, rewards: Rewards, hotel: Meta, member: str, night: Any
) -> None:
    now = ctx.clock.now()
    reply = await rewards.redeem(hotel, member, night.name)
    voucher, txn = reply.voucher, reply.transaction

    assert CODE_SHOWN.fullmatch(voucher.code), voucher.code
    assert parse_voucher_code(voucher.code) == voucher.code.replace("-", "")
    assert (voucher.reward, voucher.member, voucher.state) == (night.name, member, ISSUED)
    assert (voucher.points, voucher.transaction) == (PRICE, txn.name)
    assert (when(voucher.issue_time), when(voucher.expire_time)) == (now, now + VALIDITY)
    assert not voucher.HasField("consume_time") and voucher.refund_transaction == ""

    assert txn.name.startswith(f"{member}/transactions/")
    assert (txn.type, txn.points, txn.partner) == (REWARD_TXN, -PRICE, HOTEL)
    assert txn.balance.available_points == START_POINTS - PRICE
    assert await available(api, member) == START_POINTS - PRICE
    (shown,) = [t for t in await api.history(member) if t.name == txn.name]
    assert shown.type == REWARD_TXN
    assert (await rewards.get(night.name)).available_stock == 9

    (issued,) = await events_of(ctx, member, reward_service.VOUCHER_ISSUED)
    assert issued.payload["code"] == voucher.code
    assert issued.payload["transaction"] == txn.name
    member_id = member.removeprefix("members/")
    assert await destinations(ctx, issued) == [f"member:{member_id}", "partner:grand-hotel"]


async def test_any_partner_may_redeem_for_a_member_and_the_publisher_is_paid(
    api: Api, rewards: Rewards, hotel: Meta, taxi: Meta, member: str, night: Any
) -> None:
    reply = await rewards.redeem(taxi, member, night.name)
    assert reply.transaction.partner == HOTEL
    assert reply.voucher.reward == night.name
    assert await available(api, member) == START_POINTS - PRICE


async def test_a_replayed_redemption_returns_the_same_voucher_and_debits_once(
    ctx: Any, api: Api, rewards: Rewards, hotel: Meta, member: str, night: Any
) -> None:
    first = await rewards.redeem(hotel, member, night.name, request_id="order-1")
    ctx.clock.advance(timedelta(minutes=5))
    again = await rewards.redeem(hotel, member, night.name, request_id="order-1")
    assert again == first
    assert await available(api, member) == START_POINTS - PRICE
    assert (await rewards.get(night.name)).available_stock == 9
    assert len(await events_of(ctx, member, reward_service.VOUCHER_ISSUED)) == 1


async def test_insufficient_points_is_stored_and_replayed(
    api: Api, rewards: Rewards, hotel: Meta, member: str
) -> None:
    dear = await rewards.create(hotel, reward(START_POINTS + 1, stock=2))
    info = await expect_error(
        rewards.redeem_call(hotel, member, dear.name, "too-dear"), FAILED, "INSUFFICIENT_POINTS"
    )
    await api.earn(hotel, member, action="BONUS", points=500)
    replay = await expect_error(
        rewards.redeem_call(hotel, member, dear.name, "too-dear"), FAILED, "INSUFFICIENT_POINTS"
    )
    assert replay == info, "a replay answers the first outcome"
    assert (await rewards.get(dear.name)).available_stock == 2

    reply = await rewards.redeem(hotel, member, dear.name)  # a new request sees the new points
    assert reply.transaction.balance.available_points == await available(api, member)


async def test_out_of_stock(api: Api, rewards: Rewards, hotel: Meta, member: str) -> None:
    last = await rewards.create(hotel, reward(PRICE, stock=1))
    await rewards.redeem(hotel, member, last.name)
    await expect_error(rewards.redeem_call(hotel, member, last.name), FAILED, "OUT_OF_STOCK")
    assert await available(api, member) == START_POINTS - PRICE


@pytest.mark.parametrize(
    ("start_days", "end_days"),
    [
        pytest.param(1, None, id="not-started"),
        pytest.param(None, 0, id="ends-now"),
        pytest.param(-10, -1, id="ended"),
    ],
)
async def test_a_reward_outside_its_window_is_not_available(
    ctx: Any,
    api: Api,
    rewards: Rewards,
    hotel: Meta,
    member: str,
    start_days: int | None,
    end_days: int | None,
) -> None:
    now = ctx.clock.now()
    offer = await rewards.create(
        hotel,
        reward(
            start=None if start_days is None else now + timedelta(days=start_days),
            end=None if end_days is None else now + timedelta(days=end_days),
        ),
    )
    await expect_error(
        rewards.redeem_call(hotel, member, offer.name), FAILED, "REWARD_NOT_AVAILABLE"
    )
    assert await available(api, member) == START_POINTS


async def test_a_reward_is_available_from_its_start(
    ctx: Any, rewards: Rewards, hotel: Meta, member: str
) -> None:
    start = ctx.clock.now() + timedelta(days=1)
    offer = await rewards.create(hotel, reward(start=start))
    ctx.clock.set(start)
    assert (await rewards.redeem(hotel, member, offer.name)).voucher.state == ISSUED


@pytest.mark.parametrize(
    ("name", "code", "reason"),
    [
        pytest.param(f"{HOTEL}/rewards/0000", NOT_FOUND, "REWARD_NOT_FOUND", id="unknown"),
        pytest.param(f"{TAXI}/rewards/NIGHT", NOT_FOUND, "REWARD_NOT_FOUND", id="other-partner"),
        pytest.param("rewards/0000", INVALID, "INVALID_REWARD_NAME", id="malformed"),
    ],
)
async def test_an_unknown_reward(
    rewards: Rewards,
    hotel: Meta,
    taxi: Meta,
    member: str,
    night: Any,
    name: str,
    code: grpc.StatusCode,
    reason: str,
) -> None:
    name = name.replace("NIGHT", night.name.rsplit("/", 1)[1])
    await expect_error(rewards.redeem_call(hotel, member, name), code, reason)


async def test_an_unknown_member(rewards: Rewards, hotel: Meta, night: Any) -> None:
    await expect_error(
        rewards.redeem_call(hotel, "members/nobody", night.name), NOT_FOUND, "MEMBER_NOT_FOUND"
    )


# -- vouchers at the counter -----------------------------------------------------------------


@pytest.fixture
async def voucher(rewards: Rewards, hotel: Meta, member: str, night: Any) -> rewards_pb2.Voucher:
    return (await rewards.redeem(hotel, member, night.name)).voucher


async def test_the_issuing_partner_validates_then_consumes(
    ctx: Any, rewards: Rewards, hotel: Meta, member: str, voucher: Any
) -> None:
    checked = await rewards.validate(hotel, voucher.code)
    assert (checked.valid, checked.voucher) == (True, voucher)

    ctx.clock.advance(timedelta(days=2))
    used = await rewards.consume(hotel, voucher.code)
    assert used.state == CONSUMED
    assert when(used.consume_time) == ctx.clock.now()
    expected = rewards_pb2.Voucher()
    expected.CopyFrom(voucher)
    expected.state = CONSUMED
    expected.consume_time.CopyFrom(used.consume_time)
    assert used == expected

    after = await rewards.validate(hotel, voucher.code)
    assert (after.valid, after.voucher) == (False, used)
    (consumed,) = await events_of(ctx, member, reward_service.VOUCHER_CONSUMED)
    assert consumed.payload["code"] == voucher.code
    assert "partner:grand-hotel" in await destinations(ctx, consumed)


async def test_the_operator_validates_and_consumes_any_voucher(
    rewards: Rewards, voucher: Any
) -> None:
    assert (await rewards.validate(rewards.operator, voucher.code)).valid
    assert (await rewards.consume(rewards.operator, voucher.code)).state == CONSUMED


async def test_a_voucher_is_consumed_once_but_a_replay_gets_the_first_answer(
    ctx: Any, rewards: Rewards, hotel: Meta, member: str, voucher: Any
) -> None:
    first = await rewards.consume_call(hotel, voucher.code, "till-1")
    ctx.clock.advance(timedelta(minutes=1))
    assert await rewards.consume_call(hotel, voucher.code, "till-1") == first

    info = await expect_error(
        rewards.consume_call(hotel, voucher.code, "till-2"), FAILED, "VOUCHER_ALREADY_CONSUMED"
    )
    assert info.metadata["code"] == voucher.code
    assert info.metadata["consume_time"] == when(first.voucher.consume_time).isoformat()
    assert len(await events_of(ctx, member, reward_service.VOUCHER_CONSUMED)) == 1


async def test_another_partners_voucher_is_not_found(
    rewards: Rewards, taxi: Meta, voucher: Any
) -> None:
    await expect_error(rewards.validate_call(taxi, voucher.code), NOT_FOUND, "VOUCHER_NOT_FOUND")
    await expect_error(rewards.consume_call(taxi, voucher.code), NOT_FOUND, "VOUCHER_NOT_FOUND")


async def test_a_well_formed_code_nobody_was_issued_is_not_found(
    rewards: Rewards, hotel: Meta, voucher: Any
) -> None:
    code = display_code(new_voucher_code())
    await expect_error(rewards.validate_call(hotel, code), NOT_FOUND, "VOUCHER_NOT_FOUND")
    await expect_error(rewards.consume_call(hotel, code), NOT_FOUND, "VOUCHER_NOT_FOUND")


def mistyped(code: str) -> str:
    """The code with its last (check) character replaced by another of the alphabet."""
    last = code[-1]
    return code[:-1] + ("0" if last != "0" else "1")


@pytest.mark.parametrize(
    "typed",
    [
        pytest.param(mistyped, id="bad-check-character"),
        pytest.param(lambda c: c[:-1], id="too-short"),
        pytest.param(lambda c: c + "-" + "X" * 60, id="too-long"),
        pytest.param(lambda c: c.replace(c[0], "U", 1), id="letter-u"),
        pytest.param(lambda c: "", id="empty"),
    ],
)
async def test_a_mistyped_code_is_invalid_before_any_lookup(
    rewards: Rewards, hotel: Meta, voucher: Any, typed: Any
) -> None:
    bad = typed(voucher.code)
    await expect_error(rewards.validate_call(hotel, bad), INVALID, "INVALID_VOUCHER_CODE", "code")
    await expect_error(rewards.consume_call(hotel, bad), INVALID, "INVALID_VOUCHER_CODE", "code")


@pytest.mark.parametrize(
    "typed",
    [
        pytest.param(str.lower, id="lowercase"),
        pytest.param(lambda c: c.replace("-", ""), id="no-dashes"),
        pytest.param(lambda c: c.replace("-", " ").lower(), id="spaces-lowercase"),
    ],
)
async def test_a_code_is_read_however_it_is_typed(
    rewards: Rewards, hotel: Meta, voucher: Any, typed: Any
) -> None:
    assert (await rewards.validate(hotel, typed(voucher.code))).voucher.code == voucher.code
    assert (await rewards.consume(hotel, typed(voucher.code))).code == voucher.code


async def test_a_reward_transaction_cannot_be_reversed(
    rewards: Rewards, api: Api, hotel: Meta, member: str, night: Any
) -> None:
    txn = (await rewards.redeem(hotel, member, night.name)).transaction
    for meta in (hotel, api.operator):
        await expect_error(api.reverse_call(meta, txn.name), FAILED, "TRANSACTION_NOT_REVERSIBLE")
    assert await available(api, member) == START_POINTS - PRICE


# -- expiry and the refund policy ------------------------------------------------------------


async def test_an_unused_voucher_expires_then_is_refunded_in_full(
    ctx: Any, api: Api, rewards: Rewards, hotel: Meta, member: str, night: Any, voucher: Any
) -> None:
    expire_time = when(voucher.expire_time)
    ctx.clock.set(expire_time - timedelta(seconds=1))
    assert (await rewards.validate(hotel, voucher.code)).valid
    assert await reward_service.refund_expired(ctx) == 0, "not expired yet"

    ctx.clock.set(expire_time)
    shown = await rewards.validate(hotel, voucher.code)
    assert (shown.valid, shown.voucher.state) == (False, EXPIRED)
    info = await expect_error(rewards.consume_call(hotel, voucher.code), FAILED, "VOUCHER_EXPIRED")
    assert info.metadata["expire_time"] == expire_time.isoformat()
    assert await available(api, member) == START_POINTS - PRICE, "expired, not yet refunded"

    ctx.clock.advance(timedelta(minutes=5))
    assert await reward_service.refund_expired(ctx) == 1
    assert await reward_service.refund_expired(ctx) == 0, "refunded once"

    shown = await rewards.validate(hotel, voucher.code)
    assert (shown.valid, shown.voucher.state) == (False, REFUNDED)
    refund = shown.voucher.refund_transaction
    assert refund.startswith(f"{member}/transactions/")
    (txn,) = [t for t in await api.history(member) if t.name == refund]
    assert (txn.type, txn.points, txn.related_transaction) == (
        REVERSAL_TXN,
        PRICE,
        voucher.transaction,
    )
    assert await available(api, member) == START_POINTS
    assert (await rewards.get(night.name)).available_stock == 10
    await expect_error(rewards.consume_call(hotel, voucher.code), FAILED, "VOUCHER_REFUNDED")

    (refunded,) = await events_of(ctx, member, reward_service.VOUCHER_REFUNDED)
    assert refunded.payload["refund_transaction"] == refund
    assert refunded.payload["points"] == PRICE
    member_id = member.removeprefix("members/")
    assert await destinations(ctx, refunded) == [f"member:{member_id}", "partner:grand-hotel"]


async def test_a_consumed_voucher_is_never_refunded(
    ctx: Any, api: Api, rewards: Rewards, hotel: Meta, member: str, voucher: Any
) -> None:
    await rewards.consume(hotel, voucher.code)
    ctx.clock.set(when(voucher.expire_time) + timedelta(days=1))
    assert await reward_service.refund_expired(ctx) == 0
    assert (await rewards.validate(hotel, voucher.code)).voucher.state == CONSUMED
    assert await available(api, member) == START_POINTS - PRICE


async def test_a_refunded_unit_can_be_redeemed_again(
    ctx: Any, api: Api, rewards: Rewards, hotel: Meta, member: str
) -> None:
    last = await rewards.create(hotel, reward(PRICE, stock=1, validity=timedelta(hours=1)))
    await rewards.redeem(hotel, member, last.name)
    await expect_error(rewards.redeem_call(hotel, member, last.name), FAILED, "OUT_OF_STOCK")
    ctx.clock.advance(timedelta(hours=2))
    assert await reward_service.refund_expired(ctx) == 1
    again = await rewards.redeem(hotel, member, last.name)
    assert again.voucher.state == ISSUED
    assert (await rewards.get(last.name)).available_stock == 0
    assert await available(api, member) == START_POINTS - PRICE
