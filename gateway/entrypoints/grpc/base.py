"""What every servicer shares: the caller, transactions and exactly-once mutations."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncConnection

from coalition.v1 import common_pb2
from gateway.domain import errors, programs
from gateway.domain import links as dln
from gateway.domain import members as dm
from gateway.domain import partners as dp
from gateway.domain.credentials import Caller
from gateway.entrypoints.auth import current_caller
from gateway.entrypoints.grpc.convert import request_hash
from gateway.service import links
from gateway.service import members as members_service
from gateway.service import partners as partner_service
from gateway.service.context import AppContext
from gateway.service.idempotency import IdempotencyKey, run_once

M = TypeVar("M", bound=Message)


class Servicer:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    @staticmethod
    def caller() -> Caller:
        return current_caller()

    async def once(
        self,
        method: str,
        request: Any,
        response_type: type[M],
        work: Callable[[AsyncConnection], Awaitable[M]],
        redact: Callable[[M], M] | None = None,
    ) -> M:
        """Run a mutation exactly once per (caller, request_id); replays get the first answer.

        redact strips what must not be kept (an API key's secret) from the stored answer.
        """
        ran: list[tuple[M, bytes]] = []

        async def run(conn: AsyncConnection) -> bytes:
            response = await work(conn)
            stored = (redact(response) if redact else response).SerializeToString()
            ran.append((response, stored))
            return stored

        key = IdempotencyKey(
            self.caller().idempotency_scope, request.request_id, method, request_hash(request)
        )
        raw = await run_once(self.ctx.database, self.ctx.clock, key, run)
        # The work may have run and been rolled back (a concurrent duplicate won): answer with
        # the unredacted response only if it is the one that was kept.
        for response, stored in ran:
            if stored == raw:
                return response
        return response_type.FromString(raw)

    async def resolve(self, conn: AsyncConnection, ref: Any, field: str = "member") -> dm.Member:
        """The member a MemberRef names (the field is named in errors)."""
        kind = ref.WhichOneof("kind") if ref is not None else None
        if kind is None:
            raise errors.InvalidArgument.on_field(
                field, "MISSING_MEMBER_REF", "name the member by one of its identifiers"
            )
        if kind in ("partner_account", "program_number"):
            partner, link_kind, external = await self.external_account(
                conn, getattr(ref, kind), f"{field}.{kind}" if field else kind
            )
            member_id = await links.find_member_id(conn, self.ctx, partner.id, link_kind, external)
            if member_id is None:
                what = "account" if link_kind is dln.LinkKind.ACCOUNT else "program number"
                raise members_service.member_not_found(f"with this linked {what}")
            return await self.resolve_id(conn, member_id)
        return await members_service.lookup(
            conn, self.ctx, kind, getattr(ref, kind), field_prefix=f"{field}."
        )

    async def external_account(
        self, conn: AsyncConnection, account: Any, field: str, owner_only: bool = False
    ) -> tuple[dp.Partner, dln.LinkKind, str]:
        """The partner, kind and normalized id of a PartnerAccount or ProgramNumber message.

        A partner names only its own accounts. A program number may also be used by the
        travel agencies authorized for the airline, unless owner_only (linking, unlinking).
        """
        caller = self.caller()
        if isinstance(account, common_pb2.PartnerAccount):
            partner_id = (
                dp.parse_partner_name(account.partner, f"{field}.partner")
                if account.partner
                else caller.partner_id
            )
            if partner_id is None:
                raise errors.InvalidArgument.on_field(
                    f"{field}.partner", "MISSING_PARTNER", "the operator names the partner"
                )
            if not caller.is_operator and partner_id != caller.partner_id:
                raise errors.PermissionDenied(
                    "NOT_YOUR_ACCOUNT",
                    "a partner names members only by its own account ids",
                    {"field": f"{field}.partner"},
                )
            partner = await partner_service.get(conn, partner_id)
            external = programs.check_external_id(account.external_id, f"{field}.external_id")
            return partner, dln.LinkKind.ACCOUNT, external
        airline_id = dp.parse_partner_name(account.program, f"{field}.program")
        if not caller.is_operator and airline_id != caller.partner_id:
            agency = await partner_service.get(conn, caller.partner_id or "")
            if owner_only or airline_id not in agency.settings.authorized_airlines:
                raise errors.PermissionDenied(
                    "NOT_YOUR_ACCOUNT" if owner_only else "AIRLINE_NOT_AUTHORIZED",
                    f"{account.program} numbers are for the airline"
                    + ("" if owner_only else " and the agencies it authorized"),
                    {"field": f"{field}.program"},
                )
        airline = await partner_service.get(conn, airline_id)
        if airline.settings.program is None:
            raise errors.InvalidArgument.on_field(
                f"{field}.program", "NOT_AN_AIRLINE", f"{account.program} runs no loyalty program"
            )
        number = programs.check_number(
            airline.settings.program.number_format, account.number, f"{field}.number"
        )
        return airline, dln.LinkKind.PROGRAM, number

    async def resolve_id(self, conn: AsyncConnection, member_id: str) -> dm.Member:
        return await members_service.get(conn, self.ctx, f"members/{member_id}")

    async def acting_partner(self, conn: AsyncConnection) -> dp.Partner:
        """The partner a points movement is for: the caller, which must be a partner."""
        caller = self.caller()
        if caller.partner_id is None:
            raise errors.PermissionDenied(
                "PARTNER_ONLY", "points move at a partner: call with a partner's credentials"
            )
        partner = await partner_service.get(conn, caller.partner_id)
        if partner.type is dp.PartnerType.CHARITY:
            raise errors.PermissionDenied(
                "PARTNER_NOT_AUTHORIZED", "charities receive donations; they do not issue points"
            )
        return partner

    def read(self) -> Any:
        """A connection for a read-only request."""
        return self.ctx.database.connect()


def not_yet(service: str, method: str, issue: str) -> errors.Unimplemented:
    return errors.Unimplemented(
        "NOT_YET_AVAILABLE",
        f"{service}.{method} is part of the contract but not served by this gateway yet",
        {"method": method, "capability": issue},
    )


def fill_unimplemented(
    servicer: object, base: type, service: str, capabilities: dict[str, str]
) -> None:
    """Answer every RPC the servicer does not implement with UNIMPLEMENTED + ErrorInfo."""
    from gateway.entrypoints.errors import to_status

    for method in [m for m in vars(base) if m[:1].isupper()]:
        if getattr(type(servicer), method) is not getattr(base, method):
            continue  # implemented by the servicer
        err = not_yet(service, method, capabilities.get(method, "a later release"))

        async def unimplemented(
            request: Any, context: grpc.aio.ServicerContext, _err: errors.CoalitionError = err
        ) -> Any:
            await context.abort_with_status(to_status(_err))

        setattr(servicer, method, unimplemented)
