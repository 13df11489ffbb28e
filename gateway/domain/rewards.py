"""The rewards catalog and its vouchers: pure rules.

A voucher's lifecycle::

    ISSUED --ConsumeVoucher--> CONSUMED
           --expire_time passes--> EXPIRED (unusable) --next sweep--> REFUNDED

Refund policy: a voucher nobody used before its expire_time is refunded in full: its points go
back to the member (a REVERSAL of the REWARD transaction, into the lots they came from) and
its unit goes back to the reward's stock. A consumed voucher is never refunded.

Voucher codes are 15 random characters and a check character from the Crockford base-32
alphabet (digits and capitals without I, L, O, U, so nothing reads as something else): 75 bits,
unguessable, and a mistyped character is caught before any lookup. They are shown in groups of
four (ABCD-EFGH-JKMN-PQR7); input is read case-insensitively, without the dashes or spaces,
and O, I and L are read as 0, 1 and 1, as Crockford specifies.
"""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from stdnum import luhn
from stdnum.exceptions import ValidationError

from gateway.domain.errors import InvalidArgument, require
from gateway.domain.ledger import POINTS_PER_TRANSACTION_MAX

VOUCHER_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
VOUCHER_RANDOM_CHARS = 15
VOUCHER_CODE_CHARS = VOUCHER_RANDOM_CHARS + 1
VOUCHER_GROUP_CHARS = 4
VOUCHER_INPUT_CHARS_MAX = 64
"""Longer input is not a voucher code, whatever its dashes."""
_CROCKFORD_READS = str.maketrans({"O": "0", "I": "1", "L": "1", "-": None, " ": None})

DISPLAY_NAME_CHARS_MAX = 128
DESCRIPTION_CHARS_MAX = 2_000
STOCK_MAX = 10_000_000
VOUCHER_VALIDITY_S_MAX = 3 * 366 * 24 * 3600
"""About three years; a longer promise is a liability nobody means to carry."""


class RewardKind(enum.StrEnum):
    FREE_NIGHT = "FREE_NIGHT"
    RIDE_CREDIT = "RIDE_CREDIT"
    UPGRADE = "UPGRADE"
    GIFT = "GIFT"


class VoucherState(enum.StrEnum):
    ISSUED = "ISSUED"
    CONSUMED = "CONSUMED"
    EXPIRED = "EXPIRED"
    REFUNDED = "REFUNDED"


@dataclass(frozen=True)
class Reward:
    id: str
    partner_id: str
    display_name: str
    description: str
    kind: RewardKind
    points_price: int
    stock: int
    """0: unlimited."""
    issued: int
    refunded: int
    start_time: datetime | None
    end_time: datetime | None
    voucher_validity: timedelta
    create_time: datetime

    @property
    def name(self) -> str:
        return f"partners/{self.partner_id}/rewards/{self.id}"

    @property
    def available_stock(self) -> int:
        return max(self.stock - self.issued + self.refunded, 0) if self.stock else 0

    def in_stock(self) -> bool:
        return self.stock == 0 or self.available_stock > 0

    def on_offer(self, now: datetime) -> bool:
        started = self.start_time is None or self.start_time <= now
        return started and (self.end_time is None or now < self.end_time)


@dataclass(frozen=True)
class RewardDraft:
    """What a partner asks to publish, validated."""

    display_name: str
    description: str
    kind: RewardKind
    points_price: int
    stock: int
    start_time: datetime | None
    end_time: datetime | None
    voucher_validity: timedelta


def check_draft(draft: RewardDraft, prefix: str = "reward") -> RewardDraft:
    require(
        0 < len(draft.display_name.strip()) <= DISPLAY_NAME_CHARS_MAX,
        f"{prefix}.display_name",
        "MISSING_DISPLAY_NAME",
        f"1 to {DISPLAY_NAME_CHARS_MAX} characters",
    )
    require(
        len(draft.description) <= DESCRIPTION_CHARS_MAX,
        f"{prefix}.description",
        "FIELD_TOO_LONG",
        f"at most {DESCRIPTION_CHARS_MAX} characters",
    )
    require(
        0 < draft.points_price <= POINTS_PER_TRANSACTION_MAX,
        f"{prefix}.points_price",
        "INVALID_POINTS_PRICE",
        f"between 1 and {POINTS_PER_TRANSACTION_MAX:,} points",
    )
    require(
        0 <= draft.stock <= STOCK_MAX,
        f"{prefix}.stock",
        "INVALID_STOCK",
        f"between 0 (unlimited) and {STOCK_MAX:,} units",
    )
    if draft.start_time is not None and draft.end_time is not None:
        require(
            draft.start_time < draft.end_time,
            f"{prefix}.end_time",
            "INVALID_TIME_RANGE",
            "end_time must come after start_time",
        )
    require(
        timedelta(0) < draft.voucher_validity <= timedelta(seconds=VOUCHER_VALIDITY_S_MAX),
        f"{prefix}.voucher_validity",
        "INVALID_VOUCHER_VALIDITY",
        f"between 1 second and {VOUCHER_VALIDITY_S_MAX // 86_400} days",
    )
    return draft


@dataclass(frozen=True)
class Voucher:
    code: str
    """Canonical: 16 characters, no dashes."""
    reward_id: str
    partner_id: str
    member_id: str
    state: VoucherState
    issue_time: datetime
    expire_time: datetime
    consume_time: datetime | None
    transaction_id: str
    points: int
    refund_transaction_id: str | None = None

    def state_at(self, now: datetime) -> VoucherState:
        """An issued voucher past its expire_time is expired before any sweep records it."""
        if self.state is VoucherState.ISSUED and self.expire_time <= now:
            return VoucherState.EXPIRED
        return self.state

    def usable(self, now: datetime) -> bool:
        return self.state_at(now) is VoucherState.ISSUED


# -- codes -----------------------------------------------------------------------------------


def new_voucher_code() -> str:
    body = "".join(secrets.choice(VOUCHER_ALPHABET) for _ in range(VOUCHER_RANDOM_CHARS))
    return body + luhn.calc_check_digit(body, alphabet=VOUCHER_ALPHABET)


def display_code(code: str) -> str:
    step = VOUCHER_GROUP_CHARS
    return "-".join(code[i : i + step] for i in range(0, len(code), step))


def parse_voucher_code(raw: str, field: str = "code") -> str:
    """The canonical code, or INVALID_VOUCHER_CODE if it cannot be one (check character
    included), so typos never reach the database."""
    if len(raw) > VOUCHER_INPUT_CHARS_MAX:
        raise InvalidArgument.on_field(field, "INVALID_VOUCHER_CODE", "not a voucher code")
    code = raw.strip().upper().translate(_CROCKFORD_READS)
    if len(code) != VOUCHER_CODE_CHARS or any(c not in VOUCHER_ALPHABET for c in code):
        raise InvalidArgument.on_field(
            field,
            "INVALID_VOUCHER_CODE",
            f"{VOUCHER_CODE_CHARS} characters of 0-9 and A-Z without I, L, O, U",
        )
    try:
        luhn.validate(code, alphabet=VOUCHER_ALPHABET)
    except ValidationError:
        raise InvalidArgument.on_field(
            field, "INVALID_VOUCHER_CODE", "the check character does not match: a typo?"
        ) from None
    return code
