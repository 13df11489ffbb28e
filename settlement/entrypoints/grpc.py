"""SettlementService: thin edges over settlement.service (parse, call, render)."""

from __future__ import annotations

from decimal import Decimal

import grpc
from sqlalchemy.ext.asyncio import AsyncConnection

from coalition.v1 import common_pb2, settlement_pb2_grpc
from coalition.v1 import settlement_pb2 as pb
from gateway.domain import errors
from gateway.domain.partners import parse_partner_name
from gateway.entrypoints.errors import rpc
from gateway.entrypoints.grpc.base import Servicer
from gateway.entrypoints.grpc.convert import money, time_from_proto, timestamp
from gateway.service.earning import currency_exponent
from settlement.domain import netting as dn
from settlement.domain import pricing
from settlement.domain import reconcile as dr
from settlement.domain.periods import Period, parse_period_name, parse_statement_name
from settlement.service import periods, prices, reconcile, state

_TXN_TYPE = {
    name.removeprefix("TRANSACTION_TYPE_"): value
    for name, value in common_pb2.TransactionType.items()
}
_KIND = {k: pb.StatementLine.Kind.Value(f"KIND_{k}") for k in ("TRANSACTION", "LATE_TRANSACTION")}
_KIND["ADJUSTMENT"] = pb.StatementLine.KIND_ADJUSTMENT
_COMPONENT = {
    c.value: pb.StatementLine.Component.Value(f"COMPONENT_{c.value}") for c in pricing.Component
}
_DISCREPANCY = {k: pb.Discrepancy.Kind.Value(f"KIND_{k.value}") for k in dr.Kind}


def period_to_proto(closed: state.ClosedPeriod) -> pb.SettlementPeriod:
    p = closed.period
    return pb.SettlementPeriod(
        name=p.name,
        state=pb.SettlementPeriod.STATE_CLOSED if closed.closed else pb.SettlementPeriod.STATE_OPEN,
        start_time=timestamp(p.start),
        end_time=timestamp(p.end),
        close_time=timestamp(closed.close_time),
        statement_count=closed.statement_count,
    )


def statement_to_proto(s: dn.Statement, base_currency: str) -> pb.Statement:
    c = s.currency
    return pb.Statement(
        name=s.name,
        partner=f"partners/{s.partner_id}",
        period=f"settlementPeriods/{s.period}",
        points_issued=s.points_issued,
        points_redeemed=s.points_redeemed,
        points_converted=s.points_converted,
        points_donated=s.points_donated,
        points_matched=s.points_matched,
        points_expired=s.points_expired,
        amount_owed=money(s.owed_minor, c),
        amount_due=money(s.due_minor, c),
        net_amount=money(s.net_minor, c),
        line_count=s.line_count,
        adjustment_amount=money(s.adjustment_minor, c),
        create_time=timestamp(s.create_time),
        issue_amount=money(s.issue_minor, c),
        redemption_amount=money(s.redemption_minor, c),
        conversion_amount=money(s.conversion_minor, c),
        donation_amount=money(s.donation_minor, c),
        fee_amount=money(s.fee_minor, c),
        late_amount=money(s.late_minor, c),
        net_amount_base=money(s.net_base_minor, base_currency),
        fx_rate=pricing.plain(s.fx_rate),
    )


def line_to_proto(line: periods.Line) -> pb.StatementLine:
    adjustment = line.kind == "ADJUSTMENT"
    return pb.StatementLine(
        transaction=line.transaction_name,
        type=_TXN_TYPE["ADJUSTMENT" if adjustment else line.txn_type],
        points=line.points,
        amount=money(line.amount_minor, line.currency),
        partner_reference=line.partner_reference,
        create_time=timestamp(line.create_time),
        adjustment=line.adjustment_name,
        kind=_KIND[line.kind],
        component=pb.StatementLine.COMPONENT_UNSPECIFIED
        if adjustment
        else _COMPONENT[line.component],
        units=line.units,
        exact_amount=pricing.plain(line.exact_minor),
        price_list=line.price_list,
        occur_time=timestamp(line.occur_time),
        reason=line.reason,
    )


def netting_to_proto(n: dn.Netting) -> pb.NettingReport:
    base = n.base_currency
    m = n.margin
    return pb.NettingReport(
        period=f"settlementPeriods/{n.period}",
        positions=[
            pb.NetPosition(
                partner=f"partners/{s.partner_id}",
                amount_owed=money(s.owed_minor, s.currency),
                amount_due=money(s.due_minor, s.currency),
                net_amount=money(s.net_minor, s.currency),
                statement=s.name,
                net_amount_base=money(s.net_base_minor, base),
                fx_rate=pricing.plain(s.fx_rate),
            )
            for s in n.positions
        ],
        operator_margins=[money(amount, c) for c, amount in n.margins_by_currency],
        create_time=timestamp(n.create_time),
        base_currency=base,
        operator_margin_base=money(m.total, base),
        margin_breakdown=pb.MarginBreakdown(
            issue_revenue=money(m.issue_revenue, base),
            fee_revenue=money(m.fee_revenue, base),
            redemption_cost=money(m.redemption_cost, base),
            conversion_cost=money(m.conversion_cost, base),
            charity_payouts=money(m.charity_payouts, base),
            adjustments=money(m.adjustments, base),
            fx_rounding=money(m.fx_rounding, base),
            breakage=money(m.breakage, base),
        ),
    )


def price_list_to_proto(p: pricing.PriceList) -> pb.PriceList:
    return pb.PriceList(
        name=p.name,
        valid_from=timestamp(p.valid_from),
        currency_code=p.currency,
        issue_price_per_point=pricing.plain(p.issue_price),
        redemption_rate_per_point=pricing.plain(p.redemption_rate),
        conversion_price_per_unit=pricing.plain(p.conversion_price),
        charity_value_per_point=pricing.plain(p.charity_value),
        fee_per_transaction=money(p.fee_per_transaction_minor, p.currency),
        fee_percent=pricing.plain(p.fee_percent),
        create_time=timestamp(p.create_time),
    )


def price_list_from_proto(partner_id: str, message: pb.PriceList) -> pricing.PriceList:
    valid_from = time_from_proto(message, "valid_from", "price_list.valid_from")
    if valid_from is None:
        raise errors.InvalidArgument.on_field(
            "price_list.valid_from", "INVALID_VALID_FROM", "when this version starts to apply"
        )
    currency = message.currency_code
    fee = message.fee_per_transaction
    for code, path in ((currency, "currency_code"), (fee.currency_code, "fee_per_transaction")):
        if code:
            currency_exponent(code, f"price_list.{path}")
    if fee.amount_minor and fee.currency_code and currency and fee.currency_code != currency:
        raise errors.InvalidArgument.on_field(
            "price_list.fee_per_transaction.currency_code",
            "CURRENCY_MISMATCH",
            "the fee is in the price list's currency",
        )
    field = "price_list."
    return pricing.PriceList(
        id="",
        partner_id=partner_id,
        valid_from=valid_from,
        currency=currency or fee.currency_code,
        issue_price=pricing.parse_price(
            message.issue_price_per_point, f"{field}issue_price_per_point"
        ),
        redemption_rate=pricing.parse_price(
            message.redemption_rate_per_point, f"{field}redemption_rate_per_point"
        ),
        conversion_price=pricing.parse_price(
            message.conversion_price_per_unit, f"{field}conversion_price_per_unit"
        ),
        charity_value=pricing.parse_price(
            message.charity_value_per_point, f"{field}charity_value_per_point"
        ),
        fee_per_transaction_minor=pricing.check_fee(
            fee.amount_minor, f"{field}fee_per_transaction.amount_minor"
        ),
        fee_percent=pricing.parse_price(message.fee_percent, f"{field}fee_percent", Decimal(100)),
    )


def result_to_proto(
    name: str, partner_id: str, period: Period, r: dr.Result
) -> pb.ReconciliationResult:
    return pb.ReconciliationResult(
        name=name,
        partner=f"partners/{partner_id}",
        period=period.name,
        file_reference_count=r.file_reference_count,
        ledger_reference_count=r.ledger_reference_count,
        matched_count=r.matched_count,
        discrepancies=[
            pb.Discrepancy(
                kind=_DISCREPANCY[d.kind],
                partner_reference=d.partner_reference,
                ledger_points=d.ledger_points,
                file_points=d.file_points,
                transactions=list(d.transactions),
                file_line_numbers=list(d.file_lines),
            )
            for d in r.discrepancies
        ],
        file_points_total=r.file_points_total,
        ledger_points_total=r.ledger_points_total,
        create_time=timestamp(r.create_time),
        discrepancy_count=r.discrepancy_count,
    )


class SettlementServicer(Servicer, settlement_pb2_grpc.SettlementServiceServicer):
    def _operator(self, what: str) -> None:
        if not self.caller().is_operator:
            raise errors.PermissionDenied(
                "PARTNER_NOT_AUTHORIZED", f"{what} is for the operator and finance"
            )

    def _own(self, partner_id: str, what: str) -> None:
        caller = self.caller()
        if not caller.is_operator and caller.partner_id != partner_id:
            raise errors.PermissionDenied(
                "PARTNER_NOT_AUTHORIZED",
                f"a partner reads only its own {what}",
                {"partner": f"partners/{partner_id}"},
            )

    @rpc
    async def CloseSettlementPeriod(
        self, request: pb.CloseSettlementPeriodRequest, context: grpc.aio.ServicerContext
    ) -> pb.CloseSettlementPeriodResponse:
        self._operator("closing a period")
        period = parse_period_name(request.period)

        async def work(conn: AsyncConnection) -> pb.CloseSettlementPeriodResponse:
            closed = await periods.close(conn, self.ctx, period)
            return pb.CloseSettlementPeriodResponse(settlement_period=period_to_proto(closed))

        return await self.once(
            "CloseSettlementPeriod", request, pb.CloseSettlementPeriodResponse, work
        )

    @rpc
    async def GetStatement(
        self, request: pb.GetStatementRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetStatementResponse:
        period, partner_id = parse_statement_name(request.name)
        self._own(partner_id, "statements")
        async with self.read() as conn:
            statement = await periods.get_statement(conn, period, partner_id)
            closed = await state.get_period(conn, period)
        return pb.GetStatementResponse(
            statement=statement_to_proto(statement, closed.base_currency)
        )

    @rpc
    async def ListStatements(
        self, request: pb.ListStatementsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListStatementsResponse:
        period = parse_period_name(request.parent, "parent")
        caller = self.caller()
        only = None if caller.is_operator else caller.partner_id
        async with self.read() as conn:
            page, token = await periods.list_statements(
                conn, period, only, request.page_size, request.page_token
            )
            closed = await state.get_period(conn, period)
        return pb.ListStatementsResponse(
            statements=[statement_to_proto(s, closed.base_currency) for s in page],
            next_page_token=token,
        )

    @rpc
    async def ListStatementLines(
        self, request: pb.ListStatementLinesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListStatementLinesResponse:
        period, partner_id = parse_statement_name(request.parent, "parent")
        self._own(partner_id, "statements")
        async with self.read() as conn:
            page, token = await periods.list_lines(
                conn, period, partner_id, request.page_size, request.page_token
            )
        return pb.ListStatementLinesResponse(
            statement_lines=[line_to_proto(line) for line in page], next_page_token=token
        )

    @rpc
    async def GetNettingReport(
        self, request: pb.GetNettingReportRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetNettingReportResponse:
        self._operator("the netting report")
        period = parse_period_name(request.period)
        async with self.read() as conn:
            report = await periods.netting_report(conn, period)
        return pb.GetNettingReportResponse(netting_report=netting_to_proto(report))

    @rpc
    async def ReconcilePartnerFile(
        self, request: pb.ReconcilePartnerFileRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReconcilePartnerFileResponse:
        caller = self.caller()
        if request.partner:
            partner_id = parse_partner_name(request.partner, "partner")
        elif caller.partner_id is not None:
            partner_id = caller.partner_id
        else:
            raise errors.InvalidArgument.on_field(
                "partner", "MISSING_PARTNER", "the operator names the partner"
            )
        self._own(partner_id, "transactions")
        period = parse_period_name(request.period)
        if request.format not in (pb.PARTNER_FILE_FORMAT_UNSPECIFIED, pb.PARTNER_FILE_FORMAT_CSV):
            raise errors.InvalidArgument.on_field(
                "format", "UNSUPPORTED_FILE_FORMAT", "CSV (PARTNER_FILE_FORMAT_CSV)"
            )

        async def work(conn: AsyncConnection) -> pb.ReconcilePartnerFileResponse:
            name, result = await reconcile.reconcile(
                conn, self.ctx, partner_id, period, request.file_content
            )
            return pb.ReconcilePartnerFileResponse(
                result=result_to_proto(name, partner_id, period, result)
            )

        return await self.once(
            "ReconcilePartnerFile", request, pb.ReconcilePartnerFileResponse, work
        )

    @rpc
    async def CreateAdjustment(
        self, request: pb.CreateAdjustmentRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateAdjustmentResponse:
        self._operator("an adjustment")
        partner_id = parse_partner_name(request.partner, "partner")
        period = parse_period_name(request.period) if request.period else None
        amount = request.amount
        if amount.currency_code:
            currency_exponent(amount.currency_code, "amount.currency_code")

        async def work(conn: AsyncConnection) -> pb.CreateAdjustmentResponse:
            a = await periods.create_adjustment(
                conn,
                self.ctx,
                partner_id,
                period,
                request.points,
                amount.amount_minor,
                amount.currency_code,
                request.reason,
                request.reference,
            )
            return pb.CreateAdjustmentResponse(
                adjustment=pb.Adjustment(
                    name=a.name,
                    partner=f"partners/{a.partner_id}",
                    period=a.period.name,
                    points=a.points,
                    amount=money(a.amount_minor, a.currency),
                    reason=a.reason,
                    reference=a.reference,
                    create_time=timestamp(a.create_time),
                )
            )

        return await self.once("CreateAdjustment", request, pb.CreateAdjustmentResponse, work)

    @rpc
    async def CreatePriceList(
        self, request: pb.CreatePriceListRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreatePriceListResponse:
        self._operator("pricing")
        partner_id = parse_partner_name(request.parent, "parent")
        draft = price_list_from_proto(partner_id, request.price_list)

        async def work(conn: AsyncConnection) -> pb.CreatePriceListResponse:
            version = await prices.create_price_list(conn, self.ctx, draft)
            return pb.CreatePriceListResponse(price_list=price_list_to_proto(version))

        return await self.once("CreatePriceList", request, pb.CreatePriceListResponse, work)

    @rpc
    async def ListPriceLists(
        self, request: pb.ListPriceListsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListPriceListsResponse:
        partner_id = parse_partner_name(request.parent, "parent")
        self._own(partner_id, "price lists")
        async with self.read() as conn:
            page, token = await prices.list_price_lists(
                conn, partner_id, request.page_size, request.page_token
            )
        return pb.ListPriceListsResponse(
            price_lists=[price_list_to_proto(p) for p in page], next_page_token=token
        )

    @rpc
    async def SetFxRate(
        self, request: pb.SetFxRateRequest, context: grpc.aio.ServicerContext
    ) -> pb.SetFxRateResponse:
        self._operator("FX rates")
        period = parse_period_name(request.period)

        async def work(conn: AsyncConnection) -> pb.SetFxRateResponse:
            currency, rate, when = await prices.set_fx_rate(
                conn, self.ctx, period, request.currency_code, request.rate
            )
            return pb.SetFxRateResponse(
                fx_rate=pb.FxRate(
                    name=f"{period.name}/fxRates/{currency}",
                    base_currency=self.ctx.base_currency,
                    currency_code=currency,
                    rate=pricing.plain(rate),
                    update_time=timestamp(when),
                )
            )

        return await self.once("SetFxRate", request, pb.SetFxRateResponse, work)
