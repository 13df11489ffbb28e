"""Assert a gRPC call fails the Coalition way: a code, one ErrorInfo and, for bad input, a field."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

DOMAIN = "coalition.v1"
STATUS_DETAILS_KEY = "grpc-status-details-bin"


def decode_status(err: grpc.aio.AioRpcError) -> status_pb2.Status:
    """The google.rpc.Status the server put in the trailing metadata."""
    raw = [v for k, v in (err.trailing_metadata() or ()) if k == STATUS_DETAILS_KEY]
    assert len(raw) == 1, f"expected one {STATUS_DETAILS_KEY}, got {len(raw)}: {err!r}"
    return status_pb2.Status.FromString(raw[0])


def details_of(status: status_pb2.Status, kind: type[Any]) -> list[Any]:
    found = []
    for packed in status.details:
        if packed.Is(kind.DESCRIPTOR):
            message = kind()
            packed.Unpack(message)
            found.append(message)
    return found


async def expect_error(
    awaitable: Awaitable[Any],
    code: grpc.StatusCode,
    reason: str,
    field: str | None = None,
) -> error_details_pb2.ErrorInfo:
    """Await a call that must fail with code and reason (and a violation on field, if given)."""
    try:
        result = await awaitable
    except grpc.aio.AioRpcError as caught:
        err = caught
    else:
        raise AssertionError(f"expected {code.name} {reason}, the call succeeded: {result!r}")
    assert err.code() == code, f"expected {code.name} {reason}, got {err.code().name}: {err!r}"
    status = decode_status(err)
    assert status.code == code.value[0], f"Status.code {status.code} != {code.name}"
    infos = details_of(status, error_details_pb2.ErrorInfo)
    assert len(infos) == 1, f"expected exactly one ErrorInfo, got {len(infos)}: {status}"
    info = infos[0]
    assert info.domain == DOMAIN, f"ErrorInfo.domain {info.domain!r} != {DOMAIN!r}"
    assert info.reason == reason, f"expected reason {reason}, got {info.reason}: {status.message}"
    if field is not None:
        violations = [
            v.field
            for bad in details_of(status, error_details_pb2.BadRequest)
            for v in bad.field_violations
        ]
        assert field in violations, f"expected a violation on {field!r}, got {violations}"
    return info
