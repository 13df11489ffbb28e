"""Tiers: a ladder climbed by qualifying points, kept with a yearly review.

Rules members can trust::

    qualifying points   base purchase points (BASE and CATEGORY components) net of reversals;
                        bonuses, actions, conversions and donations never count
    window              the rolling 12 months ending now: [now - 12 months, now], so the earn
                        that brought an upgrade still counts at the review a year later
    upgrade             the moment the window's points reach a higher threshold, by an earn;
                        the new status then holds at least until its review, 12 months later
    review              at the member's review time, with the window ending at that time:
                        enough points keeps the tier (or lifts it); too few moves down ONE tier
                        (a soft landing, never Gold straight to Blue); the base tier has no review
    reversals           lower the window's points but never the tier: only a review does that

Everything here is a pure function of (ladder, history, time), so replaying a member's history
(`replay`) gives the tier the live system reached step by step.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation

TIER_WINDOW_MONTHS = 12
"""Qualifying points count for this many months."""
TIER_STATUS_MONTHS = 12
"""An upgrade or a passed review holds the tier for this many months, until the next review."""
TIERS_MAX = 10
TIER_MULTIPLIER_MAX = Decimal(10)
TIER_THRESHOLD_POINTS_MAX = 10**12
_TIER_CODE = re.compile(r"^[A-Z][A-Z0-9_]{0,31}$")


class LadderError(ValueError):
    """A tier ladder that cannot be used (raised while loading configuration)."""


@dataclass(frozen=True)
class Tier:
    code: str
    """UPPER_SNAKE, as shown in the API ("GOLD")."""
    display_name: str
    threshold_points: int
    """Qualifying points in the window needed to reach the tier."""
    multiplier: Decimal
    """Base purchase points are multiplied by this (1.5 = a 50% tier bonus)."""


@dataclass(frozen=True)
class Ladder:
    """Tiers from the base (threshold 0) upwards."""

    tiers: tuple[Tier, ...]

    def __post_init__(self) -> None:
        if not 1 <= len(self.tiers) <= TIERS_MAX:
            raise LadderError(f"a ladder has 1 to {TIERS_MAX} tiers")
        if self.tiers[0].threshold_points != 0:
            raise LadderError("the first tier is the base tier: threshold 0")
        for tier in self.tiers:
            if not _TIER_CODE.fullmatch(tier.code):
                raise LadderError(f"tier code {tier.code!r}: UPPER_SNAKE, at most 32 characters")
            if not (tier.multiplier.is_finite() and 1 <= tier.multiplier <= TIER_MULTIPLIER_MAX):
                raise LadderError(f"tier {tier.code}: multiplier between 1 and 10")
            if not 0 <= tier.threshold_points <= TIER_THRESHOLD_POINTS_MAX:
                raise LadderError(f"tier {tier.code}: threshold out of range")
        for lower, upper in zip(self.tiers, self.tiers[1:], strict=False):
            if upper.threshold_points <= lower.threshold_points:
                raise LadderError("thresholds must increase up the ladder")
        if len({t.code for t in self.tiers}) != len(self.tiers):
            raise LadderError("tier codes must be unique")

    @property
    def base(self) -> Tier:
        return self.tiers[0]

    def get(self, code: str) -> Tier:
        """The tier with this code; a code the ladder no longer has counts as the base tier."""
        return next((t for t in self.tiers if t.code == code), self.base)

    def rank(self, tier: Tier) -> int:
        return self.tiers.index(tier)

    def earned(self, qualifying_points: int) -> Tier:
        """The highest tier whose threshold the points reach."""
        reached = [t for t in self.tiers if t.threshold_points <= qualifying_points]
        return reached[-1] if reached else self.base

    def above(self, tier: Tier) -> Tier | None:
        rank = self.rank(tier)
        return self.tiers[rank + 1] if rank + 1 < len(self.tiers) else None

    def below(self, tier: Tier) -> Tier:
        return self.tiers[max(self.rank(tier) - 1, 0)]


DEFAULT_LADDER = Ladder(
    (
        Tier("BLUE", "Blue", 0, Decimal(1)),
        Tier("SILVER", "Silver", 5_000, Decimal("1.25")),
        Tier("GOLD", "Gold", 15_000, Decimal("1.5")),
        Tier("PLATINUM", "Platinum", 50_000, Decimal(2)),
    )
)


def ladder_from_config(entries: Iterable[Mapping[str, object]]) -> Ladder:
    """A ladder from configuration entries {code, name, threshold_points, multiplier}."""
    tiers = []
    for i, entry in enumerate(entries):
        try:
            code = str(entry["code"])
            threshold = entry.get("threshold_points", 0)
            if not isinstance(threshold, int) or isinstance(threshold, bool):
                raise LadderError(f"tier {i}: threshold_points must be an integer")
            multiplier = Decimal(str(entry.get("multiplier", "1")))
        except KeyError as missing:
            raise LadderError(f"tier {i}: missing {missing}") from None
        except InvalidOperation:
            raise LadderError(f"tier {i}: multiplier must be a decimal number") from None
        tiers.append(Tier(code, str(entry.get("name", code.title())), threshold, multiplier))
    return Ladder(tuple(tiers))


# -- time ------------------------------------------------------------------------------------


def add_months(when: datetime, months: int) -> datetime:
    """Calendar months later (or earlier); the 31st becomes the month's last day if needed."""
    index = when.month - 1 + months
    year, month = when.year + index // 12, index % 12 + 1
    day = min(when.day, calendar.monthrange(year, month)[1])
    return when.replace(year=year, month=month, day=day)


def window_start(at: datetime) -> datetime:
    """Qualifying points count if earned at or after this instant (and at or before `at`)."""
    return add_months(at, -TIER_WINDOW_MONTHS)


# -- decisions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TierStatus:
    """Where a member stands, as GetBalance and GetMember show it."""

    tier: Tier
    qualifying_points: int
    next_tier: Tier | None
    points_to_next_tier: int
    review_time: datetime | None


def status(
    ladder: Ladder, tier_code: str, qualifying_points: int, review_time: datetime | None
) -> TierStatus:
    tier = ladder.get(tier_code)
    upper = ladder.above(tier)
    to_next = max(upper.threshold_points - qualifying_points, 0) if upper else 0
    return TierStatus(tier, qualifying_points, upper, to_next, review_time)


def upgrade(ladder: Ladder, current: Tier, qualifying_points: int) -> Tier | None:
    """The higher tier an earn just reached, or None."""
    earned = ladder.earned(qualifying_points)
    return earned if ladder.rank(earned) > ladder.rank(current) else None


def review(ladder: Ladder, current: Tier, qualifying_points: int) -> Tier:
    """The tier after a yearly review: kept (or raised) if earned, else one step down."""
    earned = ladder.earned(qualifying_points)
    if ladder.rank(earned) >= ladder.rank(current):
        return earned
    return ladder.below(current)


def review_after(ladder: Ladder, tier: Tier, at: datetime) -> datetime | None:
    """When a tier reached (or kept) at `at` is reviewed next; the base tier never is."""
    return None if tier == ladder.base else add_months(at, TIER_STATUS_MONTHS)


@dataclass(frozen=True)
class Qualifying:
    """One change of qualifying points: +base points of an earn, -their share of a reversal."""

    points: int
    earn_time: datetime
    """The earn's time, also for its reversals: a reversal nets the earn it reverses."""
    record_time: datetime
    """When the change was recorded (the earn, or the reversal)."""
    seq: int = 0
    """Recording order among changes with the same record_time (the stored row's id)."""


@dataclass(frozen=True)
class TierChange:
    at: datetime
    previous: Tier
    tier: Tier
    qualifying_points: int
    reason: str
    """"QUALIFIED" (an earn crossed a threshold) or "REVIEW"."""


def window_points(history: Iterable[Qualifying], at: datetime) -> int:
    """Qualifying points in the window ending at `at`, as recorded by then."""
    start = window_start(at)
    return sum(q.points for q in history if start <= q.earn_time <= at and q.record_time <= at)


def replay(
    ladder: Ladder, history: Iterable[Qualifying], until: datetime
) -> tuple[Tier, datetime | None, list[TierChange]]:
    """The tier, next review and changes that `history` produces up to `until`.

    Upgrades are checked when an earn is recorded; reviews happen at their review times
    (before an earn recorded at the same instant). This is the specification the live system
    follows step by step, and what tests compare it with.
    """
    events = sorted(history, key=lambda q: (q.record_time, q.seq))
    tier, review_time, changes = ladder.base, None, []
    seen: list[Qualifying] = []

    def reviews_until(moment: datetime) -> None:
        nonlocal tier, review_time
        while review_time is not None and review_time <= moment:
            points = window_points(seen, review_time)
            after = review(ladder, tier, points)
            if after != tier:
                changes.append(TierChange(review_time, tier, after, points, "REVIEW"))
            tier, review_time = after, review_after(ladder, after, review_time)

    for event in events:
        if event.record_time > until:
            break
        reviews_until(event.record_time)
        seen.append(event)
        if event.points > 0:
            points = window_points(seen, event.record_time)
            reached = upgrade(ladder, tier, points)
            if reached is not None:
                changes.append(TierChange(event.record_time, tier, reached, points, "QUALIFIED"))
                tier, review_time = reached, review_after(ladder, reached, event.record_time)
    reviews_until(until)
    return tier, review_time, changes
