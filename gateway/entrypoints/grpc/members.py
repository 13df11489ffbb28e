"""MemberService."""

from __future__ import annotations

import grpc
from sqlalchemy.ext.asyncio import AsyncConnection

from coalition.v1 import members_pb2 as pb
from coalition.v1 import members_pb2_grpc
from gateway.domain.partners import parse_partner_name
from gateway.entrypoints.errors import rpc
from gateway.entrypoints.grpc.base import Servicer, not_yet
from gateway.entrypoints.grpc.convert import (
    balance_to_proto,
    contact_from_proto,
    member_to_proto,
    transaction_to_proto,
    txn_type_filter,
)
from gateway.service import ledger, tiers
from gateway.service import members as members_service

SERVICE = "coalition.v1.MemberService"
LINKING = "account linking"


class MemberServicer(Servicer, members_pb2_grpc.MemberServiceServicer):
    @rpc
    async def EnrollMember(
        self, request: pb.EnrollMemberRequest, context: grpc.aio.ServicerContext
    ) -> pb.EnrollMemberResponse:
        async def work(conn: AsyncConnection) -> pb.EnrollMemberResponse:
            member = await members_service.enroll(
                conn, self.ctx, contact_from_proto(request.member), request.default_region
            )
            return pb.EnrollMemberResponse(member=member_to_proto(member))

        return await self.once("EnrollMember", request, pb.EnrollMemberResponse, work)

    @rpc
    async def GetMember(
        self, request: pb.GetMemberRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetMemberResponse:
        async with self.read() as conn:
            member = await members_service.get(conn, self.ctx, request.name)
        balance, standing, expiring = await ledger.current_balance(self.ctx, member.id)
        shown = member_to_proto(member)
        shown.tier = standing.tier.code  # a review that fell due shows before the sweeper runs
        return pb.GetMemberResponse(
            member=shown, balance=balance_to_proto(balance, standing, expiring)
        )

    @rpc
    async def UpdateMember(
        self, request: pb.UpdateMemberRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdateMemberResponse:
        async def work(conn: AsyncConnection) -> pb.UpdateMemberResponse:
            member = await members_service.update(
                conn,
                self.ctx,
                request.member.name,
                contact_from_proto(request.member),
                list(request.update_mask.paths),
                request.default_region,
            )
            return pb.UpdateMemberResponse(member=member_to_proto(member))

        return await self.once("UpdateMember", request, pb.UpdateMemberResponse, work)

    @rpc
    async def LookupMember(
        self, request: pb.LookupMemberRequest, context: grpc.aio.ServicerContext
    ) -> pb.LookupMemberResponse:
        kind = request.WhichOneof("kind")
        if kind in ("partner_account", "program_number"):
            raise not_yet(SERVICE, f"LookupMember.{kind}", LINKING)
        async with self.read() as conn:
            member = await members_service.lookup(
                conn,
                self.ctx,
                kind or "",
                getattr(request, kind) if kind else "",
                request.default_region,
            )
        return pb.LookupMemberResponse(member=member_to_proto(member))

    @rpc
    async def GetBalance(
        self, request: pb.GetBalanceRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetBalanceResponse:
        async with self.read() as conn:
            member = await self.resolve(
                conn, request.member if request.HasField("member") else None
            )
        balance, standing, expiring = await ledger.current_balance(self.ctx, member.id)
        return pb.GetBalanceResponse(balance=balance_to_proto(balance, standing, expiring))

    @rpc
    async def ListTransactions(
        self, request: pb.ListTransactionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListTransactionsResponse:
        kind = txn_type_filter(request.type)
        caller = self.caller()
        if caller.is_operator:
            partner_id = parse_partner_name(request.partner, "partner") if request.partner else None
        else:
            partner_id = caller.partner_id  # a partner sees only its own transactions
        async with self.read() as conn:
            member = await self.resolve(
                conn, request.member if request.HasField("member") else None
            )
            page, token = await ledger.history(
                conn, member.id, request.page_size, request.page_token, partner_id, kind
            )
            standing = await tiers.status(conn, self.ctx, member.id)
        return pb.ListTransactionsResponse(
            transactions=[transaction_to_proto(t, standing) for t in page],
            next_page_token=token,
        )

    # Account linking lands with the cross-brand release; until then these say so precisely.

    @rpc
    async def LinkAccount(
        self, request: pb.LinkAccountRequest, context: grpc.aio.ServicerContext
    ) -> pb.LinkAccountResponse:
        raise not_yet(SERVICE, "LinkAccount", LINKING)

    @rpc
    async def UnlinkAccount(
        self, request: pb.UnlinkAccountRequest, context: grpc.aio.ServicerContext
    ) -> pb.UnlinkAccountResponse:
        raise not_yet(SERVICE, "UnlinkAccount", LINKING)

    @rpc
    async def ListLinkedAccounts(
        self, request: pb.ListLinkedAccountsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListLinkedAccountsResponse:
        raise not_yet(SERVICE, "ListLinkedAccounts", LINKING)
