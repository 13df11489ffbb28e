"""Finance views of closed periods: the points liability and each partner's return.

Liability (IFRS 15 style): the points members hold at the period's end are a promise the
coalition will pay for when they are spent. Not all will be: a breakage estimate (the share
expected never to be redeemed) discounts them. The expected cost of the rest is priced at what
burning a point cost over the trailing periods (redemptions, conversions and donations, in the
base currency, per point burned).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

from gateway.domain.errors import InvalidArgument
from settlement.domain.pricing import round_minor

BREAKAGE_PERCENT_DEFAULT = Decimal(20)
TRAILING_PERIODS = 12
"""How many closed periods (months) the cost per burned point is averaged over."""


def parse_breakage(raw: str) -> Decimal:
    try:
        value = Decimal(raw)
    except ArithmeticError:
        value = Decimal(-1)
    if not value.is_finite() or not 0 <= value <= 100:
        raise InvalidArgument.on_field(
            "breakage_percent", "INVALID_BREAKAGE", "a percentage from 0 to 100"
        )
    return value


@dataclass(frozen=True)
class PeriodPoints:
    """Points flows of one closed period, over all partners."""

    period: str
    issued: int
    """Issued and matched."""
    burned: int
    """Redeemed, converted and donated."""
    expired: int
    burn_cost_base_minor: int
    """What the burns cost, in minor units of the base currency."""


@dataclass(frozen=True)
class Liability:
    period: str
    base_currency: str
    base_exponent: int
    available: int
    pending: int
    held: int
    breakage_percent: Decimal
    cost_per_point_base_minor: Decimal
    """Minor units of the base currency per point burned, over the trailing periods."""
    trailing: tuple[PeriodPoints, ...]
    """Oldest first; the last is the period itself."""

    @property
    def outstanding(self) -> int:
        return self.available + self.pending + self.held

    @property
    def expected_redemptions(self) -> int:
        """Points expected to be spent: outstanding less the breakage estimate."""
        kept = Decimal(self.outstanding) * (100 - self.breakage_percent) / 100
        return int(kept.to_integral_value(rounding=ROUND_HALF_EVEN))

    @property
    def expected_cost_base_minor(self) -> int:
        return round_minor(self.expected_redemptions * self.cost_per_point_base_minor)


def cost_per_point(trailing: tuple[PeriodPoints, ...]) -> Decimal:
    burned = sum(p.burned for p in trailing)
    if burned <= 0:
        return Decimal(0)
    return Decimal(sum(p.burn_cost_base_minor for p in trailing)) / burned


@dataclass(frozen=True)
class PartnerReturn:
    """What one partner put in and got out of the coalition in a period."""

    partner_id: str
    display_name: str
    points_issued: int
    points_redeemed: int
    """Redeemed at the partner (and converted into or donated to it)."""
    members: int
    """Members with activity at the partner."""
    shared_members: int
    """Of those, members also active at another partner: the coalition's reach."""
    net_base_minor: int

    @property
    def shared_percent(self) -> Decimal:
        if not self.members:
            return Decimal(0)
        return (Decimal(100) * self.shared_members / self.members).quantize(Decimal("0.1"))
