"""Statements and the multilateral netting of a period, in the coalition's base currency.

Every partner's net position (what it receives, + or pays, -) is converted to the base
currency at the period's rate for its currency and rounded once, half to even. The operator's
margin is minus their sum, so positions and margin add up to exactly zero. The margin's parts
(issue revenue, fees, redemption, conversion and charity costs, adjustments) are each
converted and rounded the same way, per statement; what rounding leaves over is fx_rounding,
so the parts add up to the margin exactly as well.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from settlement.domain.pricing import to_base


@dataclass(frozen=True)
class Statement:
    """A partner's frozen statement; money in minor units of `currency`."""

    period: str
    partner_id: str
    currency: str
    exponent: int
    points_issued: int
    points_redeemed: int
    points_converted: int
    units_converted: int
    points_donated: int
    points_matched: int
    points_expired: int
    issue_minor: int
    redemption_minor: int
    conversion_minor: int
    donation_minor: int
    fee_minor: int
    adjustment_minor: int
    late_minor: int
    owed_minor: int
    due_minor: int
    net_minor: int
    fx_rate: Decimal
    net_base_minor: int
    breakage_base_minor: int
    line_count: int
    create_time: datetime

    @property
    def name(self) -> str:
        return f"settlementPeriods/{self.period}/statements/{self.partner_id}"


@dataclass(frozen=True)
class Margin:
    """The operator's margin and its parts, minor units of the base currency."""

    total: int
    issue_revenue: int
    fee_revenue: int
    redemption_cost: int
    conversion_cost: int
    charity_payouts: int
    adjustments: int
    fx_rounding: int
    breakage: int


@dataclass(frozen=True)
class Netting:
    period: str
    base_currency: str
    base_exponent: int
    positions: tuple[Statement, ...]
    margin: Margin
    margins_by_currency: tuple[tuple[str, int], ...]
    """(currency, sum owed - sum due) per settlement currency, ordered by currency."""
    create_time: datetime


def margin_of(statements: Iterable[Statement], base_exponent: int) -> Margin:
    statements = list(statements)

    def base(s: Statement, minor: int) -> int:
        return to_base(minor, s.fx_rate, s.exponent, base_exponent)

    issue = sum(base(s, s.issue_minor) for s in statements)
    fees = sum(base(s, s.fee_minor) for s in statements)
    redemption = -sum(base(s, s.redemption_minor) for s in statements)
    conversion = -sum(base(s, s.conversion_minor) for s in statements)
    charity = -sum(base(s, s.donation_minor) for s in statements)
    # Manual adjustments move money to (+) or from (-) the partner: the margin has the opposite.
    manual = -sum(base(s, s.adjustment_minor - s.late_minor) for s in statements)
    total = -sum(s.net_base_minor for s in statements)
    parts = issue + fees + redemption + conversion + charity + manual
    return Margin(
        total=total,
        issue_revenue=issue,
        fee_revenue=fees,
        redemption_cost=redemption,
        conversion_cost=conversion,
        charity_payouts=charity,
        adjustments=manual,
        fx_rounding=total - parts,
        breakage=sum(s.breakage_base_minor for s in statements),
    )


def netting(
    period: str,
    statements: Iterable[Statement],
    base_currency: str,
    base_exponent: int,
    create_time: datetime,
) -> Netting:
    positions = tuple(sorted(statements, key=lambda s: s.partner_id))
    by_currency: dict[str, int] = defaultdict(int)
    for s in positions:
        by_currency[s.currency] -= s.net_minor
    margin = margin_of(positions, base_exponent)
    assert margin.total + sum(s.net_base_minor for s in positions) == 0
    return Netting(
        period=period,
        base_currency=base_currency,
        base_exponent=base_exponent,
        positions=positions,
        margin=margin,
        margins_by_currency=tuple(sorted(by_currency.items())),
        create_time=create_time,
    )
