"""The one error model of Coalition.

The domain raises these; a single mapping at the gRPC edge (gateway.entrypoints.errors) turns
them into google.rpc.Status with an ErrorInfo (and a BadRequest for invalid input)::

    CoalitionError                      reason: UPPER_SNAKE, stable; metadata: str -> str
    ├── InvalidArgument                 bad input; never stored for idempotent replay
    ├── NotFound                        MEMBER_NOT_FOUND, PARTNER_NOT_FOUND, ...
    ├── AlreadyExists                   PHONE_NUMBER_TAKEN, REQUEST_ID_REUSED, ...
    ├── FailedPrecondition              business outcomes: INSUFFICIENT_POINTS, HOLD_EXPIRED, ...
    ├── Unauthenticated                 missing, malformed, unknown or revoked credentials
    ├── PermissionDenied                the caller may not do this (OPERATOR_ONLY, ...)
    ├── ResourceExhausted               RATE_LIMITED (carries retry_after_s)
    ├── Unimplemented                   a capability that has not landed yet
    └── Unavailable                     DATABASE_UNAVAILABLE (carries retry_after_s): nothing
                                        was decided; retry with the same request_id

`stored` marks business outcomes that an idempotent replay must answer again identically; input
errors are not stored, so a corrected retry with the same request_id can still succeed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


@dataclass
class CoalitionError(Exception):
    reason: str
    message: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    violations: tuple[FieldViolation, ...] = ()

    stored = False

    def __post_init__(self) -> None:
        Exception.__init__(self, self.message)

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


class InvalidArgument(CoalitionError):
    @classmethod
    def on_field(
        cls, field_path: str, reason: str, message: str, **metadata: str
    ) -> InvalidArgument:
        return cls(
            reason,
            message,
            {"field": field_path, **metadata},
            (FieldViolation(field_path, message),),
        )


class NotFound(CoalitionError):
    pass


class AlreadyExists(CoalitionError):
    pass


class FailedPrecondition(CoalitionError):
    stored = True


class Unauthenticated(CoalitionError):
    pass


class PermissionDenied(CoalitionError):
    pass


class ResourceExhausted(CoalitionError):
    pass


class Unimplemented(CoalitionError):
    pass


class Unavailable(CoalitionError):
    """A dependency (the database) is out of reach. Never stored: the request may or may not
    have been applied (a lost commit), and a replay with the same request_id tells which."""


def require(condition: bool, field_path: str, reason: str, message: str) -> None:
    """Raise InvalidArgument on field_path unless condition holds (input validation helper)."""
    if not condition:
        raise InvalidArgument.on_field(field_path, reason, message)


ECHO_CHARS_MAX = 64
"""Most characters of a client's own input an error message repeats back."""
ECHOED_VALUES_MAX = 5
"""Most of a client's values (unknown paths, say) an error message lists."""


def echo(values: list[str]) -> str:
    """Client input quoted back in an error message, bounded: a few values, each cut short, so
    hostile input cannot make the error itself too large to deliver (gRPC trailers are capped
    at 16 KiB)."""
    shown = [v if len(v) <= ECHO_CHARS_MAX else v[:ECHO_CHARS_MAX] + "…" for v in values]
    more = len(values) - ECHOED_VALUES_MAX
    return ", ".join(shown[:ECHOED_VALUES_MAX]) + (f" and {more} more" if more > 0 else "")
