"""PointsService: earn and burn at the calling partner."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import grpc
from google.protobuf.message import Message
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from coalition.v1 import common_pb2, points_pb2_grpc
from coalition.v1 import points_pb2 as pb
from gateway.domain import errors, programs
from gateway.domain import ledger as dl
from gateway.domain import links as dln
from gateway.domain import partners as dp
from gateway.entrypoints.auth import MALFORMED, Malformed, uncut
from gateway.entrypoints.errors import INTERNAL, item_error, rpc, to_status
from gateway.entrypoints.grpc.base import Servicer
from gateway.entrypoints.grpc.convert import (
    check_string_sizes,
    component_to_proto,
    parked_to_proto,
    request_hash,
    to_datetime,
    transaction_to_proto,
)
from gateway.service import conversions, earning, ledger, links, tiers
from gateway.service.idempotency import IdempotencyKey, run_once, run_once_in

SERVICE = "coalition.v1.PointsService"
STREAM_WINDOW = 256
"""StreamEarnPoints items read ahead of their answers: the server's memory per stream."""
STREAM_BATCH_MAX = 100
"""Items committed per database transaction; fewer when no more have arrived yet."""

ITEM_INTERNAL = common_pb2.ItemError(
    code=13, reason="INTERNAL", message="the gateway failed on this item; it was not recorded"
)

log = logging.getLogger(__name__)


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
    return to_datetime(getattr(message, field), field, f"INVALID_{field.upper()}")


class PointsServicer(Servicer, points_pb2_grpc.PointsServiceServicer):
    @rpc
    async def QuoteEarn(
        self, request: pb.QuoteEarnRequest, context: grpc.aio.ServicerContext
    ) -> pb.QuoteEarnResponse:
        basis = _basis(request)
        occur = _time(request, "occur_time")
        async with self.read() as conn:
            partner = await self.acting_partner(conn)
            if request.on_behalf_of:
                partner = await earning.airline_for(conn, partner, request.on_behalf_of)
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

    async def _earn(
        self,
        conn: AsyncConnection,
        request: pb.EarnPointsRequest,
        basis: earning.Purchase | earning.Action,
    ) -> common_pb2.PointsTransaction:
        """One earn, as EarnPoints and each StreamEarnPoints item perform it; `basis` was read
        from the request before any database work, so input errors fail first."""
        vest, occur = _time(request, "vest_time"), _time(request, "occur_time")
        partner = await self.acting_partner(conn)
        ref = request.member if request.HasField("member") else None
        if not request.on_behalf_of:
            member = await self.resolve(conn, ref)
            txn, standing = await earning.earn(
                conn, self.ctx, partner, member.id, basis, request.partner_reference, vest, occur
            )
            return transaction_to_proto(txn, standing)
        airline = await earning.airline_for(conn, partner, request.on_behalf_of)
        if ref is not None and ref.WhichOneof("kind") == "program_number":
            member_id = await self._airline_number_owner(conn, airline, ref.program_number)
            if isinstance(member_id, _Unlinked):
                parked = await earning.park(
                    conn,
                    self.ctx,
                    partner,
                    airline,
                    member_id.number,
                    basis,
                    request.partner_reference,
                    vest,
                    occur,
                )
                return parked_to_proto(parked)
        else:
            member_id = (await self.resolve(conn, ref)).id
        txn, standing = await earning.earn(
            conn,
            self.ctx,
            airline,
            member_id,
            basis,
            request.partner_reference,
            vest,
            occur,
            channel=partner,
        )
        return transaction_to_proto(txn, standing)

    async def _airline_number_owner(
        self, conn: AsyncConnection, airline: dp.Partner, ref: common_pb2.ProgramNumber
    ) -> str | _Unlinked:
        """Who linked this number of the airline's program; the number is locked until commit,
        so a concurrent LinkAccount either sees the earn parked or is seen here."""
        field = "member.program_number"
        if ref.program and ref.program != airline.name:
            raise errors.InvalidArgument.on_field(
                f"{field}.program",
                "PROGRAM_MISMATCH",
                f"the number must be of {airline.name}, the airline in on_behalf_of",
            )
        assert airline.settings.program is not None, "airlines always run a program"
        number = programs.check_number(
            airline.settings.program.number_format, ref.number, f"{field}.number"
        )
        await links.lock_external(
            conn, links.external_key(self.ctx, airline.id, dln.LinkKind.PROGRAM, number)
        )
        owner = await links.find_member_id(conn, self.ctx, airline.id, dln.LinkKind.PROGRAM, number)
        return owner if owner is not None else _Unlinked(number)

    @rpc
    async def EarnPoints(
        self, request: pb.EarnPointsRequest, context: grpc.aio.ServicerContext
    ) -> pb.EarnPointsResponse:
        basis = _basis(request)

        async def work(conn: AsyncConnection) -> pb.EarnPointsResponse:
            return pb.EarnPointsResponse(transaction=await self._earn(conn, request, basis))

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
            if request.transaction.startswith("parkedEarns/"):
                if request.points:
                    raise errors.InvalidArgument.on_field(
                        "points", "INVALID_POINTS", "a parked earn is cancelled whole: points = 0"
                    )
                parked = await links.cancel_parked(conn, self.ctx, request.transaction, partner_id)
                return pb.ReverseTransactionResponse(transaction=parked_to_proto(parked))
            txn = await ledger.reverse(
                conn, self.ctx, partner_id, request.transaction, request.points, request.reason
            )
            tier = await tiers.status(conn, self.ctx, txn.member_id)
            return pb.ReverseTransactionResponse(transaction=transaction_to_proto(txn, tier))

        return await self.once("ReverseTransaction", request, pb.ReverseTransactionResponse, work)

    async def StreamEarnPoints(
        self, request_iterator: AsyncIterator[pb.StreamEarnPointsRequest], context: Any
    ) -> AsyncIterator[pb.StreamEarnPointsResponse]:
        """Items are read at most STREAM_WINDOW ahead of their answers (the client then waits:
        HTTP/2 flow control), and committed up to STREAM_BATCH_MAX per database transaction,
        each in a savepoint of its own: one item's failure is its own answer."""
        scope = self.caller().idempotency_scope
        window: asyncio.Queue[tuple[int, Any] | None] = asyncio.Queue(STREAM_WINDOW)

        async def read() -> None:
            index = 0
            try:
                async for item in request_iterator:
                    await window.put((index, item))
                    index += 1
            except asyncio.CancelledError:
                raise  # the call is over: nobody waits for the end marker
            except Exception:
                await window.put(None)
                raise
            await window.put(None)

        reader = asyncio.create_task(read())
        try:
            done = False
            while not done:
                first = await window.get()
                if first is None:
                    break
                batch = [first]
                while len(batch) < STREAM_BATCH_MAX and not window.empty():
                    item = window.get_nowait()
                    if item is None:
                        done = True
                        break
                    batch.append(item)
                for response in await uncut(self._earn_batch(scope, batch), self.ctx.database):
                    yield response
            await reader  # a failed read (a malformed item) ends the stream with its status
        except errors.CoalitionError as err:
            await context.abort_with_status(to_status(err))
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):
                raise
            log.exception("unhandled error in StreamEarnPoints")
            await context.abort_with_status(INTERNAL)  # no exception text for the client
        finally:
            reader.cancel()

    async def _earn_batch(
        self, scope: str, batch: list[tuple[int, Any]]
    ) -> list[pb.StreamEarnPointsResponse]:
        """Answers for a batch, in order. Runs of plain items commit together; an agency item
        naming a program number runs alone, since it locks the number before the member (the
        order LinkAccount uses) and must not wait on a number while holding other members."""
        answers: list[pb.StreamEarnPointsResponse] = []
        run: list[tuple[int, Any]] = []
        for index, item in batch:
            if _locks_a_number(item):
                answers += await self._earn_run(scope, run)
                answers.append(await self._earn_item(scope, index, item, None))
                run = []
            else:
                run.append((index, item))
        return answers + await self._earn_run(scope, run)

    async def _earn_run(
        self, scope: str, run: list[tuple[int, Any]]
    ) -> list[pb.StreamEarnPointsResponse]:
        """Items committed together; one by one if the run fails as a whole (a deadlock with
        another writer), so every item still gets exactly one outcome."""
        if len(run) > 1:
            try:
                async with self.ctx.database.begin() as conn:
                    return [await self._earn_item(scope, i, item, conn) for i, item in run]
            except (DBAPIError, errors.Unavailable):
                log.warning("a batch of %d earns failed as a whole; one by one now", len(run))
        return [await self._earn_item(scope, i, item, None) for i, item in run]

    async def _earn_item(
        self,
        scope: str,
        index: int,
        item: pb.StreamEarnPointsRequest,
        conn: AsyncConnection | None,
    ) -> pb.StreamEarnPointsResponse:
        if isinstance(item, Malformed):
            answer = pb.StreamEarnPointsResponse(index=index)
            answer.error.CopyFrom(item_error(MALFORMED))
            return answer
        request = item.request
        answer = pb.StreamEarnPointsResponse(index=index, request_id=request.request_id)
        try:
            check_string_sizes(request)  # fields named as EarnPoints names them
            basis = _basis(request)

            async def work(c: AsyncConnection) -> bytes:
                transaction = await self._earn(c, request, basis)
                response = pb.EarnPointsResponse(transaction=transaction)
                return response.SerializeToString()

            key = IdempotencyKey(scope, request.request_id, "EarnPoints", request_hash(request))
            raw = (
                await run_once_in(conn, self.ctx.clock, key, work)
                if conn is not None
                else await run_once(self.ctx.database, self.ctx.clock, key, work)
            )
            answer.transaction.CopyFrom(pb.EarnPointsResponse.FromString(raw).transaction)
        except errors.CoalitionError as err:
            answer.error.CopyFrom(item_error(err))
        except DBAPIError:
            if conn is not None:
                raise  # the run is retried one by one
            log.exception("database error in StreamEarnPoints item %d", index)
            answer.error.CopyFrom(ITEM_INTERNAL)
        except Exception:
            log.exception("unhandled error in StreamEarnPoints item %d", index)
            answer.error.CopyFrom(ITEM_INTERNAL)
        return answer

    @rpc
    async def ConvertPoints(
        self, request: pb.ConvertPointsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ConvertPointsResponse:
        caller = self.caller()
        dl.check_points(request.points)
        airline_id = dp.parse_partner_name(request.program, "program")
        if not caller.is_operator and caller.partner_id != airline_id:
            raise errors.PermissionDenied(
                "NOT_YOUR_PROGRAM",
                "a partner converts only into its own program; member apps call as the operator",
                {"field": "program"},
            )

        async def work(conn: AsyncConnection) -> pb.ConvertPointsResponse:
            member = await self.resolve(
                conn, request.member if request.HasField("member") else None
            )
            done = await conversions.convert(conn, self.ctx, airline_id, member, request.points)
            standing = await tiers.status(conn, self.ctx, member.id)
            return pb.ConvertPointsResponse(
                transaction=transaction_to_proto(done.transaction, standing),
                converted_units=done.units,
                unit=done.unit,
                program_number=done.program_number,
            )

        return await self.once("ConvertPoints", request, pb.ConvertPointsResponse, work)


def _locks_a_number(item: Any) -> bool:
    return (
        isinstance(item, pb.StreamEarnPointsRequest)
        and bool(item.request.on_behalf_of)
        and item.request.member.WhichOneof("kind") == "program_number"
    )


@dataclass(frozen=True)
class _Unlinked:
    """A valid airline number no member has linked (yet)."""

    number: str
