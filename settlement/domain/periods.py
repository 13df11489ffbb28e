"""Settlement periods: calendar months in UTC, named "settlementPeriods/YYYY-MM"."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.domain.errors import InvalidArgument
from gateway.domain.partners import parse_partner_id
from gateway.domain.tiers import add_months

_PERIOD = re.compile(r"(\d{4})-(0[1-9]|1[0-2])")
_NAME_PREFIX = "settlementPeriods/"


@dataclass(frozen=True, order=True)
class Period:
    """A month; ordered by time."""

    year: int
    month: int

    @property
    def id(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def name(self) -> str:
        return f"{_NAME_PREFIX}{self.id}"

    @property
    def start(self) -> datetime:
        return datetime(self.year, self.month, 1, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        """The first instant of the next month (exclusive)."""
        return add_months(self.start, 1)

    def next(self) -> Period:
        return Period.of(self.end)

    def previous(self) -> Period:
        return Period.of(add_months(self.start, -1))

    @staticmethod
    def of(when: datetime) -> Period:
        when = when.astimezone(UTC)
        return Period(when.year, when.month)

    def __str__(self) -> str:
        return self.id


def parse_period(raw: str, field: str = "period") -> Period:
    """ "YYYY-MM" (the CLI) or INVALID_PERIOD."""
    found = _PERIOD.fullmatch(raw)
    if found is None or not 1970 <= int(found.group(1)) <= 9998:
        raise InvalidArgument.on_field(
            field, "INVALID_PERIOD", 'a month written "YYYY-MM", such as "2026-11"'
        )
    return Period(int(found.group(1)), int(found.group(2)))


def parse_period_name(raw: str, field: str = "period") -> Period:
    """ "settlementPeriods/YYYY-MM" or INVALID_PERIOD."""
    if not raw.startswith(_NAME_PREFIX):
        raise InvalidArgument.on_field(
            field, "INVALID_PERIOD", 'a period written "settlementPeriods/YYYY-MM"'
        )
    return parse_period(raw.removeprefix(_NAME_PREFIX), field)


def parse_statement_name(raw: str, field: str = "name") -> tuple[Period, str]:
    """ "settlementPeriods/{period}/statements/{partner}" -> (period, partner id)."""
    parts = raw.split("/")
    if len(parts) != 4 or parts[0] != "settlementPeriods" or parts[2] != "statements":
        raise InvalidArgument.on_field(
            field,
            "INVALID_STATEMENT_NAME",
            'a statement written "settlementPeriods/YYYY-MM/statements/{partner}"',
        )
    return parse_period(parts[1], field), parse_partner_id(parts[3], field)
