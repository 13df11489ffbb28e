"""Earn rules and campaigns: how many points a purchase or an action earns, and why.

Evaluation order (deterministic; docs/earning.md explains it with worked examples)::

    1. minimum spend   a purchase below the partner's minimum (in its earn currency) earns 0
    2. base            amount, converted to the earn currency at the operator's rate, times the
                       partner's rate, or the category's own rate (CATEGORY instead of BASE)
    3. tier bonus      base x (tier multiplier - 1)
    4. cap             base + tier bonus is cut to the partner's per-transaction cap
    5. campaigns       in order of start time, then id; each adds base x (multiplier - 1)
                       plus its fixed bonus, cut to what is left of its member and total budgets

Every component is rounded on its own with the partner's rounding policy (DOWN by default: the
network never issues a fraction it did not promise), so the breakdown always sums to the total.
Qualifying points for tiers are the base (or category) points that survived the cap.

Multipliers add up rather than compound: a double-points campaign and a Gold tier bonus of 1.5
give base x (1 + 0.5 + 1), which members can check with a pencil.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal, InvalidOperation
from zoneinfo import ZoneInfo

from gateway.domain.errors import InvalidArgument, require
from gateway.domain.tiers import Tier

CATEGORY_CHARS_MAX = 64
CATEGORY_RATES_MAX = 50
CAMPAIGN_MULTIPLIER_MAX = Decimal(10)
CAMPAIGN_BONUS_POINTS_MAX = 1_000_000
CAMPAIGN_BUDGET_POINTS_MAX = 10**12
CAMPAIGN_CATEGORIES_MAX = 50
CAMPAIGN_NAME_CHARS_MAX = 200
EXCHANGE_RATE_MAX = Decimal(10**9)
EXCHANGE_RATE_DECIMALS_MAX = 10
_CATEGORY = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_ACTION = re.compile(r"^[A-Z][A-Z0-9_]*$")
ACTION_CODE_CHARS_MAX = 64


class Rounding(enum.StrEnum):
    DOWN = "DOWN"
    NEAREST = "NEAREST"
    UP = "UP"


_ROUNDING = {
    Rounding.DOWN: ROUND_FLOOR,
    Rounding.NEAREST: ROUND_HALF_UP,
    Rounding.UP: ROUND_CEILING,
}


def round_points(value: Decimal, rounding: Rounding) -> int:
    return int(value.to_integral_value(rounding=_ROUNDING[rounding]))


# -- parsing ---------------------------------------------------------------------------------


def plain(value: Decimal) -> Decimal:
    """Without trailing zeros, never in exponent form: "10.00" -> 10, not 1E+1."""
    value = value.normalize()
    exponent = value.as_tuple().exponent
    return value.quantize(Decimal(1)) if isinstance(exponent, int) and exponent > 0 else value


def parse_decimal(
    raw: str, field_path: str, reason: str, low: Decimal, high: Decimal, decimals: int
) -> Decimal:
    try:
        value = Decimal(raw.strip())
    except InvalidOperation:
        raise InvalidArgument.on_field(
            field_path, reason, 'a decimal number such as "2" or "1.5"'
        ) from None
    require(
        value.is_finite() and low <= value <= high,
        field_path,
        reason,
        f"between {low} and {high}",
    )
    exponent = value.normalize().as_tuple().exponent  # "1.50000" has 1 decimal, not 5
    require(
        isinstance(exponent, int) and -exponent <= decimals,
        field_path,
        reason,
        f"at most {decimals} decimals",
    )
    return plain(value) if value else Decimal(0)


def parse_category(raw: str, field_path: str) -> str:
    category = raw.strip().lower()
    require(
        0 < len(category) <= CATEGORY_CHARS_MAX and bool(_CATEGORY.fullmatch(category)),
        field_path,
        "INVALID_CATEGORY",
        f"1 to {CATEGORY_CHARS_MAX} characters of a-z, 0-9, '_', '.' and '-' (e.g. \"spa\")",
    )
    return category


def parse_purchase_category(raw: str) -> str:
    """A purchase's category; empty is allowed (no category)."""
    return parse_category(raw, "purchase.category") if raw.strip() else ""


def parse_action(raw: str, field_path: str = "action") -> str:
    require(
        0 < len(raw) <= ACTION_CODE_CHARS_MAX and bool(_ACTION.fullmatch(raw)),
        field_path,
        "INVALID_ACTION",
        f'UPPER_SNAKE, 1 to {ACTION_CODE_CHARS_MAX} characters ("REVIEW", "APP_INSTALL")',
    )
    return raw


# -- the partner's rules ---------------------------------------------------------------------


@dataclass(frozen=True)
class EarnRules:
    partner: str
    """"partners/{id}", the source of BASE and CATEGORY components."""
    currency: str
    currency_exponent: int
    base_rate: Decimal
    """Points per major unit of `currency`."""
    category_rates: Mapping[str, Decimal] = field(default_factory=dict)
    rounding: Rounding = Rounding.DOWN
    minimum_spend_minor: int = 0
    """In `currency`; 0 = none."""
    transaction_cap_points: int = 0
    """Most base + tier bonus points per earn; 0 = no cap."""


@dataclass(frozen=True)
class Spend:
    amount_minor: int
    currency: str
    currency_exponent: int
    category: str = ""


@dataclass(frozen=True)
class Conversion:
    """The operator's rate: 1 unit of `spend.currency` is `rate` units of the earn currency."""

    rate: Decimal
    effective_time: datetime


# -- campaigns -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Campaign:
    id: str
    partner_id: str
    display_name: str
    start_time: datetime
    end_time: datetime
    days_of_week: frozenset[int] = frozenset()
    """ISO weekdays (1 = Monday ... 7 = Sunday) in the partner's time zone; empty = every day."""
    start_hour: int = 0
    end_hour: int = 0
    """Local hours [start, end); both 0 = all day; start > end wraps past midnight."""
    categories: frozenset[str] = frozenset()
    multiplier: Decimal | None = None
    bonus_points: int = 0
    action: str = ""
    """Set: an action bonus, for EarnPoints with this action. Empty: a purchase campaign."""
    member_budget_points: int = 0
    total_budget_points: int = 0
    create_time: datetime | None = None
    stop_time: datetime | None = None
    """When EndCampaign stopped it: earns recorded from then on get nothing, backdated or not."""

    @property
    def name(self) -> str:
        return f"partners/{self.partner_id}/campaigns/{self.id}"

    def applies(self, at: datetime, zone: ZoneInfo, category: str, action: str) -> bool:
        if not self.start_time <= at < self.end_time:
            return False
        if self.action != action:
            return False
        if self.categories and category not in self.categories:
            return False
        local = at.astimezone(zone)
        if self.days_of_week and local.isoweekday() not in self.days_of_week:
            return False
        return in_hours(local.hour, self.start_hour, self.end_hour)


def in_hours(hour: int, start: int, end: int) -> bool:
    if start == end == 0:
        return True
    if start < end:
        return start <= hour < end
    return hour >= start or hour < end  # a window past midnight (22 -> 2)


@dataclass(frozen=True)
class Offer:
    """A campaign that applies, with what is left of its budgets (None = no cap)."""

    campaign: Campaign
    member_left: int | None = None
    total_left: int | None = None


def validate_campaign(campaign: Campaign, now: datetime, prefix: str = "campaign") -> Campaign:
    name = campaign.display_name.strip()
    require(bool(name), f"{prefix}.display_name", "EMPTY_NAME", "a campaign needs a name")
    require(
        len(name) <= CAMPAIGN_NAME_CHARS_MAX,
        f"{prefix}.display_name",
        "FIELD_TOO_LONG",
        f"at most {CAMPAIGN_NAME_CHARS_MAX} characters",
    )
    require(
        campaign.start_time < campaign.end_time,
        f"{prefix}.end_time",
        "INVALID_CAMPAIGN_WINDOW",
        "end_time must be after start_time",
    )
    require(
        campaign.end_time > now,
        f"{prefix}.end_time",
        "INVALID_CAMPAIGN_WINDOW",
        "the campaign would already be over",
    )
    require(
        all(1 <= d <= 7 for d in campaign.days_of_week),
        f"{prefix}.days_of_week",
        "INVALID_DAY_OF_WEEK",
        "ISO days of the week, MONDAY to SUNDAY",
    )
    hours_ok = 0 <= campaign.start_hour <= 23 and 0 <= campaign.end_hour <= 24
    whole_day = campaign.start_hour == campaign.end_hour == 0
    require(
        hours_ok and (whole_day or campaign.start_hour != campaign.end_hour),
        f"{prefix}.start_hour",
        "INVALID_HOURS",
        "start_hour 0-23 and end_hour 0-24, different unless both 0 (all day)",
    )
    require(
        len(campaign.categories) <= CAMPAIGN_CATEGORIES_MAX,
        f"{prefix}.categories",
        "TOO_MANY_CATEGORIES",
        f"at most {CAMPAIGN_CATEGORIES_MAX}",
    )
    if campaign.action:
        parse_action(campaign.action, f"{prefix}.action")
        require(
            not campaign.categories,
            f"{prefix}.categories",
            "CATEGORIES_NOT_FOR_ACTIONS",
            "an action bonus applies to its action, not to purchase categories",
        )
    multiplier = campaign.multiplier
    require(
        multiplier is None
        or (multiplier.is_finite() and 1 < multiplier <= CAMPAIGN_MULTIPLIER_MAX),
        f"{prefix}.multiplier",
        "INVALID_MULTIPLIER",
        f'more than 1 and at most {CAMPAIGN_MULTIPLIER_MAX} ("2" = double points)',
    )
    require(
        campaign.multiplier is not None or campaign.bonus_points > 0,
        f"{prefix}.multiplier",
        "NO_CAMPAIGN_REWARD",
        "set a multiplier, bonus points, or both",
    )
    require(
        0 <= campaign.bonus_points <= CAMPAIGN_BONUS_POINTS_MAX,
        f"{prefix}.bonus_points",
        "INVALID_POINTS",
        f"between 0 and {CAMPAIGN_BONUS_POINTS_MAX:,}",
    )
    for budget in ("member_budget_points", "total_budget_points"):
        require(
            0 <= getattr(campaign, budget) <= CAMPAIGN_BUDGET_POINTS_MAX,
            f"{prefix}.{budget}",
            "INVALID_BUDGET",
            f"between 0 (no cap) and {CAMPAIGN_BUDGET_POINTS_MAX:,} points",
        )
    return replace(campaign, display_name=name)


def parse_exchange_rate(raw: str, field_path: str = "rate") -> Decimal:
    rate = parse_decimal(
        raw,
        field_path,
        "INVALID_EXCHANGE_RATE",
        Decimal(0),
        EXCHANGE_RATE_MAX,
        EXCHANGE_RATE_DECIMALS_MAX,
    )
    require(rate > 0, field_path, "INVALID_EXCHANGE_RATE", "a positive rate")
    return rate


def parse_multiplier(raw: str, field_path: str = "campaign.multiplier") -> Decimal | None:
    """None for an empty string; otherwise more than 1 and at most CAMPAIGN_MULTIPLIER_MAX."""
    if not raw.strip():
        return None
    value = parse_decimal(
        raw, field_path, "INVALID_MULTIPLIER", Decimal(1), CAMPAIGN_MULTIPLIER_MAX, 4
    )
    require(value > 1, field_path, "INVALID_MULTIPLIER", 'more than 1 ("2" = double points)')
    return value


# -- evaluation ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Component:
    kind: str
    """BASE, CATEGORY, TIER_BONUS, CAP, CAMPAIGN, ACTION."""
    description: str
    points: int
    source: str = ""

    def as_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "description": self.description,
            "points": self.points,
            "source": self.source,
        }


@dataclass(frozen=True)
class Award:
    """Bonus points a campaign pays; they count against its budgets."""

    campaign_id: str
    points: int


@dataclass(frozen=True)
class Quote:
    points: int
    qualifying_points: int
    components: tuple[Component, ...]
    awards: tuple[Award, ...] = ()

    def breakdown(self) -> tuple[dict[str, object], ...]:
        return tuple(c.as_dict() for c in self.components)


def money(amount_minor: int, currency: str, exponent: int) -> str:
    return f"{currency} {Decimal(amount_minor).scaleb(-exponent):,.{exponent}f}"


def _grouped(points: int) -> str:
    return f"{points:,}"


def quote_purchase(
    rules: EarnRules,
    spend: Spend,
    conversion: Conversion | None,
    tier: Tier,
    offers: Iterable[Offer],
) -> Quote:
    """Points for a purchase, component by component (see the module docstring for the order).

    `conversion` is required when the purchase is not in the partner's earn currency.
    """
    shown = money(spend.amount_minor, spend.currency, spend.currency_exponent)
    major = Decimal(spend.amount_minor).scaleb(-spend.currency_exponent)
    if spend.currency != rules.currency:
        assert conversion is not None, "a foreign-currency purchase needs a rate"
        major *= conversion.rate
        converted = major.quantize(Decimal(1).scaleb(-rules.currency_exponent), ROUND_FLOOR)
        shown += f" ({rules.currency} {converted:,} at {conversion.rate})"
    minimum = Decimal(rules.minimum_spend_minor).scaleb(-rules.currency_exponent)
    if major < minimum:
        below = money(rules.minimum_spend_minor, rules.currency, rules.currency_exponent)
        return Quote(
            0,
            0,
            (
                Component(
                    "BASE", f"{shown} is below the minimum spend of {below}", 0, rules.partner
                ),
            ),
        )

    rate = rules.category_rates.get(spend.category) if spend.category else None
    if rate is None:
        kind, rate = "BASE", rules.base_rate
        what = f"{rate} points per {rules.currency} on {shown}"
    else:
        kind = "CATEGORY"
        what = f"{rate} points per {rules.currency} on {spend.category}, {shown}"
    base = round_points(major * rate, rules.rounding)
    components = [Component(kind, what, base, rules.partner)]

    bonus = round_points(base * (tier.multiplier - 1), rules.rounding)
    if bonus:
        components.append(
            Component(
                "TIER_BONUS", f"{tier.display_name} tier, x{tier.multiplier} base points", bonus
            )
        )
    qualifying = base
    cap = rules.transaction_cap_points
    if cap and base + bonus > cap:
        components.append(
            Component(
                "CAP",
                f"at most {_grouped(cap)} points per transaction",
                cap - base - bonus,
                rules.partner,
            )
        )
        qualifying = min(base, cap)  # the cap cuts the tier bonus before the base

    return _with_campaigns(
        components, qualifying, qualifying, spend.category, "", offers, rules.rounding
    )


def quote_action(
    partner: str,
    action: str,
    own_points: int,
    offers: Iterable[Offer],
    rounding: Rounding = Rounding.DOWN,
) -> Quote:
    """Points for an action: the partner's own points for it, plus matching action bonuses."""
    components = []
    if own_points:
        components.append(Component("ACTION", action, own_points, partner))
    return _with_campaigns(components, 0, own_points, "", action, offers, rounding)


def _with_campaigns(
    components: list[Component],
    qualifying: int,
    multiplied: int,
    category: str,
    action: str,
    offers: Iterable[Offer],
    rounding: Rounding,
) -> Quote:
    awards = []
    ordered = sorted(offers, key=lambda o: (o.campaign.start_time, o.campaign.id))
    for offer in ordered:
        campaign = offer.campaign
        want = campaign.bonus_points
        parts = []
        if campaign.multiplier is not None:
            extra = round_points(multiplied * (campaign.multiplier - 1), rounding)
            want += extra
            parts.append(f"x{campaign.multiplier}")
        if campaign.bonus_points:
            parts.append(f"+{_grouped(campaign.bonus_points)} bonus")
        paid = want
        limits = [left for left in (offer.member_left, offer.total_left) if left is not None]
        note = ""
        if limits and min(limits) < want:
            paid = max(min(limits), 0)
            note = (
                " (budget exhausted)"
                if paid == 0
                else f" (cut to the {_grouped(paid)} points left in its budget)"
            )
        description = f"{campaign.display_name}: {' '.join(parts)}{note}"
        components.append(Component("CAMPAIGN", description, paid, campaign.name))
        if paid:
            awards.append(Award(campaign.id, paid))
    total = sum(c.points for c in components)
    return Quote(total, qualifying, tuple(components), tuple(awards))
