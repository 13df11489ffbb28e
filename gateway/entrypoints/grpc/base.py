"""What every servicer shares: the caller, transactions and exactly-once mutations."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.domain import errors
from gateway.domain import members as dm
from gateway.domain import partners as dp
from gateway.domain.credentials import Caller
from gateway.entrypoints.auth import current_caller
from gateway.entrypoints.grpc.convert import request_hash
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
        first: list[M] = []

        async def run(conn: AsyncConnection) -> bytes:
            response = await work(conn)
            first.append(response)
            stored = redact(response) if redact else response
            return stored.SerializeToString()

        key = IdempotencyKey(
            self.caller().idempotency_scope, request.request_id, method, request_hash(request)
        )
        raw = await run_once(self.ctx.database, self.ctx.clock, key, run)
        return first[0] if first else response_type.FromString(raw)

    async def resolve(self, conn: AsyncConnection, ref: Any, field: str = "member") -> dm.Member:
        """The member a MemberRef names (the field is named in errors)."""
        kind = ref.WhichOneof("kind") if ref is not None else None
        if kind in ("partner_account", "program_number"):
            raise not_yet("coalition.v1.MemberService", f"{field}.{kind}", "account linking")
        if kind is None:
            raise errors.InvalidArgument.on_field(
                field, "MISSING_MEMBER_REF", "name the member by one of its identifiers"
            )
        return await members_service.lookup(
            conn, self.ctx, kind, getattr(ref, kind), field_prefix=f"{field}."
        )

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
