"""SettlementService over real gRPC: prices, FX rates, the close, statements, netting,
adjustments, reconciliation, and who may call what.

March 2026 is recorded through the API with the gateway's fixed clock, then the clock moves to
April 2 and the operator closes March. The figures follow docs/settlement.md:

    grand-hotel   USD  issue 0.01, fee 2 cents + 1.5%   earns 1,000 + 500 + 250, 100 clawed back
                                                         (1,650 net), a +500 cent adjustment
    city-taxi     USD  redemption 0.0092, fee 0.5%      one redemption of 600
    maple-market  CAD  issue 0.016, redemption 0.0125   earns 500, redemption of 200; 1.38 CAD/USD
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from earn_api import Api, Meta, purchase, ref, rid, ts, when
from errors import decode_status, details_of, expect_error
from google.rpc import error_details_pb2
from sqlalchemy import func, select

from coalition.v1 import common_pb2, points_pb2
from coalition.v1 import settlement_pb2 as pb
from coalition.v1 import settlement_pb2_grpc as pb_grpc
from gateway.clock import FixedClock
from settlement.service.periods import ADJUSTMENTS
from settlement.service.prices import FX

INVALID = grpc.StatusCode.INVALID_ARGUMENT
DENIED = grpc.StatusCode.PERMISSION_DENIED
MISSING = grpc.StatusCode.NOT_FOUND
REFUSED = grpc.StatusCode.FAILED_PRECONDITION
EXISTS = grpc.StatusCode.ALREADY_EXISTS
NOT_AUTHORIZED = "PARTNER_NOT_AUTHORIZED"

MARCH = "settlementPeriods/2026-03"
APRIL = "settlementPeriods/2026-04"
HOTEL, TAXI, MAPLE = "partners/grand-hotel", "partners/city-taxi", "partners/maple-market"
CLOSE_TIME = datetime(2026, 4, 2, 8, tzinfo=UTC)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def usd(minor: int) -> common_pb2.Money:
    return common_pb2.Money(amount_minor=minor, currency_code="USD")


def cad(minor: int) -> common_pb2.Money:
    return common_pb2.Money(amount_minor=minor, currency_code="CAD")


def statement_of(period: str, partner: str) -> str:
    return f"{period}/statements/{partner.removeprefix('partners/')}"


def token(position: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode()


def violations(err: grpc.aio.AioRpcError) -> list[str]:
    return [
        v.field
        for bad in details_of(decode_status(err), error_details_pb2.BadRequest)
        for v in bad.field_violations
    ]


class Settle:
    """The SettlementService stub with the calls the tests make, caller explicit."""

    def __init__(self, gateway: Any) -> None:
        self.stub = pb_grpc.SettlementServiceStub(gateway.channel)
        self.operator: Meta = list(gateway.as_operator)

    def create_price_list_call(
        self,
        parent: str,
        valid_from: datetime | None = datetime(2026, 1, 1, tzinfo=UTC),
        request_id: str = "",
        meta: Meta | None = None,
        **fields: Any,
    ) -> Any:
        price_list = pb.PriceList(**fields)
        if valid_from is not None:
            price_list.valid_from.CopyFrom(ts(valid_from))
        return self.stub.CreatePriceList(
            pb.CreatePriceListRequest(
                request_id=request_id or rid(), parent=parent, price_list=price_list
            ),
            metadata=meta or self.operator,
        )

    async def create_price_list(self, parent: str, **fields: Any) -> pb.PriceList:
        reply: pb.CreatePriceListResponse = await self.create_price_list_call(parent, **fields)
        return reply.price_list

    def list_price_lists_call(
        self, parent: str, page_size: int = 0, page_token: str = "", meta: Meta | None = None
    ) -> Any:
        return self.stub.ListPriceLists(
            pb.ListPriceListsRequest(parent=parent, page_size=page_size, page_token=page_token),
            metadata=meta or self.operator,
        )

    def set_fx_rate_call(
        self,
        currency: str,
        rate: str,
        period: str = MARCH,
        request_id: str = "",
        meta: Meta | None = None,
    ) -> Any:
        return self.stub.SetFxRate(
            pb.SetFxRateRequest(
                request_id=request_id or rid(), period=period, currency_code=currency, rate=rate
            ),
            metadata=meta or self.operator,
        )

    def close_call(
        self, period: str = MARCH, request_id: str = "", meta: Meta | None = None
    ) -> Any:
        return self.stub.CloseSettlementPeriod(
            pb.CloseSettlementPeriodRequest(request_id=request_id or rid(), period=period),
            metadata=meta or self.operator,
        )

    async def close(self, period: str = MARCH) -> pb.SettlementPeriod:
        reply: pb.CloseSettlementPeriodResponse = await self.close_call(period)
        return reply.settlement_period

    def get_statement_call(self, name: str, meta: Meta | None = None) -> Any:
        return self.stub.GetStatement(
            pb.GetStatementRequest(name=name), metadata=meta or self.operator
        )

    async def statement(self, name: str, meta: Meta | None = None) -> pb.Statement:
        reply: pb.GetStatementResponse = await self.get_statement_call(name, meta)
        return reply.statement

    def list_statements_call(
        self,
        parent: str = MARCH,
        page_size: int = 0,
        page_token: str = "",
        meta: Meta | None = None,
    ) -> Any:
        return self.stub.ListStatements(
            pb.ListStatementsRequest(parent=parent, page_size=page_size, page_token=page_token),
            metadata=meta or self.operator,
        )

    def list_lines_call(
        self, parent: str, page_size: int = 0, page_token: str = "", meta: Meta | None = None
    ) -> Any:
        return self.stub.ListStatementLines(
            pb.ListStatementLinesRequest(parent=parent, page_size=page_size, page_token=page_token),
            metadata=meta or self.operator,
        )

    async def lines(
        self, parent: str, page_size: int = 0, meta: Meta | None = None
    ) -> tuple[list[pb.StatementLine], int]:
        """Every line (all pages) and how many pages it took."""
        found: list[pb.StatementLine] = []
        page_token, pages = "", 0
        while True:
            reply = await self.list_lines_call(parent, page_size, page_token, meta)
            pages += 1
            found.extend(reply.statement_lines)
            page_token = reply.next_page_token
            if not page_token:
                return found, pages

    def netting_call(self, period: str = MARCH, meta: Meta | None = None) -> Any:
        return self.stub.GetNettingReport(
            pb.GetNettingReportRequest(period=period), metadata=meta or self.operator
        )

    def adjustment_call(
        self,
        partner: str,
        amount: common_pb2.Money | None = None,
        points: int = 0,
        reason: str = "goodwill",
        reference: str = "",
        period: str = "",
        request_id: str = "",
        meta: Meta | None = None,
    ) -> Any:
        return self.stub.CreateAdjustment(
            pb.CreateAdjustmentRequest(
                request_id=request_id or rid(),
                partner=partner,
                points=points,
                amount=amount,
                reason=reason,
                reference=reference,
                period=period,
            ),
            metadata=meta or self.operator,
        )

    def reconcile_call(
        self,
        content: bytes,
        partner: str = "",
        period: str = MARCH,
        request_id: str = "",
        meta: Meta | None = None,
        file_format: int = pb.PARTNER_FILE_FORMAT_CSV,
    ) -> Any:
        return self.stub.ReconcilePartnerFile(
            pb.ReconcilePartnerFileRequest(
                request_id=request_id or rid(),
                partner=partner,
                period=period,
                file_content=content,
                format=file_format,  # type: ignore[arg-type]
            ),
            metadata=meta or self.operator,
        )


HOTEL_PRICES = {"issue_price_per_point": "0.01", "fee_percent": "1.5"}
TAXI_PRICES = {"redemption_rate_per_point": "0.0092", "fee_percent": "0.5"}
MAPLE_PRICES = {"issue_price_per_point": "0.016", "redemption_rate_per_point": "0.0125"}


@dataclass
class March:
    """March recorded: who is who and what they did."""

    hotel: Meta
    taxi: Meta
    maple: Meta
    ada: str
    hotel_earns: list[common_pb2.PointsTransaction]
    clawback: common_pb2.PointsTransaction
    ride: common_pb2.PointsTransaction
    adjustment: pb.Adjustment
    hotel_prices: pb.PriceList


@pytest.fixture
def clock(ctx: Any) -> FixedClock:
    clock = ctx.clock
    assert isinstance(clock, FixedClock)
    clock.set(utc(2026, 3, 1, 9))
    return clock


@pytest.fixture
def settle(gateway: Any) -> Settle:
    return Settle(gateway)


@pytest.fixture
def api(gateway: Any) -> Api:
    return Api(gateway)


@pytest.fixture
async def march(gateway: Any, api: Api, settle: Settle, clock: FixedClock) -> March:
    """March's activity; the taxi has no price list yet and CAD no rate (see `closed`)."""
    _, hotel_key = await gateway.create_partner("grand-hotel")
    _, taxi_key = await gateway.create_partner("city-taxi", "RIDE_SHARE")
    _, maple_key = await gateway.create_partner(
        "maple-market", "RETAIL", earn_currency_code="CAD", settlement_currency_code="CAD"
    )
    hotel, taxi, maple = (gateway.auth(k) for k in (hotel_key, taxi_key, maple_key))
    hotel_prices = await settle.create_price_list(HOTEL, fee_per_transaction=usd(2), **HOTEL_PRICES)
    await settle.create_price_list(MAPLE, **MAPLE_PRICES)
    ada = await api.enroll("Ada Lovelace")

    earns = []
    for hour, (amount, reference) in enumerate(
        [(100_00, "H-1"), (50_00, "H-2"), (25_00, "H-3")], start=10
    ):
        clock.set(utc(2026, 3, 5, hour))
        earns.append(await api.buy(hotel, ada, amount, partner_reference=reference))
    assert [e.points for e in earns] == [1_000, 500, 250]
    clock.set(utc(2026, 3, 6, 9))
    clawback = (await api.reverse_call(hotel, earns[2].name, 100)).transaction
    assert (clawback.points, clawback.partner_reference) == (-100, "H-3")
    clock.set(utc(2026, 3, 7, 9))
    ride = await redeem(api, taxi, ada, 600, "T-1")
    clock.set(utc(2026, 3, 8, 9))
    maple_earn = await api.earn(
        maple, ada, purchase=purchase(50_00, "CAD"), partner_reference="M-1"
    )
    assert maple_earn.points == 500
    await redeem(api, maple, ada, 200, "M-2")
    clock.set(utc(2026, 3, 20, 9))
    reply = await settle.adjustment_call(
        HOTEL, usd(500), reason="goodwill for a noisy room", reference="TICKET-1"
    )
    return March(hotel, taxi, maple, ada, earns, clawback, ride, reply.adjustment, hotel_prices)


async def redeem(api: Api, meta: Meta, member: str, points: int, reference: str) -> Any:
    reply = await api.points.RedeemPoints(
        points_pb2.RedeemPointsRequest(
            request_id=rid(), member=ref(member), points=points, partner_reference=reference
        ),
        metadata=meta,
    )
    return reply.transaction


@pytest.fixture
async def closed(march: March, settle: Settle, clock: FixedClock) -> March:
    """March closed on April 2 (the taxi's prices and the CAD rate added first)."""
    await settle.create_price_list(TAXI, **TAXI_PRICES)
    await settle.set_fx_rate_call("CAD", "1.38")
    clock.set(CLOSE_TIME)
    period = await settle.close()
    assert period.state == pb.SettlementPeriod.STATE_CLOSED
    return march


# -- price lists ---------------------------------------------------------------------------


async def test_price_lists_are_validated_versioned_and_replayed(
    gateway: Any, settle: Settle, clock: FixedClock
) -> None:
    _, key = await gateway.create_partner("grand-hotel")
    hotel = gateway.auth(key)
    await gateway.create_partner("maple-market", settlement_currency_code="CAD")
    bad_prices = {
        "issue_price_per_point": ["-1", "abc", "1e3", "0.0125 ", ".5", "1,5", "1000001", "NaN"],
        "redemption_rate_per_point": ["-0.01", "0.0000000000001"],
        "fee_percent": ["100.01", "-1"],
    }
    for field, values in bad_prices.items():
        for value in values:
            await expect_error(
                settle.create_price_list_call(HOTEL, **{field: value}),
                INVALID,
                "INVALID_PRICE",
                f"price_list.{field}",
            )
    await expect_error(
        settle.create_price_list_call(HOTEL, fee_per_transaction=usd(-1)),
        INVALID,
        "INVALID_PRICE",
        "price_list.fee_per_transaction.amount_minor",
    )
    await expect_error(
        settle.create_price_list_call(HOTEL, currency_code="EUR"),
        INVALID,
        "CURRENCY_MISMATCH",
        "price_list.currency_code",
    )
    await expect_error(
        settle.create_price_list_call(MAPLE, currency_code="CAD", fee_per_transaction=usd(5)),
        INVALID,
        "CURRENCY_MISMATCH",
        "price_list.fee_per_transaction.currency_code",
    )
    await expect_error(
        settle.create_price_list_call(MAPLE, fee_per_transaction=usd(5)),
        INVALID,
        "CURRENCY_MISMATCH",
    )
    await expect_error(
        settle.create_price_list_call(HOTEL, valid_from=None),
        INVALID,
        "INVALID_VALID_FROM",
        "price_list.valid_from",
    )
    await expect_error(
        settle.create_price_list_call("partners/nobody-here"), MISSING, "PARTNER_NOT_FOUND"
    )

    # A bad request is not kept: the corrected one may reuse its request_id.
    request_id = rid()
    await expect_error(
        settle.create_price_list_call(HOTEL, request_id=request_id, issue_price_per_point="x"),
        INVALID,
        "INVALID_PRICE",
    )
    first = await settle.create_price_list_call(
        HOTEL, request_id=request_id, fee_per_transaction=usd(2), **HOTEL_PRICES
    )
    version = first.price_list
    assert version.name.startswith(f"{HOTEL}/priceLists/")
    assert when(version.valid_from) == utc(2026, 1, 1)
    assert (version.currency_code, version.issue_price_per_point) == ("USD", "0.01")
    assert (version.redemption_rate_per_point, version.fee_percent) == ("0", "1.5")
    assert version.fee_per_transaction == usd(2)
    assert when(version.create_time) == utc(2026, 3, 1, 9)
    again = await settle.create_price_list_call(
        HOTEL, request_id=request_id, fee_per_transaction=usd(2), **HOTEL_PRICES
    )
    assert again == first
    await expect_error(
        settle.create_price_list_call(HOTEL, request_id=request_id, issue_price_per_point="0.02"),
        EXISTS,
        "REQUEST_ID_REUSED",
    )
    await expect_error(
        settle.create_price_list_call(HOTEL, issue_price_per_point="0.02"),
        EXISTS,
        "PRICE_LIST_EXISTS",
    )
    # Trailing zeros are the same price, written plainly.
    later = await settle.create_price_list(
        HOTEL, valid_from=utc(2026, 6, 1), issue_price_per_point="0.0200", currency_code="USD"
    )
    assert later.issue_price_per_point == "0.02"
    latest = await settle.create_price_list(HOTEL, valid_from=utc(2026, 9, 1))

    # Newest valid_from first, one per page; the partner lists its own.
    names, page_token = [], ""
    for _ in range(4):
        reply = await settle.list_price_lists_call(HOTEL, 1, page_token, meta=hotel)
        names += [p.name for p in reply.price_lists]
        page_token = reply.next_page_token
        if not page_token:
            break
    assert names == [latest.name, later.name, version.name]
    reply = await settle.list_price_lists_call(HOTEL)
    assert [p.name for p in reply.price_lists] == names and not reply.next_page_token
    await expect_error(settle.list_price_lists_call(MAPLE, meta=hotel), DENIED, NOT_AUTHORIZED)
    await expect_error(
        settle.list_price_lists_call(HOTEL, page_token="not-a-token"),
        INVALID,
        "INVALID_PAGE_TOKEN",
    )
    await expect_error(
        settle.list_price_lists_call(HOTEL, page_token=token({"v": "yesterday"})),
        INVALID,
        "INVALID_PAGE_TOKEN",
    )
    await expect_error(
        settle.list_price_lists_call(HOTEL, page_size=-1), INVALID, "INVALID_PAGE_SIZE"
    )
    await expect_error(
        settle.list_price_lists_call("partners/nobody-here"), MISSING, "PARTNER_NOT_FOUND"
    )


async def test_no_price_may_start_in_a_closed_period(closed: March, settle: Settle) -> None:
    await expect_error(
        settle.create_price_list_call(HOTEL, valid_from=utc(2026, 3, 31)),
        REFUSED,
        "PERIOD_CLOSED",
    )
    version = await settle.create_price_list(HOTEL, valid_from=utc(2026, 4, 1))
    assert when(version.valid_from) == utc(2026, 4, 1)


# -- FX rates ------------------------------------------------------------------------------


async def test_fx_rates(gateway: Any, settle: Settle, clock: FixedClock) -> None:
    await expect_error(
        settle.set_fx_rate_call("USD", "1"), INVALID, "SAME_CURRENCY", "currency_code"
    )
    for rate in ("0", "", "0.000"):
        await expect_error(settle.set_fx_rate_call("CAD", rate), INVALID, "INVALID_RATE", "rate")
    for currency in ("XYZ", "cad", "", "CADD"):
        await expect_error(
            settle.set_fx_rate_call(currency, "1.38"),
            INVALID,
            "INVALID_CURRENCY_CODE",
            "currency_code",
        )
    await expect_error(
        settle.set_fx_rate_call("CAD", "1.38", period="2026-03"), INVALID, "INVALID_PERIOD"
    )

    request_id = rid()
    first = (await settle.set_fx_rate_call("CAD", "1.3800", request_id=request_id)).fx_rate
    assert (first.name, first.base_currency, first.currency_code, first.rate) == (
        f"{MARCH}/fxRates/CAD",
        "USD",
        "CAD",
        "1.38",
    )
    assert when(first.update_time) == utc(2026, 3, 1, 9)
    assert (await settle.set_fx_rate_call("CAD", "1.3800", request_id=request_id)).fx_rate == first
    await expect_error(
        settle.set_fx_rate_call("CAD", "1.39", request_id=request_id), EXISTS, "REQUEST_ID_REUSED"
    )
    clock.set(utc(2026, 3, 2, 9))
    same = (await settle.set_fx_rate_call("CAD", "1.38")).fx_rate
    assert same == first  # the same rate again changes nothing, not even update_time
    changed = (await settle.set_fx_rate_call("CAD", "1.41")).fx_rate
    assert (changed.rate, when(changed.update_time)) == ("1.41", utc(2026, 3, 2, 9))


async def test_a_malformed_fx_rate_is_invalid_rate(gateway: Any, settle: Settle) -> None:
    for rate in ("abc", "-1.2", "1e3", "1000000001"):
        await expect_error(settle.set_fx_rate_call("CAD", rate), INVALID, "INVALID_RATE", "rate")


async def test_no_fx_rate_for_a_closed_period(closed: March, settle: Settle) -> None:
    await expect_error(settle.set_fx_rate_call("CAD", "1.5"), REFUSED, "PERIOD_CLOSED")
    april = (await settle.set_fx_rate_call("CAD", "1.5", period=APRIL)).fx_rate
    assert april.name == f"{APRIL}/fxRates/CAD"


# -- the close -----------------------------------------------------------------------------


async def test_closing_march(march: March, settle: Settle, clock: FixedClock) -> None:
    for bad in ("settlementPeriods/2026-13", "2026-03", "settlementPeriods/2026-3", ""):
        await expect_error(settle.close_call(bad), INVALID, "INVALID_PERIOD", "period")
    await expect_error(
        settle.close_call("settlementPeriods/1969-12"), INVALID, "INVALID_PERIOD", "period"
    )
    await expect_error(settle.close_call(request_id="x" * 65), INVALID, "FIELD_TOO_LONG")
    info = await expect_error(settle.close_call(), REFUSED, "PERIOD_NOT_ENDED")
    assert info.metadata["period"] == MARCH

    clock.set(CLOSE_TIME)
    info = await expect_error(settle.close_call(), REFUSED, "PRICE_LIST_MISSING")
    assert info.metadata["partners"] == TAXI
    await settle.create_price_list(TAXI, **TAXI_PRICES)
    info = await expect_error(settle.close_call(), REFUSED, "FX_RATE_MISSING")
    assert info.metadata["currencies"] == "CAD"
    # A failed close wrote nothing: March is still open for rates and statements are not there.
    await settle.set_fx_rate_call("CAD", "1.38")
    await expect_error(settle.list_statements_call(), REFUSED, "PERIOD_NOT_CLOSED")

    request_id = rid()
    reply = await settle.close_call(request_id=request_id)
    period = reply.settlement_period
    assert (period.name, period.state, period.statement_count) == (
        MARCH,
        pb.SettlementPeriod.STATE_CLOSED,
        3,
    )
    assert (when(period.start_time), when(period.end_time)) == (utc(2026, 3, 1), utc(2026, 4, 1))
    assert when(period.close_time) == CLOSE_TIME

    clock.set(utc(2026, 4, 3))
    assert await settle.close_call(request_id=request_id) == reply  # a replay
    assert await settle.close() == period  # closing again: the same period, unchanged
    await expect_error(
        settle.close_call(period=APRIL, request_id=request_id), EXISTS, "REQUEST_ID_REUSED"
    )
    await expect_error(settle.close_call(APRIL), REFUSED, "PERIOD_NOT_ENDED")
    clock.set(utc(2026, 6, 2))
    info = await expect_error(
        settle.close_call("settlementPeriods/2026-05"), REFUSED, "PREVIOUS_PERIOD_OPEN"
    )
    assert info.metadata["period"] == APRIL
    # February was settled by March's close (the first close settles all history before it).
    await expect_error(settle.close_call("settlementPeriods/2026-02"), REFUSED, "PERIOD_CLOSED")
    april = await settle.close(APRIL)
    assert (april.name, april.statement_count) == (APRIL, 0)
    assert when(april.close_time) == utc(2026, 6, 2)


# -- statements ----------------------------------------------------------------------------


async def test_statements_carry_the_month(closed: March, settle: Settle) -> None:
    hotel = await settle.statement(statement_of(MARCH, HOTEL))
    assert (hotel.name, hotel.partner, hotel.period) == (statement_of(MARCH, HOTEL), HOTEL, MARCH)
    assert (hotel.points_issued, hotel.points_redeemed, hotel.points_expired) == (1_650, 0, 0)
    # 1,650 points at 1 cent; fees 3 x 2 cents + 1.5% of 1,650 cents (24.75 -> 25).
    assert hotel.issue_amount == usd(1_650)
    assert hotel.fee_amount == usd(31)
    assert hotel.amount_owed == usd(1_681)
    assert hotel.amount_due == usd(500)  # the adjustment in the hotel's favour
    assert hotel.adjustment_amount == usd(500)
    assert hotel.late_amount == usd(0)
    assert hotel.net_amount == usd(500 - 1_681)
    assert (hotel.net_amount_base, hotel.fx_rate) == (usd(-1_181), "1")
    assert hotel.line_count == 5
    assert when(hotel.create_time) == CLOSE_TIME

    taxi = await settle.statement(statement_of(MARCH, TAXI))
    # 600 points at 0.92 cents = 552; fee 0.5% of 552 = 2.76 -> 3.
    assert (taxi.points_redeemed, taxi.redemption_amount, taxi.fee_amount) == (
        600,
        usd(552),
        usd(3),
    )
    assert (taxi.amount_owed, taxi.amount_due, taxi.net_amount) == (usd(3), usd(552), usd(549))
    assert taxi.line_count == 1

    maple = await settle.statement(statement_of(MARCH, MAPLE))
    assert (maple.points_issued, maple.points_redeemed) == (500, 200)
    assert (maple.issue_amount, maple.redemption_amount) == (cad(800), cad(250))
    assert (maple.amount_owed, maple.amount_due, maple.net_amount) == (
        cad(800),
        cad(250),
        cad(-550),
    )
    # -550 CAD / 1.38 = -398.55 USD -> -399 cents.
    assert (maple.net_amount_base, maple.fx_rate) == (usd(-399), "1.38")

    statements, page_token = [], ""
    while True:
        reply = await settle.list_statements_call(page_size=1, page_token=page_token)
        assert len(reply.statements) == 1
        statements += reply.statements
        page_token = reply.next_page_token
        if not page_token:
            break
    assert [s.partner for s in statements] == [TAXI, HOTEL, MAPLE]
    assert statements == [taxi, hotel, maple]

    await expect_error(
        settle.get_statement_call(statement_of(MARCH, "partners/nobody-here")),
        MISSING,
        "STATEMENT_NOT_FOUND",
    )
    await expect_error(
        settle.get_statement_call(statement_of(APRIL, HOTEL)), REFUSED, "PERIOD_NOT_CLOSED"
    )


async def test_statement_lines_trace_every_figure(closed: March, settle: Settle) -> None:
    parent = statement_of(MARCH, HOTEL)
    lines, pages = await settle.lines(parent, page_size=1)
    assert pages == 5
    everything, _ = await settle.lines(parent)
    assert everything == lines
    price_list = closed.hotel_prices.name
    earn, claw = common_pb2.TRANSACTION_TYPE_EARN, common_pb2.TRANSACTION_TYPE_REVERSAL
    transaction, issued = pb.StatementLine.KIND_TRANSACTION, pb.StatementLine.COMPONENT_ISSUED
    # Each earn: -points x 1 cent, less 1.5% and the 2-cent fee; the clawback returns its part.
    expected = [
        (closed.hotel_earns[0].name, earn, 1_000, usd(-1_017), "-1017", "H-1"),
        (closed.hotel_earns[1].name, earn, 500, usd(-510), "-509.5", "H-2"),
        (closed.hotel_earns[2].name, earn, 250, usd(-256), "-255.75", "H-3"),
        (closed.clawback.name, claw, -100, usd(102), "101.5", "H-3"),
    ]
    assert [
        (x.transaction, x.type, x.points, x.amount, x.exact_amount, x.partner_reference)
        for x in lines[:4]
    ] == expected
    for line, source in zip(lines, [*closed.hotel_earns, closed.clawback], strict=False):
        assert (line.kind, line.component, line.price_list) == (transaction, issued, price_list)
        assert line.create_time == source.create_time
        assert not line.adjustment and not line.reason and not line.HasField("occur_time")
    adjustment = lines[4]
    assert (adjustment.kind, adjustment.type) == (
        pb.StatementLine.KIND_ADJUSTMENT,
        common_pb2.TRANSACTION_TYPE_ADJUSTMENT,
    )
    assert adjustment.adjustment == closed.adjustment.name
    assert adjustment.component == pb.StatementLine.COMPONENT_UNSPECIFIED
    assert (adjustment.transaction, adjustment.points, adjustment.price_list) == ("", 0, "")
    assert (adjustment.amount, adjustment.exact_amount) == (usd(500), "500")
    assert (adjustment.partner_reference, adjustment.reason) == (
        "TICKET-1",
        "goodwill for a noisy room",
    )
    assert [when(x.create_time) for x in lines] == sorted(when(x.create_time) for x in lines)

    (ride,) = (await settle.lines(statement_of(MARCH, TAXI)))[0]
    assert (ride.transaction, ride.points, ride.partner_reference) == (
        closed.ride.name,
        -600,
        "T-1",
    )
    assert (ride.component, ride.amount, ride.exact_amount) == (
        pb.StatementLine.COMPONENT_REDEEMED,
        usd(549),
        "549.24",
    )

    await expect_error(
        settle.list_lines_call(parent, page_token="garbage"), INVALID, "INVALID_PAGE_TOKEN"
    )
    await expect_error(settle.list_lines_call(parent, page_size=-1), INVALID, "INVALID_PAGE_SIZE")
    await expect_error(
        settle.list_lines_call(statement_of(MARCH, "partners/nobody-here")),
        MISSING,
        "STATEMENT_NOT_FOUND",
    )
    await expect_error(
        settle.list_lines_call(statement_of(APRIL, HOTEL)), REFUSED, "PERIOD_NOT_CLOSED"
    )


async def test_a_forged_line_token_is_invalid(closed: March, settle: Settle) -> None:
    parent = statement_of(MARCH, HOTEL)
    first = await settle.list_lines_call(parent, page_size=2)
    genuine = json.loads(base64.urlsafe_b64decode(first.next_page_token))
    forged = [
        {"l": "abc"},
        {k: "abc" if k == "l" else v for k, v in genuine.items()},
        {k: "abc" if k != "l" else v for k, v in genuine.items()},
        {k: "2026-03-05T10:00:00" if k != "l" else v for k, v in genuine.items()},
        {**genuine, "x": 1},
    ]
    for position in forged:
        await expect_error(
            settle.list_lines_call(parent, page_token=token(position)),
            INVALID,
            "INVALID_PAGE_TOKEN",
        )


async def test_the_netting_sums_to_zero(closed: March, settle: Settle) -> None:
    report = (await settle.netting_call()).netting_report
    assert (report.period, report.base_currency) == (MARCH, "USD")
    assert when(report.create_time) == CLOSE_TIME
    positions = {p.partner: p for p in report.positions}
    assert [p.partner for p in report.positions] == [TAXI, HOTEL, MAPLE]
    assert {p: positions[p].net_amount for p in positions} == {
        TAXI: usd(549),
        HOTEL: usd(-1_181),
        MAPLE: cad(-550),
    }
    assert {p: positions[p].net_amount_base.amount_minor for p in positions} == {
        TAXI: 549,
        HOTEL: -1_181,
        MAPLE: -399,
    }
    assert positions[MAPLE].fx_rate == "1.38"
    assert positions[HOTEL].statement == statement_of(MARCH, HOTEL)
    for p in report.positions:
        assert p.net_amount.amount_minor == p.amount_due.amount_minor - p.amount_owed.amount_minor
    # Positions and the margin sum to zero: in the base currency, and per currency.
    assert report.operator_margin_base == usd(1_031)
    assert sum(p.net_amount_base.amount_minor for p in report.positions) + 1_031 == 0
    assert list(report.operator_margins) == [cad(550), usd(632)]
    for margin in report.operator_margins:
        nets = [
            p.net_amount.amount_minor
            for p in report.positions
            if p.net_amount.currency_code == margin.currency_code
        ]
        assert sum(nets) + margin.amount_minor == 0
    parts = report.margin_breakdown
    # Issue 1,650 + 800 CAD (579.71 -> 580); fees 31 + 3; redemptions 552 + 250 CAD (181.16).
    assert (parts.issue_revenue, parts.fee_revenue, parts.redemption_cost) == (
        usd(2_230),
        usd(34),
        usd(-733),
    )
    assert (parts.adjustments, parts.conversion_cost, parts.charity_payouts) == (
        usd(-500),
        usd(0),
        usd(0),
    )
    total = sum(
        m.amount_minor
        for m in (
            parts.issue_revenue,
            parts.fee_revenue,
            parts.redemption_cost,
            parts.conversion_cost,
            parts.charity_payouts,
            parts.adjustments,
            parts.fx_rounding,
        )
    )
    assert total == report.operator_margin_base.amount_minor
    await expect_error(settle.netting_call(APRIL), REFUSED, "PERIOD_NOT_CLOSED")
    await expect_error(settle.netting_call("2026-03"), INVALID, "INVALID_PERIOD")


# -- adjustments ---------------------------------------------------------------------------


async def test_adjustments(closed: March, settle: Settle, clock: FixedClock) -> None:
    await expect_error(
        settle.adjustment_call(HOTEL, usd(100), reason="  "), INVALID, "MISSING_REASON", "reason"
    )
    await expect_error(settle.adjustment_call(HOTEL, usd(0)), INVALID, "EMPTY_ADJUSTMENT", "amount")
    await expect_error(settle.adjustment_call(HOTEL), INVALID, "EMPTY_ADJUSTMENT", "amount")
    await expect_error(
        settle.adjustment_call(HOTEL, cad(100)),
        INVALID,
        "CURRENCY_MISMATCH",
        "amount.currency_code",
    )
    await expect_error(
        settle.adjustment_call(HOTEL, common_pb2.Money(amount_minor=100)),
        INVALID,
        "INVALID_CURRENCY_CODE",
        "amount.currency_code",
    )
    await expect_error(
        settle.adjustment_call(HOTEL, common_pb2.Money(amount_minor=100, currency_code="XQZ")),
        INVALID,
        "INVALID_CURRENCY_CODE",
    )
    await expect_error(
        settle.adjustment_call(HOTEL, usd(100), reason="x" * 1_001), INVALID, "FIELD_TOO_LONG"
    )
    await expect_error(
        settle.adjustment_call(HOTEL, usd(100), reference="bad\x07ref"),
        INVALID,
        "INVALID_REFERENCE",
    )
    await expect_error(
        settle.adjustment_call(HOTEL, points=10**10), INVALID, "INVALID_POINTS", "points"
    )
    await expect_error(settle.adjustment_call(HOTEL, usd(10**14)), INVALID, "INVALID_AMOUNT")
    await expect_error(
        settle.adjustment_call(HOTEL, usd(100), period="2026-04"), INVALID, "INVALID_PERIOD"
    )
    await expect_error(
        settle.adjustment_call("partners/nobody-here", usd(100)), MISSING, "PARTNER_NOT_FOUND"
    )
    await expect_error(
        settle.adjustment_call(HOTEL, usd(100), period=MARCH), REFUSED, "PERIOD_CLOSED"
    )

    # The current period by default (April on April 2); money or points alone will do.
    request_id = rid()
    first = await settle.adjustment_call(
        MAPLE, cad(-1_500), reason="missed fee", reference="TICKET-7", request_id=request_id
    )
    made = first.adjustment
    assert made.name.startswith(f"{APRIL}/adjustments/")
    assert (made.partner, made.period, made.points, made.amount) == (
        MAPLE,
        APRIL,
        0,
        cad(-1_500),
    )
    assert (made.reason, made.reference, when(made.create_time)) == (
        "missed fee",
        "TICKET-7",
        CLOSE_TIME,
    )
    again = await settle.adjustment_call(
        MAPLE, cad(-1_500), reason="missed fee", reference="TICKET-7", request_id=request_id
    )
    assert again == first
    await expect_error(
        settle.adjustment_call(MAPLE, cad(-1_600), reason="missed fee", request_id=request_id),
        EXISTS,
        "REQUEST_ID_REUSED",
    )
    points_only = (await settle.adjustment_call(TAXI, points=250, period=APRIL)).adjustment
    assert (points_only.points, points_only.amount) == (250, usd(0))
    may = await settle.adjustment_call(TAXI, usd(1), period="settlementPeriods/2026-05")
    assert may.adjustment.period == "settlementPeriods/2026-05"


# -- reconciliation ------------------------------------------------------------------------


async def test_a_partner_reconciles_its_own_file(closed: March, settle: Settle) -> None:
    content = b"\xef\xbb\xbfpartner_reference,points,note\r\nH-1,1000,a\r\nH-3,250,b\r\n"
    content += b"H-3,-100,refund\r\nH-2,400,c\r\nH-X,5,d\r\n"
    request_id = rid()
    reply = await settle.reconcile_call(content, request_id=request_id, meta=closed.hotel)
    result = reply.result
    assert result.name.startswith(f"{HOTEL}/reconciliations/")
    assert (result.partner, result.period) == (HOTEL, MARCH)
    assert (result.file_reference_count, result.ledger_reference_count) == (4, 3)
    assert (result.matched_count, result.discrepancy_count) == (2, 2)
    assert (result.file_points_total, result.ledger_points_total) == (1_555, 1_650)
    assert when(result.create_time) == CLOSE_TIME
    assert [
        (
            d.kind,
            d.partner_reference,
            d.ledger_points,
            d.file_points,
            list(d.transactions),
            list(d.file_line_numbers),
        )
        for d in result.discrepancies
    ] == [
        (pb.Discrepancy.KIND_AMOUNT_MISMATCH, "H-2", 500, 400, [closed.hotel_earns[1].name], [5]),
        (pb.Discrepancy.KIND_MISSING_IN_LEDGER, "H-X", 0, 5, [], [6]),
    ]
    assert await settle.reconcile_call(content, request_id=request_id, meta=closed.hotel) == reply
    await expect_error(
        settle.reconcile_call(content + b"H-Y,1\r\n", request_id=request_id, meta=closed.hotel),
        EXISTS,
        "REQUEST_ID_REUSED",
    )
    # Named explicitly, by the partner or the operator; an open period will do too.
    mine = await settle.reconcile_call(content, partner=HOTEL, meta=closed.hotel)
    assert mine.result.discrepancy_count == 2 and mine.result.name != result.name
    april = await settle.reconcile_call(b"partner_reference,points\n", partner=HOTEL, period=APRIL)
    assert (april.result.matched_count, april.result.discrepancy_count) == (0, 0)
    taxi = await settle.reconcile_call(
        b"partner_reference,points\nT-1,-600\n",
        partner=TAXI,
        file_format=pb.PARTNER_FILE_FORMAT_UNSPECIFIED,  # CSV
    )
    assert (taxi.result.matched_count, taxi.result.discrepancy_count) == (1, 0)


async def test_bad_files_are_refused_naming_their_lines(closed: March, settle: Settle) -> None:
    hotel = closed.hotel
    request_id = rid()
    bad = b"partner_reference,points\nH-1,1000\nH-2,five hundred\n,250\nH-3,1.5\n"
    try:
        await settle.reconcile_call(bad, request_id=request_id, meta=hotel)
    except grpc.aio.AioRpcError as err:
        caught = err
    else:
        raise AssertionError("a bad file was accepted")
    await expect_error(
        settle.reconcile_call(bad, request_id=rid(), meta=hotel),
        INVALID,
        "INVALID_FILE",
        "file_content[line 3]",
    )
    assert violations(caught) == [f"file_content[line {n}]" for n in (3, 4, 5)]
    # Input errors are not kept: the corrected file may reuse the request_id.
    fixed = b"partner_reference,points\nH-1,1000\n"
    assert (await settle.reconcile_call(fixed, request_id=request_id, meta=hotel)).result.name

    for content in (b"\xff\xfe\x00p", b"reference,points\nH-1,1\n", b""):
        await expect_error(
            settle.reconcile_call(content, meta=hotel), INVALID, "INVALID_FILE", "file_content"
        )
    await expect_error(
        settle.reconcile_call(fixed, meta=hotel, file_format=7),
        INVALID,
        "UNSUPPORTED_FILE_FORMAT",
        "format",
    )
    await expect_error(
        settle.reconcile_call(fixed, period="2026-03", meta=hotel), INVALID, "INVALID_PERIOD"
    )
    await expect_error(settle.reconcile_call(fixed), INVALID, "MISSING_PARTNER", "partner")
    await expect_error(
        settle.reconcile_call(fixed, partner="partners/nobody-here"), MISSING, "PARTNER_NOT_FOUND"
    )
    await expect_error(
        settle.reconcile_call(fixed, partner="grand-hotel"), INVALID, "INVALID_PARTNER_NAME"
    )


# -- who may call what ---------------------------------------------------------------------


async def test_a_partner_reads_only_its_own_statements(closed: March, settle: Settle) -> None:
    hotel, taxi = closed.hotel, closed.taxi
    own = await settle.statement(statement_of(MARCH, HOTEL), meta=hotel)
    assert own == await settle.statement(statement_of(MARCH, HOTEL))
    lines, _ = await settle.lines(statement_of(MARCH, HOTEL), meta=hotel)
    assert len(lines) == own.line_count == 5
    reply = await settle.list_statements_call(meta=hotel)
    assert [s.partner for s in reply.statements] == [HOTEL] and not reply.next_page_token
    reply = await settle.list_statements_call(meta=taxi)
    assert [s.partner for s in reply.statements] == [TAXI]

    for partner in (HOTEL, MAPLE):
        name = statement_of(MARCH, partner)
        info = await expect_error(
            settle.get_statement_call(name, meta=taxi), DENIED, NOT_AUTHORIZED
        )
        assert info.metadata["partner"] == partner
        await expect_error(settle.list_lines_call(name, meta=taxi), DENIED, NOT_AUTHORIZED)
    # Nor another partner's statement that does not exist, nor one of an open period.
    await expect_error(
        settle.get_statement_call(statement_of(MARCH, "partners/nobody-here"), meta=taxi),
        DENIED,
        NOT_AUTHORIZED,
    )
    await expect_error(
        settle.get_statement_call(statement_of(APRIL, HOTEL), meta=taxi), DENIED, NOT_AUTHORIZED
    )


async def test_a_partner_may_not_run_settlement(
    gateway: Any, closed: March, settle: Settle
) -> None:
    hotel = closed.hotel
    calls = [
        settle.close_call(APRIL, meta=hotel),
        settle.close_call(MARCH, meta=hotel),
        settle.netting_call(meta=hotel),
        settle.adjustment_call(HOTEL, usd(10_000), meta=hotel),
        settle.create_price_list_call(HOTEL, valid_from=utc(2026, 5, 1), meta=hotel),
        settle.set_fx_rate_call("CAD", "0.01", period=APRIL, meta=hotel),
        settle.reconcile_call(b"partner_reference,points\n", partner=TAXI, meta=hotel),
        settle.list_price_lists_call(TAXI, meta=hotel),
    ]
    for call in calls:
        await expect_error(call, DENIED, NOT_AUTHORIZED)
    # Nothing happened: no adjustment, no price list, no rate, no close.
    async with gateway.ctx.database.connect() as conn:
        adjustments = await conn.scalar(select(func.count()).select_from(ADJUSTMENTS))
        april = FX.c.period == "2026-04"
        rates = await conn.scalar(select(func.count()).select_from(FX).where(april))
    assert (adjustments, rates) == (1, 0)  # March's adjustment only
    reply = await settle.list_price_lists_call(HOTEL)
    assert [p.name for p in reply.price_lists] == [closed.hotel_prices.name]
    await expect_error(settle.close_call(APRIL), REFUSED, "PERIOD_NOT_ENDED")


async def test_no_credentials_no_settlement(gateway: Any, settle: Settle) -> None:
    for call in (
        settle.stub.GetNettingReport(pb.GetNettingReportRequest(period=MARCH)),
        settle.stub.ListStatements(
            pb.ListStatementsRequest(parent=MARCH), metadata=[("authorization", "Bearer nope")]
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_bad_input_never_answers_internal(closed: March, settle: Settle) -> None:
    """Odd but well-formed requests get a client error, never INTERNAL or UNKNOWN."""
    stub, operator = settle.stub, settle.operator
    lines = statement_of(MARCH, HOTEL)
    cases: list[tuple[str, Callable[[], Any]]] = [
        ("INVALID_STATEMENT_NAME", lambda: settle.get_statement_call("")),
        ("INVALID_PARTNER_ID", lambda: settle.get_statement_call(f"{MARCH}/statements/")),
        ("INVALID_PARTNER_ID", lambda: settle.get_statement_call(f"{MARCH}/statements/Grand")),
        ("INVALID_STATEMENT_NAME", lambda: settle.get_statement_call(f"{lines}/x")),
        (
            "INVALID_PERIOD",
            lambda: settle.get_statement_call("settlementPeriods/9999-12/statements/grand-hotel"),
        ),
        ("INVALID_PAGE_SIZE", lambda: settle.list_statements_call(page_size=-5)),
        ("INVALID_PAGE_TOKEN", lambda: settle.list_statements_call(page_token=token({"x": "a"}))),
        ("INVALID_PERIOD", lambda: settle.list_statements_call("settlementPeriods/2026-00")),
        ("INVALID_PAGE_TOKEN", lambda: settle.list_lines_call(lines, page_token=token({"l": 1.5}))),
        (
            "INVALID_PAGE_TOKEN",
            lambda: settle.list_price_lists_call(
                HOTEL, page_token=token({"v": "9999-12-31T23:59:59-05:00"})
            ),
        ),
        ("INVALID_PARTNER_NAME", lambda: settle.list_price_lists_call("partners/")),
        (
            "INVALID_CHARACTERS",  # a NUL in any string field, refused at the edge
            lambda: settle.create_price_list_call(HOTEL, issue_price_per_point="0.0\x00"),
        ),
        (
            "INVALID_PRICE",
            lambda: settle.create_price_list_call(HOTEL, fee_per_transaction=usd(10**12)),
        ),
        (
            "INVALID_TIMESTAMP",
            lambda: settle.stub.CreatePriceList(
                pb.CreatePriceListRequest(
                    request_id=rid(),
                    parent=HOTEL,
                    price_list=pb.PriceList(valid_from={"seconds": 2**62}),
                ),
                metadata=operator,
            ),
        ),
        ("INVALID_CHARACTERS", lambda: settle.set_fx_rate_call("\x00\x00\x00", "1")),
        ("INVALID_PERIOD", lambda: settle.close_call("settlementPeriods/9999-12")),
        ("INVALID_CHARACTERS", lambda: settle.close_call(f"{MARCH}\x00")),
        ("INVALID_AMOUNT", lambda: settle.adjustment_call(HOTEL, usd(-(10**13) - 1))),
        ("INVALID_REFERENCE", lambda: settle.adjustment_call(HOTEL, usd(1), reference="r" * 201)),
        (
            "INVALID_FILE",
            lambda: settle.reconcile_call(b"partner_reference,points\n\x00,1\n", HOTEL),
        ),
        (
            "INVALID_FILE",
            lambda: settle.reconcile_call(b'partner_reference,points\n"unterminated,1\n', HOTEL),
        ),
        (
            "INVALID_FILE",
            lambda: settle.reconcile_call(b"partner_reference,points\nA," + b"9" * 5_000, HOTEL),
        ),
        (
            "INVALID_PERIOD",
            lambda: settle.reconcile_call(b"points\n", HOTEL, "settlementPeriods/0001-01"),
        ),
        (
            "INVALID_PERIOD",
            lambda: stub.GetNettingReport(pb.GetNettingReportRequest(), metadata=operator),
        ),
        (
            "MISSING_REQUEST_ID",
            lambda: stub.CloseSettlementPeriod(
                pb.CloseSettlementPeriodRequest(period=APRIL), metadata=operator
            ),
        ),
    ]
    for reason, call in cases:
        await expect_error(call(), INVALID, reason)
    # Odd, but fine: the largest page. A partner id written as a number is no token of ours.
    assert len((await settle.list_lines_call(lines, page_size=2**31 - 1)).statement_lines) == 5
    await expect_error(
        settle.list_statements_call(page_token=token({"p": 7})), INVALID, "INVALID_PAGE_TOKEN"
    )


async def test_control_characters_in_an_adjustment_reason(closed: March, settle: Settle) -> None:
    # PostgreSQL refuses NUL in text: it must be bad input on every database, not INTERNAL.
    for reason in ("late\x00fee", "bell\x07", "\x1b[31mred"):
        await expect_error(
            settle.adjustment_call(HOTEL, usd(100), reason=reason),
            INVALID,
            "INVALID_CHARACTERS",
            "reason",
        )
    made = await settle.adjustment_call(HOTEL, usd(100), reason="two\nlines\tand a tab")
    assert made.adjustment.reason == "two\nlines\tand a tab"


async def test_lines_are_in_create_time_order_with_adjustments(
    gateway: Any, api: Api, settle: Settle, clock: FixedClock
) -> None:
    _, hotel_key = await gateway.create_partner("grand-hotel")
    hotel = gateway.auth(hotel_key)
    await settle.create_price_list(HOTEL, **HOTEL_PRICES)
    ada = await api.enroll("Ada")
    clock.set(utc(2026, 3, 2))
    early = (await settle.adjustment_call(HOTEL, usd(5), reason="early")).adjustment
    clock.set(utc(2026, 3, 5))
    first = await api.buy(hotel, ada, 10_00, partner_reference="R-1")
    # Three lines at one instant: an earn and two adjustments.
    clock.set(utc(2026, 3, 6))
    second = await api.buy(hotel, ada, 20_00, partner_reference="R-2")
    tied = [
        (await settle.adjustment_call(HOTEL, points=n, reason="tie")).adjustment for n in (1, 2)
    ]
    clock.set(utc(2026, 3, 7))
    last = (await settle.adjustment_call(HOTEL, usd(-5), reason="late")).adjustment
    clock.set(CLOSE_TIME)
    await settle.close()
    lines, pages = await settle.lines(statement_of(MARCH, HOTEL), page_size=1)
    assert pages == len(lines) == 6
    assert [when(x.create_time) for x in lines] == [
        utc(2026, 3, 2),
        utc(2026, 3, 5),
        utc(2026, 3, 6),
        utc(2026, 3, 6),
        utc(2026, 3, 6),
        utc(2026, 3, 7),
    ]
    assert (lines[0].adjustment, lines[1].transaction) == (early.name, first.name)
    assert {x.transaction or x.adjustment for x in lines[2:5]} == {
        second.name,
        *(a.name for a in tied),
    }
    assert lines[5].adjustment == last.name
    everything, _ = await settle.lines(statement_of(MARCH, HOTEL))
    assert everything == lines
