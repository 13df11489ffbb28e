"""The points ledger through real gRPC: exact outcomes of earn, burn, holds, reversals, vesting.

After every test the ledger invariant checker (`coalition ledger verify`) must pass.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, timedelta
from typing import Any

import grpc
import pytest
from errors import expect_error  # tests/e2e/errors.py
from google.protobuf import duration_pb2, timestamp_pb2

from coalition.v1 import common_pb2, members_pb2, members_pb2_grpc, points_pb2, points_pb2_grpc

Meta = list[tuple[str, str]]

FAILED = grpc.StatusCode.FAILED_PRECONDITION
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
DENIED = grpc.StatusCode.PERMISSION_DENIED

EARN = common_pb2.TRANSACTION_TYPE_EARN
REDEEM = common_pb2.TRANSACTION_TYPE_REDEEM
AUTHORIZATION = common_pb2.TRANSACTION_TYPE_AUTHORIZATION
CAPTURE = common_pb2.TRANSACTION_TYPE_CAPTURE
VOID = common_pb2.TRANSACTION_TYPE_VOID
REVERSAL = common_pb2.TRANSACTION_TYPE_REVERSAL

PENDING = common_pb2.TRANSACTION_STATE_PENDING
POSTED = common_pb2.TRANSACTION_STATE_POSTED
VOIDED = common_pb2.TRANSACTION_STATE_VOIDED
EXPIRED = common_pb2.TRANSACTION_STATE_EXPIRED

HOLD_DAYS_MAX = 30


def rid() -> str:
    return uuid.uuid4().hex


def ref(member: str) -> common_pb2.MemberRef:
    return common_pb2.MemberRef(member=member)


def usd(amount_minor: int, currency: str = "USD") -> common_pb2.Purchase:
    return common_pb2.Purchase(amount_minor=amount_minor, currency_code=currency)


def ts(when: Any) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(when)
    return stamp


class Ledger:
    """Thin helpers over the real stubs; every mutation gets a fresh request_id unless given."""

    def __init__(self, gateway: Any) -> None:
        self.gateway = gateway
        self.points = points_pb2_grpc.PointsServiceStub(gateway.channel)
        self.members = members_pb2_grpc.MemberServiceStub(gateway.channel)

    async def enroll(self, name: str = "Ada Lovelace") -> str:
        reply = await self.members.EnrollMember(
            members_pb2.EnrollMemberRequest(
                request_id=rid(), member=members_pb2.Member(display_name=name)
            ),
            metadata=self.gateway.as_operator,
        )
        return reply.member.name

    def earn_call(self, meta: Meta, member: str, **fields: Any) -> Any:
        fields.setdefault("request_id", rid())
        return self.points.EarnPoints(
            points_pb2.EarnPointsRequest(member=ref(member), **fields), metadata=meta
        )

    async def earn(self, meta: Meta, member: str, **fields: Any) -> common_pb2.PointsTransaction:
        return (await self.earn_call(meta, member, **fields)).transaction

    async def earn_points(self, meta: Meta, member: str, points: int) -> Any:
        return await self.earn(meta, member, action="BONUS", points=points)

    def redeem_call(self, meta: Meta, member: str, points: int, request_id: str = "") -> Any:
        return self.points.RedeemPoints(
            points_pb2.RedeemPointsRequest(
                request_id=request_id or rid(), member=ref(member), points=points
            ),
            metadata=meta,
        )

    async def redeem(self, meta: Meta, member: str, points: int) -> Any:
        return (await self.redeem_call(meta, member, points)).transaction

    def authorize_call(
        self, meta: Meta, member: str, points: int, hold_s: int | None = None
    ) -> Any:
        request = points_pb2.AuthorizeRedemptionRequest(
            request_id=rid(), member=ref(member), points=points
        )
        if hold_s is not None:
            request.hold_duration.CopyFrom(duration_pb2.Duration(seconds=hold_s))
        return self.points.AuthorizeRedemption(request, metadata=meta)

    async def authorize(self, meta: Meta, member: str, points: int, **kw: Any) -> Any:
        return (await self.authorize_call(meta, member, points, **kw)).transaction

    def capture_call(self, meta: Meta, name: str, points: int = 0) -> Any:
        return self.points.CaptureRedemption(
            points_pb2.CaptureRedemptionRequest(request_id=rid(), transaction=name, points=points),
            metadata=meta,
        )

    def void_call(self, meta: Meta, name: str) -> Any:
        return self.points.VoidRedemption(
            points_pb2.VoidRedemptionRequest(request_id=rid(), transaction=name), metadata=meta
        )

    def reverse_call(self, meta: Meta, name: str, points: int = 0) -> Any:
        return self.points.ReverseTransaction(
            points_pb2.ReverseTransactionRequest(request_id=rid(), transaction=name, points=points),
            metadata=meta,
        )

    async def reverse(self, meta: Meta, name: str, points: int = 0) -> Any:
        return (await self.reverse_call(meta, name, points)).transaction

    async def balance(self, member: str, meta: Meta | None = None) -> common_pb2.Balance:
        reply = await self.members.GetBalance(
            members_pb2.GetBalanceRequest(member=ref(member)),
            metadata=meta or self.gateway.as_operator,
        )
        return reply.balance

    async def history(
        self, member: str, meta: Meta | None = None, **fields: Any
    ) -> list[common_pb2.PointsTransaction]:
        """Every page of ListTransactions, newest first."""
        found: list[common_pb2.PointsTransaction] = []
        token = ""
        while True:
            reply = await self.members.ListTransactions(
                members_pb2.ListTransactionsRequest(
                    member=ref(member), page_token=token, page_size=100, **fields
                ),
                metadata=meta or self.gateway.as_operator,
            )
            found.extend(reply.transactions)
            token = reply.next_page_token
            if not token:
                return found

    async def find(self, member: str, name: str) -> common_pb2.PointsTransaction:
        (txn,) = [t for t in await self.history(member) if t.name == name]
        return txn


def amounts(balance: common_pb2.Balance) -> tuple[int, int, int]:
    return balance.available_points, balance.pending_points, balance.held_points


@pytest.fixture
def ledger(gateway: Any) -> Ledger:
    return Ledger(gateway)


@pytest.fixture
async def hotel(gateway: Any) -> Meta:
    _, key = await gateway.create_partner("grand-hotel")
    return gateway.auth(key)


@pytest.fixture
async def taxi(gateway: Any) -> Meta:
    _, key = await gateway.create_partner("quick-ride", "RIDE_SHARE")
    return gateway.auth(key)


@pytest.fixture
async def member(ledger: Ledger) -> str:
    return await ledger.enroll()


@pytest.fixture
async def rich(ledger: Ledger, hotel: Meta, member: str) -> str:
    """A member with 1,000 available points earned at the hotel."""
    await ledger.earn_points(hotel, member, 1000)
    return member


# -- earning ---------------------------------------------------------------------------------


async def test_purchase_earns_floor_of_rate_times_amount(
    ledger: Ledger, hotel: Meta, member: str
) -> None:
    txn = await ledger.earn(hotel, member, purchase=usd(1234), partner_reference="folio-1")
    assert re.fullmatch(rf"{re.escape(member)}/transactions/[^/]+", txn.name), txn.name
    assert re.fullmatch(r"members/[^/]+/transactions/[^/]+", txn.name)
    assert txn.type == EARN
    assert txn.state == POSTED
    assert txn.points == 123
    assert [(c.kind, c.points) for c in txn.breakdown] == [("BASE", 123)]
    assert txn.balance.available_points == 123
    assert txn.balance.pending_points == 0
    assert txn.partner == "partners/grand-hotel"
    assert txn.partner_reference == "folio-1"
    assert amounts(await ledger.balance(member)) == (123, 0, 0)


async def test_jpy_partner_earns_on_whole_yen(gateway: Any, ledger: Ledger, member: str) -> None:
    _, key = await gateway.create_partner("tokyo-inn", earn_currency_code="JPY", base_earn_rate="1")
    txn = await ledger.earn(gateway.auth(key), member, purchase=usd(1000, "JPY"))
    assert txn.points == 1000
    assert [(c.kind, c.points) for c in txn.breakdown] == [("BASE", 1000)]
    assert txn.balance.available_points == 1000


@pytest.mark.parametrize(
    ("fields", "reason", "field"),
    [
        pytest.param(
            {"purchase": usd(1000, "XXZ")},
            "INVALID_CURRENCY_CODE",
            "purchase.currency_code",
            id="unknown-currency",
        ),
        pytest.param(
            {"purchase": usd(0)}, "INVALID_AMOUNT", "purchase.amount_minor", id="zero-amount"
        ),
        pytest.param({}, "MISSING_BASIS", "basis", id="no-basis"),
        pytest.param(
            {"action": "REVIEW_WRITTEN", "points": -1}, "INVALID_POINTS", "points", id="action-neg"
        ),
        pytest.param(
            {"action": "review written", "points": 5}, "INVALID_ACTION", "action", id="action-code"
        ),
        pytest.param(
            {
                "purchase": common_pb2.Purchase(
                    amount_minor=100, currency_code="USD", category="Spa!"
                )
            },
            "INVALID_CATEGORY",
            "purchase.category",
            id="category",
        ),
    ],
)
async def test_bad_earn_is_invalid_argument(
    ledger: Ledger, hotel: Meta, member: str, fields: dict[str, Any], reason: str, field: str
) -> None:
    await expect_error(ledger.earn_call(hotel, member, **fields), INVALID, reason, field)
    assert amounts(await ledger.balance(member)) == (0, 0, 0)
    assert await ledger.history(member) == []


async def test_action_earns_the_given_points(ledger: Ledger, hotel: Meta, member: str) -> None:
    txn = await ledger.earn(hotel, member, action="REVIEW_WRITTEN", points=50)
    assert txn.points == 50
    assert txn.type == EARN
    assert txn.state == POSTED
    assert [(c.kind, c.points) for c in txn.breakdown] == [("ACTION", 50)]
    assert txn.balance.available_points == 50


async def test_operator_cannot_earn(gateway: Any, ledger: Ledger, member: str) -> None:
    await expect_error(
        ledger.earn_call(gateway.as_operator, member, purchase=usd(1234)),
        DENIED,
        "PARTNER_ONLY",
    )


async def test_charity_cannot_earn(gateway: Any, ledger: Ledger, member: str) -> None:
    _, key = await gateway.create_partner("good-cause", "CHARITY")
    await expect_error(
        ledger.earn_call(gateway.auth(key), member, purchase=usd(1234)),
        DENIED,
        "PARTNER_NOT_AUTHORIZED",
    )
    assert amounts(await ledger.balance(member)) == (0, 0, 0)


# -- vesting ---------------------------------------------------------------------------------


async def test_pending_earn_vests_lazily(
    ctx: Any, ledger: Ledger, hotel: Meta, member: str
) -> None:
    vest = ctx.clock.now() + timedelta(days=1)
    txn = await ledger.earn(hotel, member, purchase=usd(1234), vest_time=ts(vest))
    assert txn.state == PENDING
    assert txn.points == 123
    assert txn.vest_time.ToDatetime(tzinfo=UTC) == vest
    assert amounts(txn.balance) == (0, 123, 0)
    await expect_error(ledger.redeem_call(hotel, member, 1), FAILED, "INSUFFICIENT_POINTS")

    ctx.clock.advance(timedelta(days=2))
    assert amounts(await ledger.balance(member)) == (123, 0, 0)
    (listed,) = await ledger.history(member)
    assert listed.name == txn.name
    assert listed.state == POSTED
    assert listed.points == 123
    redeemed = await ledger.redeem(hotel, member, 123)
    assert redeemed.balance.available_points == 0


@pytest.mark.parametrize(
    ("cancel", "pending_left", "state"),
    [pytest.param(0, 0, VOIDED, id="all"), pytest.param(23, 100, PENDING, id="part")],
)
async def test_cancel_pending_earn(
    ctx: Any,
    ledger: Ledger,
    hotel: Meta,
    member: str,
    cancel: int,
    pending_left: int,
    state: int,
) -> None:
    vest = ctx.clock.now() + timedelta(days=1)
    earn = await ledger.earn(hotel, member, purchase=usd(1234), vest_time=ts(vest))
    reversal = await ledger.reverse(hotel, earn.name, cancel)
    assert reversal.type == REVERSAL
    assert reversal.related_transaction == earn.name
    assert reversal.points == -(cancel or 123)
    assert amounts(reversal.balance) == (0, pending_left, 0)
    assert amounts(await ledger.balance(member)) == (0, pending_left, 0)
    assert (await ledger.find(member, earn.name)).state == state

    # Whatever was not cancelled still vests.
    ctx.clock.advance(timedelta(days=2))
    assert amounts(await ledger.balance(member)) == (pending_left, 0, 0)


# -- redemption ------------------------------------------------------------------------------


async def test_redeem_more_than_available_changes_nothing(
    ledger: Ledger, hotel: Meta, rich: str
) -> None:
    info = await expect_error(ledger.redeem_call(hotel, rich, 1001), FAILED, "INSUFFICIENT_POINTS")
    assert info.metadata["available_points"] == "1000"
    assert amounts(await ledger.balance(rich)) == (1000, 0, 0)
    assert [t.type for t in await ledger.history(rich)] == [EARN]


async def test_redeem_exact_amount_leaves_zero(ledger: Ledger, hotel: Meta, rich: str) -> None:
    txn = await ledger.redeem(hotel, rich, 1000)
    assert txn.type == REDEEM
    assert txn.state == POSTED
    assert txn.points == -1000
    assert txn.balance.available_points == 0
    assert amounts(await ledger.balance(rich)) == (0, 0, 0)


# -- holds -----------------------------------------------------------------------------------


async def test_authorize_then_partial_capture_releases_the_rest(
    ledger: Ledger, hotel: Meta, rich: str
) -> None:
    auth = await ledger.authorize(hotel, rich, 300)
    assert auth.type == AUTHORIZATION
    assert auth.state == PENDING
    assert auth.points == -300
    assert auth.held_points == 300
    assert amounts(auth.balance) == (700, 0, 300)
    assert amounts(await ledger.balance(rich)) == (700, 0, 300)

    capture = (await ledger.capture_call(hotel, auth.name, 200)).transaction
    assert capture.type == CAPTURE
    assert capture.state == POSTED
    assert capture.points == -200
    assert capture.related_transaction == auth.name
    assert amounts(capture.balance) == (800, 0, 0)
    assert amounts(await ledger.balance(rich)) == (800, 0, 0)
    assert (await ledger.find(rich, auth.name)).state == POSTED


async def test_capture_more_than_held(ledger: Ledger, hotel: Meta, rich: str) -> None:
    auth = await ledger.authorize(hotel, rich, 300)
    info = await expect_error(
        ledger.capture_call(hotel, auth.name, 301), FAILED, "CAPTURE_EXCEEDS_HOLD"
    )
    assert info.metadata["held_points"] == "300"
    assert amounts(await ledger.balance(rich)) == (700, 0, 300)


@pytest.mark.parametrize("act", ["capture", "void"])
async def test_expired_hold_cannot_be_used_and_is_released(
    ctx: Any, ledger: Ledger, hotel: Meta, rich: str, act: str
) -> None:
    auth = await ledger.authorize(hotel, rich, 300, hold_s=60)
    ctx.clock.advance(timedelta(seconds=61))
    call = (
        ledger.capture_call(hotel, auth.name)
        if act == "capture"
        else ledger.void_call(hotel, auth.name)
    )
    await expect_error(call, FAILED, "HOLD_EXPIRED")
    assert amounts(await ledger.balance(rich)) == (1000, 0, 0)
    assert (await ledger.find(rich, auth.name)).state == EXPIRED


async def test_void_releases_and_second_void_is_not_open(
    ledger: Ledger, hotel: Meta, rich: str
) -> None:
    auth = await ledger.authorize(hotel, rich, 300)
    void = (await ledger.void_call(hotel, auth.name)).transaction
    assert void.type == VOID
    assert void.related_transaction == auth.name
    assert amounts(void.balance) == (1000, 0, 0)
    await expect_error(ledger.void_call(hotel, auth.name), FAILED, "HOLD_NOT_OPEN")
    await expect_error(ledger.capture_call(hotel, auth.name), FAILED, "HOLD_NOT_OPEN")
    assert (await ledger.find(rich, auth.name)).state == VOIDED
    assert amounts(await ledger.balance(rich)) == (1000, 0, 0)


async def test_void_of_captured_hold_is_not_open(ledger: Ledger, hotel: Meta, rich: str) -> None:
    auth = await ledger.authorize(hotel, rich, 300)
    await ledger.capture_call(hotel, auth.name)
    await expect_error(ledger.void_call(hotel, auth.name), FAILED, "HOLD_NOT_OPEN")
    await expect_error(ledger.capture_call(hotel, auth.name), FAILED, "HOLD_NOT_OPEN")
    assert amounts(await ledger.balance(rich)) == (700, 0, 0)


@pytest.mark.parametrize("act", ["capture", "void"])
async def test_only_an_authorization_can_be_captured_or_voided(
    ledger: Ledger, hotel: Meta, member: str, act: str
) -> None:
    earn = await ledger.earn(hotel, member, purchase=usd(1234))
    call = (
        ledger.capture_call(hotel, earn.name)
        if act == "capture"
        else ledger.void_call(hotel, earn.name)
    )
    await expect_error(call, FAILED, "NOT_AN_AUTHORIZATION")
    assert amounts(await ledger.balance(member)) == (123, 0, 0)


async def test_hold_duration_above_maximum(ledger: Ledger, hotel: Meta, rich: str) -> None:
    await expect_error(
        ledger.authorize_call(hotel, rich, 300, hold_s=HOLD_DAYS_MAX * 86_400 + 1),
        INVALID,
        "INVALID_HOLD_DURATION",
        "hold_duration",
    )
    assert amounts(await ledger.balance(rich)) == (1000, 0, 0)


async def test_hold_duration_at_maximum_is_accepted(ledger: Ledger, hotel: Meta, rich: str) -> None:
    auth = await ledger.authorize(hotel, rich, 300, hold_s=HOLD_DAYS_MAX * 86_400)
    assert auth.held_points == 300


# -- reversals -------------------------------------------------------------------------------


async def test_full_reversal_of_an_earn(ledger: Ledger, hotel: Meta, member: str) -> None:
    earn = await ledger.earn(hotel, member, purchase=usd(1234))
    reversal = await ledger.reverse(hotel, earn.name)
    assert reversal.type == REVERSAL
    assert reversal.state == POSTED
    assert reversal.points == -123
    assert reversal.related_transaction == earn.name
    assert amounts(reversal.balance) == (0, 0, 0)
    assert amounts(await ledger.balance(member)) == (0, 0, 0)
    # The original is never changed.
    original = await ledger.find(member, earn.name)
    assert (original.type, original.state, original.points) == (EARN, POSTED, 123)
    await expect_error(ledger.reverse_call(hotel, earn.name), FAILED, "REVERSAL_EXCEEDS_ORIGINAL")


async def test_partial_reversals_up_to_the_original(
    ledger: Ledger, hotel: Meta, member: str
) -> None:
    earn = await ledger.earn(hotel, member, purchase=usd(1234))
    assert (await ledger.reverse(hotel, earn.name, 50)).balance.available_points == 73
    assert (await ledger.reverse(hotel, earn.name, 50)).balance.available_points == 23
    info = await expect_error(
        ledger.reverse_call(hotel, earn.name, 24), FAILED, "REVERSAL_EXCEEDS_ORIGINAL"
    )
    assert info.metadata["reversible_points"] == "23"
    assert amounts(await ledger.balance(member)) == (23, 0, 0)
    last = await ledger.reverse(hotel, earn.name, 23)
    assert last.points == -23
    assert amounts(await ledger.balance(member)) == (0, 0, 0)


async def test_reversing_a_redemption_refunds(ledger: Ledger, hotel: Meta, rich: str) -> None:
    redeem = await ledger.redeem(hotel, rich, 400)
    assert redeem.balance.available_points == 600
    refund = await ledger.reverse(hotel, redeem.name)
    assert refund.type == REVERSAL
    assert refund.points == 400
    assert refund.related_transaction == redeem.name
    assert amounts(await ledger.balance(rich)) == (1000, 0, 0)


async def test_reversing_a_capture_refunds(ledger: Ledger, hotel: Meta, rich: str) -> None:
    auth = await ledger.authorize(hotel, rich, 300)
    capture = (await ledger.capture_call(hotel, auth.name)).transaction
    assert amounts(capture.balance) == (700, 0, 0)
    refund = await ledger.reverse(hotel, capture.name, 100)
    assert refund.points == 100
    assert amounts(await ledger.balance(rich)) == (800, 0, 0)


async def test_clawback_of_spent_points_blocks_redemptions_until_covered(
    ledger: Ledger, hotel: Meta, member: str
) -> None:
    earn = await ledger.earn_points(hotel, member, 100)
    await ledger.redeem(hotel, member, 100)
    clawback = await ledger.reverse(hotel, earn.name)
    assert clawback.points == -100
    assert clawback.balance.available_points == -100
    assert amounts(await ledger.balance(member)) == (-100, 0, 0)

    info = await expect_error(ledger.redeem_call(hotel, member, 1), FAILED, "NEGATIVE_BALANCE")
    assert info.metadata["available_points"] == "-100"
    assert amounts(await ledger.balance(member)) == (-100, 0, 0)

    topped = await ledger.earn_points(hotel, member, 150)
    assert topped.balance.available_points == 50
    assert (await ledger.redeem(hotel, member, 50)).balance.available_points == 0


async def test_another_partners_transaction_is_not_found_but_operator_reverses_it(
    gateway: Any, ledger: Ledger, hotel: Meta, taxi: Meta, member: str
) -> None:
    earn = await ledger.earn(hotel, member, purchase=usd(1234))
    await expect_error(ledger.reverse_call(taxi, earn.name), NOT_FOUND, "TRANSACTION_NOT_FOUND")
    assert amounts(await ledger.balance(member)) == (123, 0, 0)
    reversal = await ledger.reverse(gateway.as_operator, earn.name, 23)
    assert reversal.points == -23
    assert reversal.partner == "partners/grand-hotel"
    assert amounts(await ledger.balance(member)) == (100, 0, 0)


@pytest.mark.parametrize("act", ["capture", "void"])
async def test_another_partners_authorization_is_not_found(
    ledger: Ledger, hotel: Meta, taxi: Meta, rich: str, act: str
) -> None:
    auth = await ledger.authorize(hotel, rich, 300)
    call = (
        ledger.capture_call(taxi, auth.name)
        if act == "capture"
        else ledger.void_call(taxi, auth.name)
    )
    await expect_error(call, NOT_FOUND, "TRANSACTION_NOT_FOUND")
    assert amounts(await ledger.balance(rich)) == (700, 0, 300)
    assert (await ledger.find(rich, auth.name)).state == PENDING


async def test_reversing_a_reversal_is_not_reversible(
    ledger: Ledger, hotel: Meta, member: str
) -> None:
    earn = await ledger.earn(hotel, member, purchase=usd(1234))
    reversal = await ledger.reverse(hotel, earn.name, 50)
    await expect_error(
        ledger.reverse_call(hotel, reversal.name), FAILED, "TRANSACTION_NOT_REVERSIBLE"
    )
    assert amounts(await ledger.balance(member)) == (73, 0, 0)


async def test_reversing_an_authorization_is_not_reversible(
    ledger: Ledger, hotel: Meta, rich: str
) -> None:
    auth = await ledger.authorize(hotel, rich, 300)
    await expect_error(ledger.reverse_call(hotel, auth.name), FAILED, "TRANSACTION_NOT_REVERSIBLE")


# -- history ---------------------------------------------------------------------------------


async def test_history_is_newest_first_and_pages(ledger: Ledger, hotel: Meta, member: str) -> None:
    made = [
        (await ledger.earn_points(hotel, member, 100)).name,
        (await ledger.earn_points(hotel, member, 100)).name,
        (await ledger.redeem(hotel, member, 10)).name,
        (await ledger.earn_points(hotel, member, 100)).name,
        (await ledger.redeem(hotel, member, 20)).name,
    ]
    pages: list[list[str]] = []
    token = ""
    while True:
        reply = await ledger.members.ListTransactions(
            members_pb2.ListTransactionsRequest(member=ref(member), page_size=2, page_token=token),
            metadata=hotel,
        )
        pages.append([t.name for t in reply.transactions])
        token = reply.next_page_token
        if not token:
            break
        assert len(pages) < 10, "paging does not end"
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [n for p in pages for n in p] == made[::-1]

    redeems = await ledger.history(member, hotel, type=REDEEM)
    assert [t.name for t in redeems] == [made[4], made[2]]
    assert {t.type for t in redeems} == {REDEEM}
    earns = await ledger.history(member, hotel, type=EARN)
    assert [t.name for t in earns] == [made[3], made[1], made[0]]


async def test_partner_sees_only_its_own_transactions(
    gateway: Any, ledger: Ledger, hotel: Meta, taxi: Meta, member: str
) -> None:
    at_hotel = await ledger.earn_points(hotel, member, 100)
    at_taxi = await ledger.earn_points(taxi, member, 40)
    assert [t.name for t in await ledger.history(member, hotel)] == [at_hotel.name]
    assert [t.name for t in await ledger.history(member, taxi)] == [at_taxi.name]
    # A partner cannot widen its view by naming another partner.
    snooping = await ledger.history(member, taxi, partner="partners/grand-hotel")
    assert [t.name for t in snooping] == [at_taxi.name]

    everything = await ledger.history(member, gateway.as_operator)
    assert [t.name for t in everything] == [at_taxi.name, at_hotel.name]
    only_hotel = await ledger.history(member, gateway.as_operator, partner="partners/grand-hotel")
    assert [t.name for t in only_hotel] == [at_hotel.name]
    assert amounts(await ledger.balance(member)) == (140, 0, 0)


# -- idempotency -----------------------------------------------------------------------------


async def test_replayed_redemption_returns_the_same_transaction_and_debits_once(
    ledger: Ledger, hotel: Meta, rich: str
) -> None:
    first = await ledger.redeem_call(hotel, rich, 300, request_id="redeem-1")
    again = await ledger.redeem_call(hotel, rich, 300, request_id="redeem-1")
    assert again == first
    assert again.transaction.name == first.transaction.name
    assert amounts(await ledger.balance(rich)) == (700, 0, 0)
    assert len(await ledger.history(rich, type=REDEEM)) == 1


async def test_stored_business_failure_replays_identically(
    ledger: Ledger, hotel: Meta, member: str
) -> None:
    await expect_error(
        ledger.redeem_call(hotel, member, 5000, request_id="r1"), FAILED, "INSUFFICIENT_POINTS"
    )
    await ledger.earn_points(hotel, member, 6000)
    info = await expect_error(
        ledger.redeem_call(hotel, member, 5000, request_id="r1"), FAILED, "INSUFFICIENT_POINTS"
    )
    assert info.metadata["available_points"] == "0", "the first outcome is replayed"
    assert amounts(await ledger.balance(member)) == (6000, 0, 0)
    fresh = await ledger.redeem_call(hotel, member, 5000, request_id="r2")
    assert fresh.transaction.balance.available_points == 1000
    assert amounts(await ledger.balance(member)) == (1000, 0, 0)
