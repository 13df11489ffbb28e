"""Partners of the network and the rules their settings must follow."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.domain import donations, programs, rules
from gateway.domain.errors import InvalidArgument, require
from gateway.domain.ledger import POINTS_PER_TRANSACTION_MAX, PURCHASE_AMOUNT_MINOR_MAX

DISPLAY_NAME_CHARS_MAX = 200
WEBHOOK_URL_CHARS_MAX = 2048
AUTHORIZED_AIRLINES_MAX = 100
EARN_RATE_MAX = Decimal(10_000)
"""Points per major currency unit; more than this is a typo, not a program."""
EARN_RATE_DECIMALS_MAX = 4

PARTNER_ID_CHARS_MAX = 55
"""So "partners/{id}" fits a certificate subject CN (64 characters, RFC 5280)."""
_PARTNER_ID = re.compile(r"^[a-z][a-z0-9-]{1,53}[a-z0-9]$")
_PARTNER_NAME = re.compile(r"^partners/([a-z][a-z0-9-]{1,53}[a-z0-9])$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "[::1]"}


class PartnerType(enum.StrEnum):
    HOTEL = "HOTEL"
    RIDE_SHARE = "RIDE_SHARE"
    AIRLINE = "AIRLINE"
    RETAIL = "RETAIL"
    TRAVEL_AGENCY = "TRAVEL_AGENCY"
    CHARITY = "CHARITY"


@dataclass(frozen=True)
class PartnerSettings:
    """The operator-editable part of a partner."""

    display_name: str
    base_earn_rate: Decimal = Decimal(0)
    earn_currency_code: str = "USD"
    settlement_currency_code: str = "USD"
    webhook_url: str = ""
    authorized_airlines: tuple[str, ...] = ()  # partner ids, not names
    time_zone: str = "UTC"
    category_rates: tuple[tuple[str, Decimal], ...] = ()
    """(category, points per major unit): replaces base_earn_rate for that category."""
    earn_rounding: rules.Rounding = rules.Rounding.DOWN
    minimum_spend_minor: int = 0
    """In earn_currency_code minor units; a smaller purchase earns nothing. 0 = none."""
    transaction_cap_points: int = 0
    """Most base + tier bonus points one earn can give; 0 = no cap."""
    program: programs.Program | None = None
    """Airlines only: their loyalty program (None elsewhere; an airline gets the default)."""
    charity: donations.CharityProfile | None = None
    """Charities only: what members read about them and what their points are worth."""


@dataclass(frozen=True)
class Partner:
    id: str
    type: PartnerType
    settings: PartnerSettings
    create_time: datetime
    update_time: datetime
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"partners/{self.id}"


def parse_partner_id(raw: str, field_path: str = "partner_id") -> str:
    require(
        bool(_PARTNER_ID.fullmatch(raw)),
        field_path,
        "INVALID_PARTNER_ID",
        f"3 to {PARTNER_ID_CHARS_MAX} characters of a-z, 0-9 and '-', starting with a letter",
    )
    return raw


def parse_partner_name(raw: str, field_path: str = "name") -> str:
    """The partner id in "partners/{partner}", or INVALID_PARTNER_NAME."""
    match = _PARTNER_NAME.fullmatch(raw)
    if not match:
        raise InvalidArgument.on_field(
            field_path, "INVALID_PARTNER_NAME", 'expected "partners/{partner}"'
        )
    return match.group(1)


def parse_partner_type(raw: str, field_path: str = "partner.type") -> PartnerType:
    try:
        return PartnerType(raw)
    except ValueError:
        raise InvalidArgument.on_field(
            field_path,
            "INVALID_PARTNER_TYPE",
            "one of " + ", ".join(t.value for t in PartnerType),
        ) from None


def parse_earn_rate(raw: str, field_path: str = "partner.base_earn_rate") -> Decimal:
    """Points per major currency unit; empty means 0."""
    return rules.parse_decimal(
        raw.strip() or "0",
        field_path,
        "INVALID_EARN_RATE",
        Decimal(0),
        EARN_RATE_MAX,
        EARN_RATE_DECIMALS_MAX,
    )


def parse_currency(raw: str, field_path: str) -> str:
    require(
        bool(_CURRENCY.fullmatch(raw)), field_path, "INVALID_CURRENCY", "an ISO 4217 code like USD"
    )
    return raw


def parse_webhook_url(raw: str, field_path: str = "partner.webhook_url") -> str:
    if not raw:
        return ""
    require(
        len(raw) <= WEBHOOK_URL_CHARS_MAX,
        field_path,
        "FIELD_TOO_LONG",
        f"at most {WEBHOOK_URL_CHARS_MAX} characters",
    )
    parts = urlsplit(raw)
    secure = parts.scheme == "https" and bool(parts.hostname)
    local = parts.scheme == "http" and (parts.hostname or "") in _LOCAL_HOSTS
    require(
        secure or local,
        field_path,
        "INVALID_WEBHOOK_URL",
        "an https URL (http only for localhost)",
    )
    return raw


def parse_time_zone(raw: str, field_path: str = "partner.time_zone") -> str:
    zone = raw or "UTC"
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidArgument.on_field(
            field_path, "INVALID_TIME_ZONE", 'an IANA time zone such as "Europe/Paris"'
        ) from None
    return zone


def validate_settings(settings: PartnerSettings, prefix: str = "partner") -> PartnerSettings:
    name = settings.display_name.strip()
    require(bool(name), f"{prefix}.display_name", "EMPTY_NAME", "a partner needs a name")
    require(
        len(name) <= DISPLAY_NAME_CHARS_MAX,
        f"{prefix}.display_name",
        "FIELD_TOO_LONG",
        f"at most {DISPLAY_NAME_CHARS_MAX} characters",
    )
    require(
        len(settings.authorized_airlines) <= AUTHORIZED_AIRLINES_MAX,
        f"{prefix}.authorized_airlines",
        "TOO_MANY_AIRLINES",
        f"at most {AUTHORIZED_AIRLINES_MAX}",
    )
    return replace(
        settings,
        display_name=name,
        earn_currency_code=parse_currency(
            settings.earn_currency_code, f"{prefix}.earn_currency_code"
        ),
        settlement_currency_code=parse_currency(
            settings.settlement_currency_code, f"{prefix}.settlement_currency_code"
        ),
        webhook_url=parse_webhook_url(settings.webhook_url, f"{prefix}.webhook_url"),
        time_zone=parse_time_zone(settings.time_zone, f"{prefix}.time_zone"),
        authorized_airlines=tuple(dict.fromkeys(settings.authorized_airlines)),
        category_rates=_category_rates(settings.category_rates, f"{prefix}.category_rates"),
        minimum_spend_minor=_bounded(
            settings.minimum_spend_minor, PURCHASE_AMOUNT_MINOR_MAX, f"{prefix}.minimum_spend_minor"
        ),
        transaction_cap_points=_bounded(
            settings.transaction_cap_points,
            POINTS_PER_TRANSACTION_MAX,
            f"{prefix}.transaction_cap_points",
        ),
    )


def _bounded(value: int, high: int, field_path: str) -> int:
    require(0 <= value <= high, field_path, "OUT_OF_RANGE", f"between 0 and {high:,}")
    return value


def _category_rates(
    rates: tuple[tuple[str, Decimal], ...], field_path: str
) -> tuple[tuple[str, Decimal], ...]:
    require(
        len(rates) <= rules.CATEGORY_RATES_MAX,
        field_path,
        "TOO_MANY_CATEGORIES",
        f"at most {rules.CATEGORY_RATES_MAX}",
    )
    seen: dict[str, Decimal] = {}
    for i, (category, rate) in enumerate(rates):
        name = rules.parse_category(category, f"{field_path}[{i}].category")
        require(
            name not in seen,
            f"{field_path}[{i}].category",
            "DUPLICATE_CATEGORY",
            f"{name!r} has a rate already",
        )
        seen[name] = rate
    return tuple(sorted(seen.items()))
