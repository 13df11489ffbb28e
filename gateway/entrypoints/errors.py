"""The one mapping from domain errors to google.rpc.Status (AIP-193)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from coalition.v1 import common_pb2
from gateway.adapters.db import database_unavailable
from gateway.domain import errors
from gateway.entrypoints.grpc.convert import check_string_sizes

DOMAIN = "coalition.v1"
NANOS_PER_S = 1_000_000_000
RETRY_DELAY_S_MAX = 24 * 3600
"""The longest RetryInfo delay sent; google.protobuf.Duration itself stops at 10,000 years."""
log = logging.getLogger("coalition.grpc")

_CODES: dict[type[errors.CoalitionError], int] = {
    errors.InvalidArgument: code_pb2.INVALID_ARGUMENT,
    errors.NotFound: code_pb2.NOT_FOUND,
    errors.AlreadyExists: code_pb2.ALREADY_EXISTS,
    errors.FailedPrecondition: code_pb2.FAILED_PRECONDITION,
    errors.Unauthenticated: code_pb2.UNAUTHENTICATED,
    errors.PermissionDenied: code_pb2.PERMISSION_DENIED,
    errors.ResourceExhausted: code_pb2.RESOURCE_EXHAUSTED,
    errors.Unimplemented: code_pb2.UNIMPLEMENTED,
    errors.Unavailable: code_pb2.UNAVAILABLE,
}


def item_error(err: errors.CoalitionError) -> common_pb2.ItemError:
    """The error of one item of a batch or stream: what the unary call would have returned.

    A field path is in metadata["field"], as in ErrorInfo; BadRequest has no place here.
    """
    code = next(c for kind, c in _CODES.items() if isinstance(err, kind))
    return common_pb2.ItemError(
        code=code, reason=err.reason, message=err.message, metadata=dict(err.metadata)
    )


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _retry_delay(seconds: str) -> duration_pb2.Duration | None:
    """RetryInfo's delay from metadata["retry_after_s"] (decimal seconds, "0.125"), to the
    nanosecond and rounded up, so that waiting it is always enough; None if there is none."""
    try:
        delay = Decimal(seconds)
    except InvalidOperation:
        return None
    if not delay.is_finite() or delay <= 0:
        return None
    delay = min(delay, Decimal(RETRY_DELAY_S_MAX))
    nanos = int((delay * NANOS_PER_S).to_integral_value(rounding=ROUND_CEILING))
    return duration_pb2.Duration(seconds=nanos // NANOS_PER_S, nanos=nanos % NANOS_PER_S)


def to_status(err: errors.CoalitionError) -> grpc.Status:
    code = next(c for kind, c in _CODES.items() if isinstance(err, kind))
    details = [
        _pack(error_details_pb2.ErrorInfo(reason=err.reason, domain=DOMAIN, metadata=err.metadata))
    ]
    if err.violations:
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=v.field, description=v.description, reason=err.reason
                        )
                        for v in err.violations
                    ]
                )
            )
        )
    delay = _retry_delay(err.metadata.get("retry_after_s", ""))
    if delay is not None:
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    return rpc_status.to_status(status_pb2.Status(code=code, message=err.message, details=details))


INTERNAL = rpc_status.to_status(
    status_pb2.Status(
        code=code_pb2.INTERNAL,
        message="internal error; it has been logged",
        details=[_pack(error_details_pb2.ErrorInfo(reason="INTERNAL", domain=DOMAIN))],
    )
)

R = TypeVar("R")
H = Callable[..., Awaitable[R]]


def rpc(handler: H[R]) -> H[R]:
    """Turn domain errors into statuses; never leak a traceback to the client."""

    @functools.wraps(handler)
    async def wrapped(self: Any, request: Any, context: grpc.aio.ServicerContext) -> R:
        try:
            if isinstance(request, Message):  # streams are checked item by item
                check_string_sizes(request)  # before any parsing: oversized input fails first
            return await handler(self, request, context)
        except errors.CoalitionError as err:
            await context.abort_with_status(to_status(err))
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):  # abort_with_status above, passing through
                raise
            # Database.begin()/connect() raise Unavailable already; this catches a lost
            # connection met anywhere else (a result read after its block, say).
            outage = database_unavailable(exc)
            if outage is not None:
                await context.abort_with_status(to_status(outage))
            log.exception("unhandled error in %s", handler.__qualname__)
            await context.abort_with_status(INTERNAL)
        raise AssertionError("abort_with_status returns only by raising")

    return wrapped
