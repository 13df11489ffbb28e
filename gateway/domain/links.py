"""Linked accounts, the one-time codes that prove a member agrees, and parked agency earns.

A link ties an external id to one member: a partner's own account id for them (a rider id) or
a number in an airline's program. Partners then name the member by that id. A link needs proof:
the member's loyalty number plus a one-time code sent to the member, or an operator call.

A travel agency may earn for an airline number nobody has linked yet. The earn is parked with
its points and credited, as an EARN of the airline, to the member who links the number before
the claim deadline; later, it stays parked and shows in the overdue report.
"""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from gateway.domain.errors import FailedPrecondition

LINK_CODE_DIGITS = 6
LINK_CODE_TTL_S = 10 * 60
LINK_CODE_ATTEMPTS_MAX = 5
"""Tries of a code: 5 guesses in 10^6 is a 1-in-200,000 chance per code, and a member gets
at most LINK_CODES_PER_HOUR_MAX codes an hour for one account."""
LINK_CODES_PER_HOUR_MAX = 5
"""Codes one member may be sent per hour for one account: no mail bombing through us."""
LINK_CODES_PER_MEMBER_HOUR_MAX = 10
"""Codes one member may be sent per hour for all accounts together."""
LINKS_PER_MEMBER_MAX = 50
"""Live links of one member; more is not a loyalty member, it is an integration bug."""
PARKED_CLAIM_DAYS_DEFAULT = 90
PARKED_CLAIM_DAYS_MAX = 365
"""A claim must fall within about a year: backdated earns older than that are refused."""
PARKED_CLAIM_BATCH = 200
"""Parked earns credited per query while linking (a number rarely has more than a few)."""


class LinkKind(enum.StrEnum):
    ACCOUNT = "ACCOUNT"
    """A partner's own id for the member."""
    PROGRAM = "PROGRAM"
    """A number in an airline's loyalty program."""


class ParkedState(enum.StrEnum):
    PARKED = "PARKED"
    CLAIMED = "CLAIMED"
    CANCELLED = "CANCELLED"


@dataclass(frozen=True)
class LinkedAccount:
    id: str
    member_id: str
    partner_id: str
    kind: LinkKind
    external_id: str
    create_time: datetime
    unlink_time: datetime | None = None

    @property
    def name(self) -> str:
        return f"members/{self.member_id}/linkedAccounts/{self.id}"


@dataclass(frozen=True)
class ParkedEarn:
    id: str
    airline_id: str
    agency_id: str
    number: str
    points: int
    breakdown: tuple[dict[str, object], ...]
    partner_reference: str
    occur_time: datetime | None
    vest_time: datetime | None
    claim_deadline: datetime
    state: ParkedState
    create_time: datetime
    member_id: str | None = None
    claim_transaction_id: str | None = None

    @property
    def name(self) -> str:
        return f"parkedEarns/{self.id}"


def new_code() -> str:
    return f"{secrets.randbelow(10**LINK_CODE_DIGITS):0{LINK_CODE_DIGITS}d}"


def claim_deadline(now: datetime, claim_days: int) -> datetime:
    return now + timedelta(days=claim_days)


def check_claim_days(days: int) -> int:
    if not 1 <= days <= PARKED_CLAIM_DAYS_MAX:
        raise ValueError(f"the claim window is 1 to {PARKED_CLAIM_DAYS_MAX} days, not {days}")
    return days


def mask_email(address: str) -> str:
    """'ada@example.com' -> 'a***@example.com': enough for the member to recognise it."""
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@{domain}"


def code_refused(reason: str, message: str, attempts_left: int) -> FailedPrecondition:
    return FailedPrecondition(reason, message, {"attempts_left": str(max(attempts_left, 0))})
