"""API keys: generated with 256 bits of entropy, shown once, stored only as a hash.

A SHA-256 digest is the right store for a random 256-bit secret: unlike a password it cannot be
guessed, so a slow hash would buy nothing but latency on every call.
"""

from __future__ import annotations

import enum
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

API_KEY_PREFIX = "coal_"
API_KEY_SECRET_BYTES = 32
API_KEY_DISPLAY_PREFIX_CHARS = 12
API_KEY_CHARS_MAX = 128
REQUEST_ID_CHARS_MAX = 64


class Role(enum.StrEnum):
    OPERATOR = "OPERATOR"
    PARTNER = "PARTNER"


@dataclass(frozen=True)
class Caller:
    """Who a request acts as. The operator has no partner id."""

    role: Role
    partner_id: str | None = None
    partner_type: str | None = None

    @property
    def is_operator(self) -> bool:
        return self.role is Role.OPERATOR

    @property
    def idempotency_scope(self) -> str:
        return f"partner:{self.partner_id}" if self.partner_id else "operator"


OPERATOR = Caller(Role.OPERATOR)


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(API_KEY_SECRET_BYTES)


def hash_api_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def display_prefix(secret: str) -> str:
    return secret[:API_KEY_DISPLAY_PREFIX_CHARS]


@dataclass(frozen=True)
class ApiKey:
    id: str
    partner_id: str | None
    prefix: str
    display_name: str
    create_time: datetime
    revoke_time: datetime | None = None

    @property
    def name(self) -> str:
        owner = f"partners/{self.partner_id}" if self.partner_id else "operator"
        return f"{owner}/apiKeys/{self.id}"
