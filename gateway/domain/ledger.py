"""The points ledger: double entry, pure rules.

Every movement is one transaction of postings that sum to zero per asset. Accounts::

    member:{id}:available   spendable points (negative only after a clawback)
    member:{id}:pending     earned, not yet vested
    member:{id}:held        reserved by open authorizations
    partner:{id}:issued     source of the points a partner issues (goes negative)
    partner:{id}:redeemed   sink of the points a partner accepts
    partner:{id}:expired    breakage: the partner's points that expired unspent
    partner:{id}:converted  points members converted into the partner's program (airline miles)
    partner:{id}:matched    source of the points a sponsor adds to donations (goes negative)
    charity:{id}:donated    points members (and their sponsors) gave the charity
    coalition:adjustments   points the coalition itself absorbs (a clawback of an earn whose
                            points a pledge had already given to a charity)

Converted program units are their own asset (the program's unit, "MILES"), booked between
program:{airline}:issued and program:{airline}:member:{id} in the same transaction.

Lifecycle (the state of each transaction kind)::

    EARN           PENDING --vest_time--> POSTED           (or VOIDED if cancelled first)
                   POSTED
    AUTHORIZATION  PENDING --capture (all or part)--> POSTED, the rest released
                           --void--> VOIDED
                           --hold expires--> EXPIRED, all released
    REDEEM, REWARD, CONVERSION, DONATION, CAPTURE, VOID, REVERSAL, EXPIRY: POSTED at once

A reversal refunds a redemption (or capture) or claws back an earn, in full or in part; the sum
of a transaction's reversals never exceeds it. A clawback of points already spent takes the
member's available balance below zero: the points are owed, and redemptions are refused until
new earnings cover them. Nothing is updated in place: corrections are new transactions.
"""

from __future__ import annotations

import enum
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from gateway.domain.errors import FailedPrecondition, InvalidArgument

POINTS = "PTS"
"""The coalition points asset; partner currencies (airline miles) are other assets."""
POINTS_PER_TRANSACTION_MAX = 1_000_000_000
"""No single movement is larger; bigger numbers are typos or attacks, not loyalty."""
PURCHASE_AMOUNT_MINOR_MAX = 10**13
HOLD_DURATION_S_DEFAULT = 15 * 60
HOLD_DURATION_S_MAX = 30 * 24 * 3600
VEST_DELAY_S_MAX = 400 * 24 * 3600
"""A vest time more than about 13 months ahead is refused."""
OCCUR_TIME_SKEW_S_MAX = 5 * 60
"""A purchase reported this far in the future is tolerated as clock skew, and no further."""
OCCUR_TIME_AGE_S_MAX = 400 * 24 * 3600
"""A purchase older than about 13 months is too old to earn (or to evaluate campaigns for)."""
PARTNER_REFERENCE_CHARS_MAX = 128


class TxnType(enum.StrEnum):
    EARN = "EARN"
    REDEEM = "REDEEM"
    AUTHORIZATION = "AUTHORIZATION"
    CAPTURE = "CAPTURE"
    VOID = "VOID"
    REVERSAL = "REVERSAL"
    EXPIRY = "EXPIRY"
    REWARD = "REWARD"
    CONVERSION = "CONVERSION"
    DONATION = "DONATION"


class TxnState(enum.StrEnum):
    PENDING = "PENDING"
    POSTED = "POSTED"
    VOIDED = "VOIDED"
    EXPIRED = "EXPIRED"
    PARKED = "PARKED"
    """Not a ledger state: an agency earn waiting for its airline number to be linked."""


def available(member_id: str) -> str:
    return f"member:{member_id}:available"


def pending(member_id: str) -> str:
    return f"member:{member_id}:pending"


def held(member_id: str) -> str:
    return f"member:{member_id}:held"


def issued(partner_id: str) -> str:
    return f"partner:{partner_id}:issued"


def redeemed(partner_id: str) -> str:
    return f"partner:{partner_id}:redeemed"


def expired(partner_id: str) -> str:
    """Breakage: points of this partner's issue that expired unspent."""
    return f"partner:{partner_id}:expired"


def converted(partner_id: str) -> str:
    """Points members converted into this partner's program."""
    return f"partner:{partner_id}:converted"


def matched(partner_id: str) -> str:
    """Source of the points a sponsor adds to members' donations: goes negative."""
    return f"partner:{partner_id}:matched"


def donated(charity_id: str) -> str:
    """Points given to a charity, by members and by the sponsors matching them."""
    return f"charity:{charity_id}:donated"


ADJUSTMENTS = "coalition:adjustments"
"""The coalition's own account: what it absorbs so that nobody pays twice."""


def program_issued(partner_id: str) -> str:
    """Source of the program units (miles) conversions credit: goes negative."""
    return f"program:{partner_id}:issued"


def program_member(partner_id: str, member_id: str) -> str:
    """Program units a member received by conversion, owed by the airline."""
    return f"program:{partner_id}:member:{member_id}"


@dataclass(frozen=True)
class Posting:
    account: str
    amount: int
    asset: str = POINTS


def move(source: str, target: str, points: int) -> tuple[Posting, Posting]:
    """points leave source and arrive in target."""
    assert points > 0, "a movement moves something"
    return Posting(source, -points), Posting(target, points)


def unbalanced_assets(postings: Iterable[Posting]) -> list[str]:
    totals: dict[str, int] = defaultdict(int)
    for posting in postings:
        totals[posting.asset] += posting.amount
    return sorted(asset for asset, total in totals.items() if total)


@dataclass(frozen=True)
class Balance:
    available: int = 0
    pending: int = 0
    held: int = 0


# -- input rules -----------------------------------------------------------------------------


def check_points(points: int, field: str = "points", allow_zero: bool = False) -> int:
    low = 0 if allow_zero else 1
    if not low <= points <= POINTS_PER_TRANSACTION_MAX:
        raise InvalidArgument.on_field(
            field,
            "INVALID_POINTS",
            f"between {low} and {POINTS_PER_TRANSACTION_MAX:,} points",
        )
    return points


def check_reference(reference: str, field: str = "partner_reference") -> str:
    if len(reference) > PARTNER_REFERENCE_CHARS_MAX:
        raise InvalidArgument.on_field(
            field, "FIELD_TOO_LONG", f"at most {PARTNER_REFERENCE_CHARS_MAX} characters"
        )
    if not reference.isprintable():
        raise InvalidArgument.on_field(
            field, "INVALID_CHARACTERS", "printable characters only (no control characters)"
        )
    return reference


def check_purchase(amount_minor: int) -> int:
    if not 0 < amount_minor <= PURCHASE_AMOUNT_MINOR_MAX:
        raise InvalidArgument.on_field(
            "purchase.amount_minor", "INVALID_AMOUNT", "a positive amount in minor units"
        )
    return amount_minor


def hold_expiry(now: datetime, seconds: int | None) -> datetime:
    duration = HOLD_DURATION_S_DEFAULT if seconds is None else seconds
    if not 0 < duration <= HOLD_DURATION_S_MAX:
        raise InvalidArgument.on_field(
            "hold_duration",
            "INVALID_HOLD_DURATION",
            f"between 1 second and {HOLD_DURATION_S_MAX // 86_400} days",
        )
    return now + timedelta(seconds=duration)


def check_occur_time(
    now: datetime, occur_time: datetime | None, future_ok: bool = False
) -> datetime:
    """When the purchase happened (now if unset); quotes may ask about the future."""
    if occur_time is None:
        return now
    if not future_ok and occur_time - now > timedelta(seconds=OCCUR_TIME_SKEW_S_MAX):
        raise InvalidArgument.on_field(
            "occur_time", "INVALID_OCCUR_TIME", "a purchase cannot happen in the future"
        )
    if abs(now - occur_time) > timedelta(seconds=OCCUR_TIME_AGE_S_MAX):
        raise InvalidArgument.on_field(
            "occur_time", "INVALID_OCCUR_TIME", "within about 13 months of now"
        )
    return occur_time


def check_vest_time(now: datetime, vest_time: datetime | None) -> datetime | None:
    """None (or a time already past) means the points are available at once."""
    if vest_time is None or vest_time <= now:
        return None
    if vest_time - now > timedelta(seconds=VEST_DELAY_S_MAX):
        raise InvalidArgument.on_field(
            "vest_time", "INVALID_VEST_TIME", "at most about 13 months ahead"
        )
    return vest_time


# -- lifecycle rules -------------------------------------------------------------------------


def insufficient(balance: Balance, points: int) -> FailedPrecondition:
    if balance.available < 0:
        return FailedPrecondition(
            "NEGATIVE_BALANCE",
            "the member owes points after a clawback; redemptions resume once earnings cover it",
            {"available_points": str(balance.available)},
        )
    return FailedPrecondition(
        "INSUFFICIENT_POINTS",
        f"{points} points requested, {balance.available} available",
        {"available_points": str(balance.available), "requested_points": str(points)},
    )


def reversible_points(txn_type: TxnType, state: TxnState, points: int, reversed_: int) -> int:
    """How many points of a transaction can still be reversed (0 if none)."""
    if txn_type not in (TxnType.EARN, TxnType.REDEEM, TxnType.CAPTURE, TxnType.CONVERSION):
        return 0
    if state is not TxnState.POSTED:
        return 0
    return abs(points) - reversed_


@dataclass(frozen=True)
class Transaction:
    """A stored ledger transaction as the member's history shows it."""

    id: str
    member_id: str
    partner_id: str
    type: TxnType
    state: TxnState
    points: int
    open_points: int
    reversed_points: int
    related_id: str | None
    partner_reference: str
    breakdown: tuple[dict[str, object], ...]
    due_time: datetime | None
    occur_time: datetime | None
    balance_after: Balance
    create_time: datetime
    channel_partner_id: str | None = None

    @property
    def name(self) -> str:
        return f"members/{self.member_id}/transactions/{self.id}"
