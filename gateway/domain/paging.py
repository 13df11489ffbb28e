"""Opaque page tokens and bounded page sizes for every List RPC."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime
from typing import Any

from gateway.domain.errors import InvalidArgument

PAGE_SIZE_DEFAULT = 50
PAGE_SIZE_MAX = 100
PAGE_TOKEN_CHARS_MAX = 512


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument.on_field("page_size", "INVALID_PAGE_SIZE", "must not be negative")
    return min(requested or PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX)


def encode_token(position: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(position, separators=(",", ":")).encode()).decode()


def invalid_token() -> InvalidArgument:
    return InvalidArgument.on_field(
        "page_token", "INVALID_PAGE_TOKEN", "not a page token from a previous response"
    )


def decode_token(token: str, keys: tuple[str, ...]) -> dict[str, Any] | None:
    """The position a token points after, or None for the first page."""
    if not token:
        return None
    bad = invalid_token()
    if len(token) > PAGE_TOKEN_CHARS_MAX:
        raise bad
    try:
        position = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise bad from None
    if not isinstance(position, dict) or set(position) != set(keys):
        raise bad
    if not all(map(_plain, position.values())):
        raise bad
    return position


def _plain(value: object) -> bool:
    """A value a token of ours can hold: an int64, or printable text (no NUL, no control)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -(2**63) <= value < 2**63
    return isinstance(value, str) and value.isprintable()


def time_of(position: dict[str, Any], key: str) -> datetime:
    """An aware time a token carries, or INVALID_PAGE_TOKEN."""
    try:
        when = datetime.fromisoformat(str(position[key]))
    except (ValueError, OverflowError):
        raise invalid_token() from None
    if when.tzinfo is None:
        raise invalid_token()
    try:
        return when.astimezone(UTC)
    except OverflowError:  # "0001-01-01T00:00:00+05:00" is before the first UTC instant
        raise invalid_token() from None
