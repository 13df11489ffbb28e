"""Exactly-once mutations: the first outcome of (caller, request_id) is stored and replayed.

A request reads its key first (a replay answers from there), does its work, and records the
key with the response in the same transaction: two round trips on top of the work. A
concurrent duplicate that got past the read does the work too, but its insert finds the
winner's key (on PostgreSQL it waits for the winner to commit), so it rolls back and replays
the winner's answer: one outcome, whatever the timing. A duplicate whose work fails on the
winner's effects (the phone number it just took, the points it just spent) looks for the
winner's key the same way before answering with its own error.

Business failures (CoalitionError.stored) are kept too: the work's writes roll back, and the
failure is recorded under the key in a transaction (or savepoint) of its own. Input errors leave
no trace.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.adapters.db import Database, upsert
from gateway.adapters.models import IdempotencyKeyRow, table_of
from gateway.clock import Clock
from gateway.domain import errors
from gateway.domain.credentials import REQUEST_ID_CHARS_MAX

IDEMPOTENCY_ATTEMPTS_MAX = 5
"""Rounds of insert-or-read; more than two means a winner keeps rolling back."""

RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})
"""deadlock_detected, serialization_failure."""
_KEYS = table_of(IdempotencyKeyRow)
_ERROR_KINDS: dict[str, type[errors.CoalitionError]] = {
    cls.__name__: cls for cls in (errors.FailedPrecondition, errors.NotFound, errors.AlreadyExists)
}
_WINNERS_EFFECTS: tuple[type[Exception], ...] = (*_ERROR_KINDS.values(), IntegrityError)
"""Failures a concurrent duplicate's committed work can cause (the points it spent, the phone
it took, the hold it closed, its unique row): after one, look for that duplicate's answer.
Input, permission and availability errors depend on the request and the moment alone: they are
answered as they are, without another query."""


@dataclass(frozen=True)
class IdempotencyKey:
    scope: str
    request_id: str
    method: str
    request_hash: str


def check_request_id(request_id: str) -> None:
    if not request_id:
        raise errors.InvalidArgument.on_field(
            "request_id", "MISSING_REQUEST_ID", "every mutation needs a request_id"
        )
    if len(request_id) > REQUEST_ID_CHARS_MAX:
        raise errors.InvalidArgument.on_field(
            "request_id", "FIELD_TOO_LONG", f"at most {REQUEST_ID_CHARS_MAX} characters"
        )
    if not request_id.isprintable():
        raise errors.InvalidArgument.on_field(
            "request_id", "INVALID_CHARACTERS", "printable characters only (no control characters)"
        )


def _encode_error(err: errors.CoalitionError) -> str:
    return json.dumps(
        {
            "kind": type(err).__name__,
            "reason": err.reason,
            "message": err.message,
            "metadata": dict(err.metadata),
        }
    )


def _decode_error(raw: str) -> errors.CoalitionError:
    data = json.loads(raw)
    kind = _ERROR_KINDS.get(data["kind"], errors.FailedPrecondition)
    return kind(data["reason"], data["message"], data["metadata"])


class _Contended(Exception):
    pass


class _StoredFailure(Exception):
    """Carries a stored business failure out of the transaction, so the work rolls back."""

    def __init__(self, error: errors.CoalitionError) -> None:
        self.error = error


async def _replay(conn: AsyncConnection, key: IdempotencyKey) -> bytes | None:
    row = (
        await conn.execute(
            select(_KEYS.c.method, _KEYS.c.request_hash, _KEYS.c.response, _KEYS.c.error).where(
                _KEYS.c.scope == key.scope, _KEYS.c.request_id == key.request_id
            )
        )
    ).first()
    if row is None:
        return None
    if row.method != key.method or row.request_hash != key.request_hash:
        raise errors.AlreadyExists(
            "REQUEST_ID_REUSED",
            "this request_id was already used for a different request",
            {"request_id": key.request_id},
        )
    if row.error is not None:
        raise _decode_error(row.error)
    assert row.response is not None, "a committed key always has an outcome"
    return bytes(row.response)


async def run_once(
    database: Database,
    clock: Clock,
    key: IdempotencyKey,
    work: Callable[[AsyncConnection], Awaitable[bytes]],
) -> bytes:
    """Run work at most once for key and return its (serialized) response, or the stored one."""
    check_request_id(key.request_id)
    for _ in range(IDEMPOTENCY_ATTEMPTS_MAX):
        try:
            return await _attempt(database, clock, key, work)
        except _Contended:
            continue
        except DBAPIError as exc:
            # PostgreSQL chose this transaction as a deadlock victim (or could not serialize
            # it): everything rolled back, so running it again is safe.
            if getattr(exc.orig, "pgcode", None) not in RETRYABLE_SQLSTATES:
                raise
            continue
    raise errors.FailedPrecondition(
        "REQUEST_IN_PROGRESS", "a request with this request_id is still in progress; retry"
    )


async def run_once_in(
    conn: AsyncConnection,
    clock: Clock,
    key: IdempotencyKey,
    work: Callable[[AsyncConnection], Awaitable[bytes]],
) -> bytes:
    """run_once inside the caller's transaction (one item of a batch), in a savepoint: the
    same outcome as run_once, committed with the rest of the batch."""
    check_request_id(key.request_id)
    for _ in range(IDEMPOTENCY_ATTEMPTS_MAX):
        try:
            async with conn.begin_nested():
                return await _run(conn, clock, key, work)
        except _StoredFailure as failed:
            async with conn.begin_nested():
                recorded = await _record(conn, clock, key, error=_encode_error(failed.error))
            if recorded:
                raise failed.error from None
        except _Contended:
            pass  # a concurrent duplicate committed first: read its answer next round
        except _WINNERS_EFFECTS:
            stored = await _replay(conn, key)
            if stored is None:
                raise
            return stored
    raise errors.FailedPrecondition(
        "REQUEST_IN_PROGRESS", "a request with this request_id is still in progress; retry"
    )


async def _attempt(
    database: Database,
    clock: Clock,
    key: IdempotencyKey,
    work: Callable[[AsyncConnection], Awaitable[bytes]],
) -> bytes:
    try:
        async with database.begin() as conn:
            return await _run(conn, clock, key, work)
    except _StoredFailure as failed:
        async with database.begin() as conn:
            recorded = await _record(conn, clock, key, error=_encode_error(failed.error))
        if not recorded:
            raise _Contended from None
        raise failed.error from None
    except _WINNERS_EFFECTS as exc:
        # The work may have failed on a concurrent duplicate's effects (its member, its unique
        # row): if that duplicate's answer is there now, it is ours too.
        async with database.connect() as conn:
            stored = await _replay(conn, key)
        if stored is not None:
            return stored
        if isinstance(exc, IntegrityError):
            raise _Contended from None  # a duplicate still in flight: look again next round
        raise


async def _run(
    conn: AsyncConnection,
    clock: Clock,
    key: IdempotencyKey,
    work: Callable[[AsyncConnection], Awaitable[bytes]],
) -> bytes:
    """The stored answer, or the work's answer recorded under the key. A stored business
    failure leaves as _StoredFailure, for the caller to roll back and then record."""
    stored = await _replay(conn, key)
    if stored is not None:
        return stored
    try:
        response = await work(conn)
    except errors.CoalitionError as err:
        if not err.stored:
            raise
        raise _StoredFailure(err) from None
    if not await _record(conn, clock, key, response=response):
        raise _Contended  # a concurrent duplicate committed first; its answer wins
    return response


async def _record(
    conn: AsyncConnection,
    clock: Clock,
    key: IdempotencyKey,
    response: bytes | None = None,
    error: str | None = None,
) -> bool:
    """Insert the key with its outcome; False if another request's key got there first."""
    inserted = await conn.execute(
        upsert(conn, _KEYS)
        .values(
            scope=key.scope,
            request_id=key.request_id,
            method=key.method,
            request_hash=key.request_hash,
            create_time=clock.now(),
            response=response,
            error=error,
        )
        .on_conflict_do_nothing()
        .returning(_KEYS.c.request_id)
    )
    return inserted.first() is not None
