"""Price lists and the money of a statement: pure, exact, rounded once per bucket.

A statement line is a ledger transaction's effect on one account of one partner (a
component). Its points are minus the sum of the postings on that account, so they read like
the member's side: + for points issued (or matched), - for points redeemed, converted, donated
or expired. Its money, signed from the partner's side (+ the partner receives):

    ISSUED, MATCHED   -points x issue price          (the partner pays for points it issues)
    REDEEMED          -points x redemption rate      (the coalition pays for points spent there)
    CONVERTED          units x conversion price      (per program unit, mile, credited)
    DONATED           -points x charity value
    EXPIRED            0                             (breakage: a memo at the issue price)

A line is priced by the version valid when its transaction was recorded; a reversal by the
version of the transaction it reverses (settlement.service.periods sets price_time).

Fees, which the partner pays: a fixed fee per transaction it makes itself (an earn, a
redemption, a capture, a reward; not reversals, expiries or other partners' transactions) and
a percentage of the value of the points it issues and redeems (net of reversals).

Rounding (docs/settlement.md): lines carry exact values. A statement adds the lines of each
bucket (partner, component, price list version, late or not) exactly and rounds the bucket's
value and its percentage fee once, half to even, to minor units. Conversions to the base
currency round each figure once, half to even; the netting's fx_rounding takes the rest.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal

from gateway.domain.errors import InvalidArgument

PRICE_DIGITS_MAX = 12
"""Decimal places a price may have (0.000000000001 of a major unit per point)."""
PRICE_MAX = Decimal(1_000_000)
"""No point, mile or percent is priced above this (major units): a typo, not a price."""
FEE_PER_TRANSACTION_MINOR_MAX = 10**9
_DECIMAL = re.compile(rf"[0-9]{{1,10}}(\.[0-9]{{1,{PRICE_DIGITS_MAX}}})?")
FX_RATE_MAX = Decimal(10**9)
FEE_TYPES = frozenset({"EARN", "REDEEM", "CAPTURE", "REWARD"})
"""The transactions a partner makes itself, which carry its fixed fee."""


class Component(enum.StrEnum):
    ISSUED = "ISSUED"
    REDEEMED = "REDEEMED"
    CONVERTED = "CONVERTED"
    DONATED = "DONATED"
    MATCHED = "MATCHED"
    EXPIRED = "EXPIRED"


PERCENT_FEE_COMPONENTS = frozenset({Component.ISSUED, Component.REDEEMED})


@dataclass(frozen=True)
class PriceList:
    """A version of a partner's prices, in major units of currency."""

    id: str
    partner_id: str
    valid_from: datetime
    currency: str
    issue_price: Decimal = Decimal(0)
    redemption_rate: Decimal = Decimal(0)
    conversion_price: Decimal = Decimal(0)
    charity_value: Decimal = Decimal(0)
    fee_per_transaction_minor: int = 0
    fee_percent: Decimal = Decimal(0)
    create_time: datetime | None = None

    @property
    def name(self) -> str:
        return f"partners/{self.partner_id}/priceLists/{self.id}"


def parse_price(raw: str, field_path: str, maximum: Decimal = PRICE_MAX) -> Decimal:
    """A non-negative plain decimal ("0.0125"; "" is 0) or INVALID_PRICE."""
    if raw == "":
        return Decimal(0)
    value = Decimal(raw) if _DECIMAL.fullmatch(raw) else None
    if value is None or value > maximum:
        raise InvalidArgument.on_field(
            field_path,
            "INVALID_PRICE",
            f"a decimal from 0 to {maximum:,} with at most {PRICE_DIGITS_MAX} decimal places, "
            'written plainly ("0.0125")',
        )
    return value


def parse_fx_rate(raw: str, field_path: str = "rate") -> Decimal:
    try:
        value = parse_price(raw, field_path, FX_RATE_MAX) if raw else Decimal(0)
    except InvalidArgument:
        value = Decimal(0)
    if value == 0:
        raise InvalidArgument.on_field(
            field_path, "INVALID_RATE", "a positive decimal: units of the currency per base unit"
        )
    return value


def check_fee(minor: int, field_path: str) -> int:
    if not 0 <= minor <= FEE_PER_TRANSACTION_MINOR_MAX:
        raise InvalidArgument.on_field(
            field_path, "INVALID_PRICE", f"from 0 to {FEE_PER_TRANSACTION_MINOR_MAX:,} minor units"
        )
    return minor


def round_minor(exact: Decimal) -> int:
    return int(exact.to_integral_value(rounding=ROUND_HALF_EVEN))


def _scale(exponent: int) -> Decimal:
    return Decimal(10) ** exponent


def value_exact(
    component: Component, points: int, units: int, prices: PriceList, exponent: int
) -> Decimal:
    """The component's money for the partner (+ receives), exact, in minor units."""
    if component in (Component.ISSUED, Component.MATCHED):
        price = -prices.issue_price * points
    elif component is Component.REDEEMED:
        price = -prices.redemption_rate * points
    elif component is Component.CONVERTED:
        price = prices.conversion_price * units
    elif component is Component.DONATED:
        price = -prices.charity_value * points
    else:
        price = Decimal(0)
    return price * _scale(exponent)


def percent_fee_exact(component: Component, value: Decimal, prices: PriceList) -> Decimal:
    """The percentage fee on a value (positive: the partner pays it)."""
    if component not in PERCENT_FEE_COMPONENTS:
        return Decimal(0)
    # Issued value is negative (paid), redeemed positive (received): the fee is on their size.
    size = -value if component is Component.ISSUED else value
    return size * prices.fee_percent / 100


def breakage_exact(component: Component, points: int, prices: PriceList, exponent: int) -> Decimal:
    """Memo: what the expired points were sold for (+ when points expire)."""
    if component is not Component.EXPIRED:
        return Decimal(0)
    return -points * prices.issue_price * _scale(exponent)


def line_exact(
    component: Component,
    points: int,
    units: int,
    prices: PriceList,
    exponent: int,
    fee_bearing: bool,
) -> Decimal:
    """A line's whole effect on the partner: its value less its fees, exact minor units."""
    value = value_exact(component, points, units, prices, exponent)
    fixed = prices.fee_per_transaction_minor if fee_bearing else 0
    return value - percent_fee_exact(component, value, prices) - fixed


@dataclass(frozen=True)
class Bucket:
    """The lines of one partner, component, price list version and lateness, added in SQL."""

    component: Component
    price_list_id: str
    late: bool
    points: int
    units: int
    fee_lines: int
    """Lines that carry the fixed fee (FEE_TYPES made by the partner itself)."""


@dataclass
class Figures:
    """A statement's numbers, minor units of the partner's currency unless said otherwise."""

    points_issued: int = 0
    points_redeemed: int = 0
    points_converted: int = 0
    units_converted: int = 0
    points_donated: int = 0
    points_matched: int = 0
    points_expired: int = 0
    issue_minor: int = 0
    """Owed: points issued and matched at the issue price."""
    redemption_minor: int = 0
    conversion_minor: int = 0
    donation_minor: int = 0
    fee_minor: int = 0
    """Owed."""
    adjustment_minor: int = 0
    """Manual adjustments plus late transactions (signed like net)."""
    late_minor: int = 0
    breakage_minor: int = 0
    manual_owed_minor: int = 0
    manual_due_minor: int = 0

    @property
    def owed_minor(self) -> int:
        return self.issue_minor + self.fee_minor + self.manual_owed_minor

    @property
    def due_minor(self) -> int:
        return (
            self.redemption_minor
            + self.conversion_minor
            + self.donation_minor
            + self.manual_due_minor
        )

    @property
    def net_minor(self) -> int:
        return self.due_minor - self.owed_minor


def figures(
    buckets: Iterable[Bucket],
    prices: dict[str, PriceList],
    exponent: int,
    adjustments_minor: Iterable[int] = (),
) -> Figures:
    """A partner's statement from its buckets and manual adjustments (+ in its favour)."""
    out = Figures()
    for b in buckets:
        p = prices[b.price_list_id]
        value = value_exact(b.component, b.points, b.units, p, exponent)
        value_minor = round_minor(value)
        fee_minor = round_minor(percent_fee_exact(b.component, value, p))
        fee_minor += b.fee_lines * p.fee_per_transaction_minor
        out.fee_minor += fee_minor
        out.breakage_minor += round_minor(breakage_exact(b.component, b.points, p, exponent))
        if b.late:
            out.late_minor += value_minor - fee_minor
        match b.component:
            case Component.ISSUED:
                out.points_issued += b.points
                out.issue_minor -= value_minor
            case Component.MATCHED:
                out.points_matched += b.points
                out.issue_minor -= value_minor
            case Component.REDEEMED:
                out.points_redeemed -= b.points
                out.redemption_minor += value_minor
            case Component.CONVERTED:
                out.points_converted -= b.points
                out.units_converted += b.units
                out.conversion_minor += value_minor
            case Component.DONATED:
                out.points_donated -= b.points
                out.donation_minor += value_minor
            case Component.EXPIRED:
                out.points_expired -= b.points
    for amount in adjustments_minor:
        if amount >= 0:
            out.manual_due_minor += amount
        else:
            out.manual_owed_minor -= amount
    out.adjustment_minor = out.manual_due_minor - out.manual_owed_minor + out.late_minor
    return out


def to_base(amount_minor: int, rate: Decimal, exponent: int, base_exponent: int) -> int:
    """Minor units of a currency in minor units of the base, at `rate` units per base unit."""
    return round_minor(Decimal(amount_minor) * _scale(base_exponent - exponent) / rate)


def plain(value: Decimal) -> str:
    """A decimal as finance writes it: no exponent, no trailing zeros ("0.0125", "100")."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text
