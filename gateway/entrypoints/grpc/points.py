"""PointsService: earn and burn at the calling partner."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import cast

import grpc
from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncConnection

from coalition.v1 import points_pb2 as pb
from coalition.v1 import points_pb2_grpc
from gateway.domain import errors
from gateway.entrypoints.errors import rpc
from gateway.entrypoints.grpc.base import Servicer, not_yet
from gateway.entrypoints.grpc.convert import component_to_proto, transaction_to_proto
from gateway.service import earning, ledger, tiers

SERVICE = "coalition.v1.PointsService"


def _basis(
    request: pb.EarnPointsRequest | pb.QuoteEarnRequest,
) -> earning.Purchase | earning.Action:
    kind = request.WhichOneof("basis")
    if kind == "purchase":
        p = request.purchase
        return earning.check_basis(earning.Purchase(p.amount_minor, p.currency_code, p.category))
    if kind == "action":
        return earning.check_basis(earning.Action(request.action, request.points))
    raise errors.InvalidArgument.on_field(
        "basis", "MISSING_BASIS", "set purchase (amount and currency) or action (with points)"
    )


def _time(message: Message, field: str) -> datetime | None:
    if not message.HasField(field):
        return None
    stamp = getattr(message, field)
    return cast(datetime, stamp.ToDatetime(tzinfo=UTC))


def _no_agency_yet(on_behalf_of: str) -> None:
    if on_behalf_of:
        raise not_yet(SERVICE, "EarnPoints.on_behalf_of", "travel agency accrual")


class PointsServicer(Servicer, points_pb2_grpc.PointsServiceServicer):
    @rpc
    async def QuoteEarn(
        self, request: pb.QuoteEarnRequest, context: grpc.aio.ServicerContext
    ) -> pb.QuoteEarnResponse:
        _no_agency_yet(request.on_behalf_of)
        basis = _basis(request)
        occur = _time(request, "occur_time")
        async with self.read() as conn:
            partner = await self.acting_partner(conn)
            member = await self.resolve(
                conn, request.member if request.HasField("member") else None
            )
            quote, tier = await earning.quote_only(conn, self.ctx, partner, member.id, basis, occur)
        return pb.QuoteEarnResponse(
            points=quote.points,
            breakdown=[component_to_proto(c) for c in quote.breakdown()],
            tier=tier.code,
            qualifying_points=quote.qualifying_points,
        )

    @rpc
    async def EarnPoints(
        self, request: pb.EarnPointsRequest, context: grpc.aio.ServicerContext
    ) -> pb.EarnPointsResponse:
        _no_agency_yet(request.on_behalf_of)
        basis = _basis(request)
        vest, occur = _time(request, "vest_time"), _time(request, "occur_time")

        async def work(conn: AsyncConnection) -> pb.EarnPointsResponse:
            partner = await self.acting_partner(conn)
            member = await self.resolve(
                conn, request.member if request.HasField("member") else None
            )
            txn, standing = await earning.earn(
                conn, self.ctx, partner, member.id, basis, request.partner_reference, vest, occur
            )
            return pb.EarnPointsResponse(transaction=transaction_to_proto(txn, standing))

        return await self.once("EarnPoints", request, pb.EarnPointsResponse, work)

    @rpc
    async def RedeemPoints(
        self, request: pb.RedeemPointsRequest, context: grpc.aio.ServicerContext
    ) -> pb.RedeemPointsResponse:
        async def work(conn: AsyncConnection) -> pb.RedeemPointsResponse:
            partner = await self.acting_partner(conn)
            member = await self.resolve(
                conn, request.member if request.HasField("member") else None
            )
            txn = await ledger.redeem(
                conn, self.ctx, partner.id, member.id, request.points, request.partner_reference
            )
            standing = await tiers.status(conn, self.ctx, member.id)
            return pb.RedeemPointsResponse(transaction=transaction_to_proto(txn, standing))

        return await self.once("RedeemPoints", request, pb.RedeemPointsResponse, work)

    @rpc
    async def AuthorizeRedemption(
        self, request: pb.AuthorizeRedemptionRequest, context: grpc.aio.ServicerContext
    ) -> pb.AuthorizeRedemptionResponse:
        hold_s = (
            request.hold_duration.seconds + (1 if request.hold_duration.nanos else 0)
            if request.HasField("hold_duration")
            else None
        )

        async def work(conn: AsyncConnection) -> pb.AuthorizeRedemptionResponse:
            partner = await self.acting_partner(conn)
            member = await self.resolve(
                conn, request.member if request.HasField("member") else None
            )
            txn = await ledger.authorize(
                conn,
                self.ctx,
                partner.id,
                member.id,
                request.points,
                hold_s,
                request.partner_reference,
            )
            standing = await tiers.status(conn, self.ctx, member.id)
            return pb.AuthorizeRedemptionResponse(transaction=transaction_to_proto(txn, standing))

        return await self.once("AuthorizeRedemption", request, pb.AuthorizeRedemptionResponse, work)

    @rpc
    async def CaptureRedemption(
        self, request: pb.CaptureRedemptionRequest, context: grpc.aio.ServicerContext
    ) -> pb.CaptureRedemptionResponse:
        async def work(conn: AsyncConnection) -> pb.CaptureRedemptionResponse:
            partner = await self.acting_partner(conn)
            txn = await ledger.capture(
                conn, self.ctx, partner.id, request.transaction, request.points
            )
            tier = await tiers.status(conn, self.ctx, txn.member_id)
            return pb.CaptureRedemptionResponse(transaction=transaction_to_proto(txn, tier))

        return await self.once("CaptureRedemption", request, pb.CaptureRedemptionResponse, work)

    @rpc
    async def VoidRedemption(
        self, request: pb.VoidRedemptionRequest, context: grpc.aio.ServicerContext
    ) -> pb.VoidRedemptionResponse:
        async def work(conn: AsyncConnection) -> pb.VoidRedemptionResponse:
            partner = await self.acting_partner(conn)
            txn = await ledger.void(conn, self.ctx, partner.id, request.transaction)
            tier = await tiers.status(conn, self.ctx, txn.member_id)
            return pb.VoidRedemptionResponse(transaction=transaction_to_proto(txn, tier))

        return await self.once("VoidRedemption", request, pb.VoidRedemptionResponse, work)

    @rpc
    async def ReverseTransaction(
        self, request: pb.ReverseTransactionRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReverseTransactionResponse:
        async def work(conn: AsyncConnection) -> pb.ReverseTransactionResponse:
            caller = self.caller()
            # The operator may reverse any partner's transaction (a dispute, a correction).
            partner_id = None if caller.is_operator else (await self.acting_partner(conn)).id
            txn = await ledger.reverse(
                conn, self.ctx, partner_id, request.transaction, request.points, request.reason
            )
            tier = await tiers.status(conn, self.ctx, txn.member_id)
            return pb.ReverseTransactionResponse(transaction=transaction_to_proto(txn, tier))

        return await self.once("ReverseTransaction", request, pb.ReverseTransactionResponse, work)

    @rpc
    async def StreamEarnPoints(  # type: ignore[override]
        self, request_iterator: object, context: grpc.aio.ServicerContext
    ) -> pb.StreamEarnPointsResponse:
        raise not_yet(SERVICE, "StreamEarnPoints", "bulk ingestion")

    @rpc
    async def ConvertPoints(
        self, request: pb.ConvertPointsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ConvertPointsResponse:
        raise not_yet(SERVICE, "ConvertPoints", "conversions to partner programs")
