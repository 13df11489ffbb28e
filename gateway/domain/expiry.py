"""Points expiry: which points expire when, and which points a redemption spends.

Every credit of spendable points is a *lot* (an earn once it is available, on the earn's own
transaction): it remembers how many of its points are still unspent and, under the FIXED policy,
when they expire. Invariant, per member::

    sum(unspent points of their lots) == max(available, 0)

Debits spend lots first-in-first-out (oldest lot first) and record what they drew, so that a
refund (a voided hold, a reversed redemption, a refunded voucher) puts the points back into the
lots they came from, with their original expiry: a refund never extends the life of points.
Points returned to a lot that has expired meanwhile expire at the next run.

A member who owes points after a clawback (available < 0) has no unspent lots; new credits
repay the debt first and only the rest becomes a lot (see `lot_change`).

Policies:
    NONE        points never expire
    FIXED       each lot expires at the end of the UTC day, N months after it became available
    INACTIVITY  the lots credited under this policy ("lapsing" lots) expire together at the end
                of the UTC day N months after the member's last earn or burn

A change of policy applies to points earned from then on: validity already promised to a member
is never shortened.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, time, timedelta

from gateway.domain.tiers import add_months

EXPIRY_MONTHS_MAX = 120
REMINDER_DAYS_DEFAULT = 30
REMINDER_DAYS_MAX = 365
MONTH_END_CLAMP_DAYS_MAX = 3
"""add_months moves the 31st to the 28th at worst: the slack of a month-based cutoff."""


class ExpiryKind(enum.StrEnum):
    NONE = "none"
    FIXED = "fixed"
    INACTIVITY = "inactivity"


class ExpiryPolicyError(ValueError):
    pass


@dataclass(frozen=True)
class ExpiryPolicy:
    kind: ExpiryKind = ExpiryKind.NONE
    months: int = 0
    reminder_days: int = REMINDER_DAYS_DEFAULT
    """A "points expiring" reminder goes out this many days before the expiry (0: none)."""

    def __post_init__(self) -> None:
        if self.kind is not ExpiryKind.NONE and not 1 <= self.months <= EXPIRY_MONTHS_MAX:
            raise ExpiryPolicyError(f"expiry needs between 1 and {EXPIRY_MONTHS_MAX} months")
        if not 0 <= self.reminder_days <= REMINDER_DAYS_MAX:
            raise ExpiryPolicyError(f"reminders between 0 and {REMINDER_DAYS_MAX} days before")

    def lot_expire_time(self, available_time: datetime) -> datetime | None:
        """When a lot that became available at `available_time` expires (FIXED only)."""
        if self.kind is not ExpiryKind.FIXED:
            return None
        return end_of_day(add_months(available_time, self.months))

    def inactivity_expire_time(self, last_activity: datetime) -> datetime | None:
        if self.kind is not ExpiryKind.INACTIVITY:
            return None
        return end_of_day(add_months(last_activity, self.months))

    def inactive_since_max(self, now: datetime) -> datetime:
        """A loose bound for a database scan: every member whose points expire by `now` was last
        active at or before this instant (a few more may be, and are filtered exactly)."""
        return add_months(now, -self.months) + timedelta(days=MONTH_END_CLAMP_DAYS_MAX)

    def remind_from(self, expire_time: datetime) -> datetime:
        return expire_time - timedelta(days=self.reminder_days)


def parse_policy(raw: str, reminder_days: int = REMINDER_DAYS_DEFAULT) -> ExpiryPolicy:
    """ "none", "fixed:24" (months per lot) or "inactivity:18" (months without activity)."""
    kind_text, _, months_text = raw.strip().lower().partition(":")
    try:
        kind = ExpiryKind(kind_text or "none")
    except ValueError:
        raise ExpiryPolicyError(
            f"unknown expiry policy {raw!r}: expected none, fixed:MONTHS or inactivity:MONTHS"
        ) from None
    if kind is ExpiryKind.NONE:
        if months_text:
            raise ExpiryPolicyError("the none policy takes no months")
        return ExpiryPolicy(reminder_days=reminder_days)
    if not months_text.isascii() or not months_text.isdigit():  # "²" is a digit to isdigit
        raise ExpiryPolicyError(f"{kind.value} expiry needs a number of months, e.g. {kind}:24")
    return ExpiryPolicy(kind, int(months_text), reminder_days)


def end_of_day(when: datetime) -> datetime:
    """Points expire at the end of a UTC day: the next midnight."""
    return datetime.combine(when.date() + timedelta(days=1), time(), tzinfo=when.tzinfo)


# -- lots ------------------------------------------------------------------------------------


def lot_change(available_before: int, available_after: int) -> int:
    """How much the member's unspent lots change when available moves between these values.

    Lots hold exactly the positive part of the available balance: a credit first repays what
    the member owes, and a debit below zero (a clawback) takes only what the lots still hold.
    """
    return max(available_after, 0) - max(available_before, 0)


@dataclass(frozen=True)
class Lot:
    seq: int
    """The transaction that credited the points; lots are spent in this order."""
    unspent: int


def spend_fifo(lots: Iterable[Lot], points: int) -> list[tuple[int, int]]:
    """Which lots pay `points`, oldest first: [(lot seq, points drawn)].

    The caller passes the member's unspent lots in seq order and guarantees they cover the
    points (the lot invariant makes the available balance the bound).
    """
    drawn: list[tuple[int, int]] = []
    left = points
    for lot in lots:
        if left == 0:
            break
        take = min(lot.unspent, left)
        if take:
            drawn.append((lot.seq, take))
            left -= take
    assert left == 0, f"lots do not cover {points} points"
    return drawn


def refund_lifo(draws: Iterable[tuple[int, int]], points: int) -> list[tuple[int, int]]:
    """Which lots get `points` back: the lots a debit drew from, last drawn first.

    `draws` are (lot seq, points still drawn) in the order they were drawn; undoing the newest
    draw first returns points to the lots that live longest.
    """
    returned: list[tuple[int, int]] = []
    left = points
    for seq, outstanding in reversed(list(draws)):
        if left == 0:
            break
        give = min(outstanding, left)
        if give:
            returned.append((seq, give))
            left -= give
    assert left == 0, f"the debit drew fewer than the {points} points returned"
    return returned


@dataclass(frozen=True)
class Expiring:
    """The member's next expiry: how many points, and when."""

    points: int
    time: datetime
