"""MemberService."""

from __future__ import annotations

from typing import Any

import grpc
from sqlalchemy.ext.asyncio import AsyncConnection

from coalition.v1 import members_pb2 as pb
from coalition.v1 import members_pb2_grpc
from gateway.domain import errors
from gateway.domain import links as dln
from gateway.domain import members as dm
from gateway.domain import partners as dp
from gateway.domain.partners import parse_partner_name
from gateway.entrypoints.errors import rpc
from gateway.entrypoints.grpc.base import Servicer
from gateway.entrypoints.grpc.convert import (
    balance_to_proto,
    contact_from_proto,
    linked_account_to_proto,
    member_to_proto,
    timestamp,
    transaction_to_proto,
    txn_type_filter,
)
from gateway.service import ledger, links, tiers
from gateway.service import members as members_service


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
            async with self.read() as conn:
                member = await self.resolve(conn, request, field="")
            return pb.LookupMemberResponse(member=member_to_proto(member))
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

    # -- linked accounts ---------------------------------------------------------------------

    async def _linking(
        self, conn: AsyncConnection, member_ref: Any, account: pb.LinkedAccount
    ) -> tuple[dm.Member, dp.Partner, dln.LinkKind, str]:
        """The member and the account of a link request; a partner names the member by loyalty
        number (half of the proof) and links only its own accounts."""
        if not self.caller().is_operator and member_ref.WhichOneof("kind") != "loyalty_number":
            raise errors.InvalidArgument.on_field(
                "member.loyalty_number",
                "LOYALTY_NUMBER_REQUIRED",
                "a partner names the member by loyalty number to link an account",
            )
        kind = account.WhichOneof("account")
        if kind is None:
            raise errors.InvalidArgument.on_field(
                "linked_account", "MISSING_ACCOUNT", "set partner_account or program_number"
            )
        member = await self.resolve(conn, member_ref)
        partner, link_kind, external = await self.external_account(
            conn, getattr(account, kind), f"linked_account.{kind}", owner_only=True
        )
        return member, partner, link_kind, external

    @rpc
    async def RequestLinkCode(
        self, request: pb.RequestLinkCodeRequest, context: grpc.aio.ServicerContext
    ) -> pb.RequestLinkCodeResponse:
        caller = self.caller()

        async def work(conn: AsyncConnection) -> pb.RequestLinkCodeResponse:
            member, partner, kind, external = await self._linking(
                conn, request.member, request.linked_account
            )
            expires, destination = await links.request_code(
                conn,
                self.ctx,
                caller.idempotency_scope,
                member,
                partner.settings.display_name,
                kind,
                links.external_key(self.ctx, partner.id, kind, external),
            )
            return pb.RequestLinkCodeResponse(
                expire_time=timestamp(expires), destination=destination
            )

        return await self.once("RequestLinkCode", request, pb.RequestLinkCodeResponse, work)

    @rpc
    async def LinkAccount(
        self, request: pb.LinkAccountRequest, context: grpc.aio.ServicerContext
    ) -> pb.LinkAccountResponse:
        caller = self.caller()
        code: str | errors.CoalitionError | None = None
        # A partner's code is checked in a transaction of its own, committed before a refusal
        # is raised: a wrong code counts even though the call fails.
        opened = self.read() if caller.is_operator else self.ctx.database.begin()
        async with opened as conn:
            member, partner, kind, external = await self._linking(
                conn, request.member, request.linked_account
            )
            if not caller.is_operator:
                code = await links.verify_code(
                    conn,
                    self.ctx,
                    caller.idempotency_scope,
                    member.id,
                    links.external_key(self.ctx, partner.id, kind, external),
                    request.verification_code,
                )
        if isinstance(code, errors.CoalitionError):
            raise code

        async def work(conn: AsyncConnection) -> pb.LinkAccountResponse:
            if code is not None:
                await links.use_code(conn, self.ctx, code)
            account, _ = await links.link(conn, self.ctx, member.id, partner.id, kind, external)
            return pb.LinkAccountResponse(linked_account=linked_account_to_proto(account))

        return await self.once("LinkAccount", request, pb.LinkAccountResponse, work)

    @rpc
    async def UnlinkAccount(
        self, request: pb.UnlinkAccountRequest, context: grpc.aio.ServicerContext
    ) -> pb.UnlinkAccountResponse:
        caller = self.caller()

        async def work(conn: AsyncConnection) -> pb.UnlinkAccountResponse:
            await links.unlink(conn, self.ctx, request.name, caller.partner_id)
            return pb.UnlinkAccountResponse()

        return await self.once("UnlinkAccount", request, pb.UnlinkAccountResponse, work)

    @rpc
    async def ListLinkedAccounts(
        self, request: pb.ListLinkedAccountsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListLinkedAccountsResponse:
        caller = self.caller()
        async with self.read() as conn:
            member = await self.resolve(
                conn, request.member if request.HasField("member") else None
            )
            page, token = await links.list_page(
                conn,
                self.ctx,
                member.id,
                caller.partner_id,  # a partner sees only its own links
                request.page_size,
                request.page_token,
                request.show_unlinked,
            )
        return pb.ListLinkedAccountsResponse(
            linked_accounts=[linked_account_to_proto(a) for a in page], next_page_token=token
        )
