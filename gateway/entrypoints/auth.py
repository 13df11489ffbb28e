"""Authentication, rate limiting and authorization for every RPC, in one interceptor.

A request carries `authorization: Bearer <api key>` or a client certificate issued by the
coalition CA (mTLS). The interceptor wraps each method handler, so the caller is resolved inside
the handler's own task and exposed through `current_caller()`. A resolved partner then takes a
token from its bucket (gateway.domain.ratelimit; a stream takes one when it opens): over its
limit the call ends RESOURCE_EXHAUSTED / RATE_LIMITED with RetryInfo before any work is done.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from typing import Any, TypeVar

import grpc

from gateway.adapters.db import Database
from gateway.domain import errors
from gateway.domain.credentials import Caller, hash_api_key
from gateway.domain.ratelimit import ADMIT, RateLimiter
from gateway.entrypoints.errors import to_status
from gateway.service import partners as partner_service
from gateway.service.context import AppContext
from partners.ca import partner_id_from_certificate

AUTH_CACHE_TTL_S = 5.0
"""How long a gateway trusts a resolved key; revocation through another gateway waits this."""
AUTH_CACHE_ENTRIES_MAX = 10_000

OPEN_SERVICES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)
OPERATOR_ONLY = frozenset(
    f"/coalition.v1.PartnerService/{m}"
    for m in (
        "CreatePartner",
        "ListPartners",
        "UpdatePartner",
        "CreateApiKey",
        "RevokeApiKey",
        "ListApiKeys",
        "IssueClientCertificate",
        "CreateCampaign",
        "ListCampaigns",
        "EndCampaign",
    )
)

_caller: ContextVar[Caller] = ContextVar("coalition_caller")
T = TypeVar("T")


def current_caller() -> Caller:
    return _caller.get()


def _unauthenticated(message: str) -> errors.Unauthenticated:
    return errors.Unauthenticated("INVALID_CREDENTIALS", message)


class AuthCache:
    def __init__(self) -> None:
        self._entries: dict[str, tuple[Caller, float]] = {}

    def get(self, key: str) -> Caller | None:
        hit = self._entries.get(key)
        if hit is None or hit[1] < time.monotonic():
            return None
        return hit[0]

    def put(self, key: str, caller: Caller) -> None:
        if len(self._entries) >= AUTH_CACHE_ENTRIES_MAX:
            self._entries.clear()  # rare; bounded memory beats a clever eviction policy
        self._entries[key] = (caller, time.monotonic() + AUTH_CACHE_TTL_S)

    def clear(self) -> None:
        self._entries.clear()


class Authenticator:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.cache = AuthCache()
        # One bucket per partner for this gateway process (the server's one Authenticator).
        self.limiter = RateLimiter(ctx.rate_limit_per_s) if ctx.rate_limit_per_s > 0 else None

    def throttle(self, caller: Caller) -> None:
        """Take one of the partner's tokens, or raise RATE_LIMITED; the operator is exempt."""
        if self.limiter is None or caller.is_operator or caller.partner_id is None:
            return
        wait_s = self.limiter.take(caller.partner_id, time.monotonic())
        if wait_s == ADMIT:
            return
        # Rounded up to the millisecond: a client that waits what it is told gets a token.
        advertised = f"{math.ceil(wait_s * 1000) / 1000:.3f}"
        raise errors.ResourceExhausted(
            "RATE_LIMITED",
            f"partners/{caller.partner_id} is over its limit of {self.limiter.per_s:g} "
            f"requests/s on this gateway: retry after {advertised} s",
            {
                "retry_after_s": advertised,
                "partner": f"partners/{caller.partner_id}",
                "limit_per_s": f"{self.limiter.per_s:g}",
            },
        )

    async def caller(self, context: grpc.aio.ServicerContext) -> Caller:
        metadata = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
        header = metadata.get("authorization")
        if header is not None:
            scheme, _, secret = header.partition(" ")
            if scheme.lower() != "bearer" or not secret.strip():
                raise _unauthenticated('expected "authorization: Bearer <api key>"')
            return await self._by_key(secret.strip())
        certificates = context.auth_context().get("x509_pem_cert") or []
        if certificates:
            return await self._by_certificate(certificates[0])
        raise errors.Unauthenticated(
            "MISSING_CREDENTIALS", 'send "authorization: Bearer <api key>" or a client certificate'
        )

    async def _by_key(self, secret: str) -> Caller:
        digest = hash_api_key(secret)
        cached = self.cache.get(digest)
        if cached is not None:
            return cached
        async with self.ctx.database.connect() as conn:
            found = await partner_service.authenticate(conn, secret)
        if found is None:
            raise _unauthenticated("unknown or revoked API key")
        self.cache.put(digest, found)
        return found

    async def _by_certificate(self, pem: bytes) -> Caller:
        # The TLS layer already verified the chain against the coalition CA.
        digest = "certificate:" + hashlib.sha256(pem).hexdigest()
        cached = self.cache.get(digest)
        if cached is not None:
            return cached
        partner_id = partner_id_from_certificate(pem)
        if partner_id is None:
            raise _unauthenticated("the client certificate names no coalition partner")
        async with self.ctx.database.connect() as conn:
            found = await partner_service.caller_for_partner(conn, partner_id)
        if found is None:
            raise _unauthenticated(f"the certificate's partner {partner_id} does not exist")
        self.cache.put(digest, found)
        return found


def authorize(method: str, caller: Caller) -> None:
    if method in OPERATOR_ONLY and not caller.is_operator:
        raise errors.PermissionDenied(
            "OPERATOR_ONLY", "only the operator may call this method", {"method": method}
        )


Behavior = Callable[..., Any]


class AuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, authenticator: Authenticator) -> None:
        self.authenticator = authenticator

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method: str = details.method
        if handler is None or method.startswith(OPEN_SERVICES):
            return handler
        return _wrap(handler, method, self.authenticator)


class Malformed:
    """Stands in for a request whose bytes are not a valid message of the method's type."""


MALFORMED = errors.InvalidArgument(
    "MALFORMED_REQUEST", "the request bytes are not a valid protobuf message for this method"
)


def _tolerant(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    # grpc answers a deserializer exception with UNKNOWN and the exception's class name;
    # deferring the failure to the handler lets us answer INVALID_ARGUMENT with an ErrorInfo.
    if deserialize is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception:
            return Malformed()

    return parse


async def _still_valid(
    requests: AsyncIterator[Any], context: grpc.aio.ServicerContext, auth: Authenticator
) -> AsyncIterator[Any]:
    """A stream's items, each admitted under credentials still valid when it arrives: a key
    revoked mid-stream ends the stream (at once on this gateway, which clears its cache; on
    another within AUTH_CACHE_TTL_S). A cached check is a hash and a dict lookup per item."""
    async for item in requests:
        await auth.caller(context)
        yield item


def _forget(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: the call it served is gone


async def uncut(work: Awaitable[T], database: Database) -> T:
    """Await `work`; on SQLite in a task of its own that a cancelled call (deadline, client
    cancel) does not interrupt: the call ends at once, the work runs on to its commit or
    rollback.

    aiosqlite runs each statement in a thread that cancellation cannot stop, and a statement
    cut off there abandons its transaction with SQLite's write lock held until the garbage
    collector finds the connection: every other request waits. So SQLite work finishes (and a
    mutation's outcome is stored under its request_id for the client's retry). On PostgreSQL
    asyncpg cancels the statement on the server and the transaction rolls back: the deadline
    stops the work there.
    """
    if database.dialect != "sqlite":
        return await work
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.add_done_callback(_forget)
        raise


def _wrap(handler: grpc.RpcMethodHandler, method: str, auth: Authenticator) -> Any:
    async def admit(context: grpc.aio.ServicerContext) -> None:
        try:
            caller = await auth.caller(context)
            auth.throttle(caller)  # before authorize: refused calls count as well
            authorize(method, caller)
        except errors.CoalitionError as err:
            await context.abort_with_status(to_status(err))
        _caller.set(caller)

    if handler.unary_unary:
        inner = handler.unary_unary

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await admit(context)
            if isinstance(request, Malformed):
                await context.abort_with_status(to_status(MALFORMED))
            return await uncut(inner(request, context), auth.ctx.database)

        return grpc.unary_unary_rpc_method_handler(
            unary, _tolerant(handler.request_deserializer), handler.response_serializer
        )
    if handler.stream_stream:
        inner_stream = handler.stream_stream

        async def stream(requests: Any, context: grpc.aio.ServicerContext) -> Any:
            # A malformed item reaches the handler as a Malformed marker: in a bulk stream it
            # is that item's error, not the end of the stream.
            await admit(context)
            result = inner_stream(_still_valid(requests, context, auth), context)
            if hasattr(result, "__aiter__"):
                async for item in result:
                    yield item
            else:  # a plain coroutine, e.g. a handler that only aborts
                await result

        return grpc.stream_stream_rpc_method_handler(
            stream, _tolerant(handler.request_deserializer), handler.response_serializer
        )
    raise AssertionError(f"no wrapper for the handler kind of {method}")
