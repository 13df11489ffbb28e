"""Airline loyalty programs: number formats as data, and conversions into the program's units.

Every airline partner runs a program. Its numbers follow a format the operator records as data
(length, characters, prefix and a check-digit scheme where the airline has one), so a new
airline needs no code::

    NumberFormat(min_length=10, max_length=10, check_digit=CheckDigit.LUHN)   "10 digits luhn"
    NumberFormat(9, 9, check_digit=CheckDigit.MOD7)                           "9 digits mod7"
    NumberFormat(6, 12, Charset.ALPHANUMERIC, prefix="UA")                    "6-12 alnum UA"

The text form on the right is what the CLI takes and prints. A program may also accept
conversions: coalition points become program units (miles) at a published rate, whole units
only, from a minimum number of points.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, Decimal

from stdnum import luhn

from gateway.domain import rules
from gateway.domain.errors import FailedPrecondition, InvalidArgument, require
from gateway.domain.ledger import POINTS, POINTS_PER_TRANSACTION_MAX

PROGRAM_NUMBER_CHARS_MAX = 32
UNIT_PATTERN = re.compile(r"^[A-Z][A-Z0-9]{1,15}$")
"""A program's unit doubles as its ledger asset code: 2 to 16 upper-case letters or digits."""
PREFIX_CHARS_MAX = 8
CONVERSION_RATE_MAX = Decimal(1000)
CONVERSION_RATE_DECIMALS_MAX = 4
EXTERNAL_ID_CHARS_MAX = 128
_SEPARATORS = re.compile(r"[\s\-]")


class Charset(enum.StrEnum):
    DIGITS = "DIGITS"
    ALPHANUMERIC = "ALPHANUMERIC"
    """A-Z and 0-9 (numbers are upper-cased before they are checked)."""


class CheckDigit(enum.StrEnum):
    NONE = "NONE"
    LUHN = "LUHN"
    """The last digit makes the Luhn (mod 10) sum of the whole number 0."""
    MOD7 = "MOD7"
    """The last digit is the rest of the other digits, read as one number, divided by 7."""


_CHARSET_WORDS = {"digits": Charset.DIGITS, "alnum": Charset.ALPHANUMERIC}
_CHARSET_PATTERNS = {
    Charset.DIGITS: re.compile(r"^[0-9]+$"),
    Charset.ALPHANUMERIC: re.compile(r"^[A-Z0-9]+$"),
}


@dataclass(frozen=True)
class NumberFormat:
    min_length: int = 6
    max_length: int = 20
    charset: Charset = Charset.ALPHANUMERIC
    check_digit: CheckDigit = CheckDigit.NONE
    prefix: str = ""
    """Numbers start with it (counted in the length)."""

    def __str__(self) -> str:
        span = (
            str(self.min_length)
            if self.min_length == self.max_length
            else f"{self.min_length}-{self.max_length}"
        )
        words = [span, "digits" if self.charset is Charset.DIGITS else "alnum"]
        if self.check_digit is not CheckDigit.NONE:
            words.append(self.check_digit.value.lower())
        if self.prefix:
            words.append(self.prefix)
        return " ".join(words)


@dataclass(frozen=True)
class Program:
    """An airline's loyalty program, as the coalition knows it."""

    unit: str = "MILES"
    number_format: NumberFormat = field(default_factory=NumberFormat)
    conversion_rate: Decimal = Decimal(0)
    """Program units per coalition point; 0 means the program takes no conversions."""
    conversion_minimum_points: int = 0


# -- program numbers -------------------------------------------------------------------------


def normalize_number(raw: str) -> str:
    """Members type numbers with spaces and dashes, in any case: compare them without."""
    return _SEPARATORS.sub("", raw).upper()


def check_number(fmt: NumberFormat, raw: str, field_path: str) -> str:
    """The normalized number, or INVALID_PROGRAM_NUMBER saying exactly what is wrong."""
    number = normalize_number(raw)

    def bad(problem: str) -> InvalidArgument:
        return InvalidArgument.on_field(
            field_path, "INVALID_PROGRAM_NUMBER", f"{problem} (format: {fmt})"
        )

    if not number:
        raise bad("the number is empty")
    if not _CHARSET_PATTERNS[fmt.charset].fullmatch(number):
        allowed = "digits" if fmt.charset is Charset.DIGITS else "letters A-Z and digits"
        raise bad(f"only {allowed} are allowed")
    if not fmt.min_length <= len(number) <= fmt.max_length:
        raise bad(f"{len(number)} characters")
    if fmt.prefix and not number.startswith(fmt.prefix):
        raise bad(f"numbers start with {fmt.prefix}")
    if not check_digit_ok(fmt.check_digit, number):
        raise bad(f"the check digit does not match ({fmt.check_digit.value.lower()})")
    return number


def check_digit_ok(scheme: CheckDigit, number: str) -> bool:
    if scheme is CheckDigit.LUHN:
        return bool(luhn.is_valid(number))
    if scheme is CheckDigit.MOD7:
        body, check = number[:-1], number[-1]
        return bool(body) and int(body) % 7 == int(check)
    return True


def with_check_digit(scheme: CheckDigit, body: str) -> str:
    """body plus its check digit: how demo data and tests make valid numbers."""
    if scheme is CheckDigit.LUHN:
        return body + str(luhn.calc_check_digit(body))
    if scheme is CheckDigit.MOD7:
        return body + str(int(body) % 7)
    return body


def parse_format(spec: str, field_path: str = "number_format") -> NumberFormat:
    """'LENGTH[-MAX] digits|alnum [luhn|mod7] [PREFIX]', as in the module docstring."""
    words = spec.split()

    def bad(problem: str) -> InvalidArgument:
        return InvalidArgument.on_field(
            field_path,
            "INVALID_NUMBER_FORMAT",
            f"{problem}; expected 'LENGTH[-MAX] digits|alnum [luhn|mod7] [PREFIX]'",
        )

    if len(words) < 2:
        raise bad(f"{spec!r} is too short")
    low, _, high = words[0].partition("-")
    if not low.isdigit() or (high and not high.isdigit()):
        raise bad(f"{words[0]!r} is not a length")
    if words[1].lower() not in _CHARSET_WORDS:
        raise bad(f"{words[1]!r} is not digits or alnum")
    check, prefix = CheckDigit.NONE, ""
    for word in words[2:]:
        if word.upper() in (CheckDigit.LUHN, CheckDigit.MOD7) and check is CheckDigit.NONE:
            check = CheckDigit(word.upper())
        elif not prefix:
            prefix = word.upper()
        else:
            raise bad(f"{word!r} is unexpected")
    return validate_format(
        NumberFormat(int(low), int(high or low), _CHARSET_WORDS[words[1].lower()], check, prefix),
        field_path,
    )


def validate_format(fmt: NumberFormat, field_path: str) -> NumberFormat:
    require(
        1 <= fmt.min_length <= fmt.max_length <= PROGRAM_NUMBER_CHARS_MAX,
        f"{field_path}.min_length",
        "INVALID_NUMBER_FORMAT",
        f"lengths from 1 to {PROGRAM_NUMBER_CHARS_MAX}, min_length <= max_length",
    )
    require(
        fmt.check_digit is CheckDigit.NONE or fmt.charset is Charset.DIGITS,
        f"{field_path}.check_digit",
        "INVALID_NUMBER_FORMAT",
        "check digits (luhn, mod7) need numbers of digits only",
    )
    require(
        fmt.check_digit is CheckDigit.NONE or fmt.min_length >= 2,
        f"{field_path}.min_length",
        "INVALID_NUMBER_FORMAT",
        "a number with a check digit has at least 2 digits",
    )
    prefix = fmt.prefix.upper()
    require(
        len(prefix) <= min(PREFIX_CHARS_MAX, fmt.min_length - 1)
        and (not prefix or bool(_CHARSET_PATTERNS[fmt.charset].fullmatch(prefix))),
        f"{field_path}.prefix",
        "INVALID_NUMBER_FORMAT",
        f"at most {PREFIX_CHARS_MAX} characters of the format's charset, shorter than a number",
    )
    return NumberFormat(fmt.min_length, fmt.max_length, fmt.charset, fmt.check_digit, prefix)


def validate_program(program: Program, field_path: str = "partner.program") -> Program:
    unit = program.unit.strip().upper()
    require(
        bool(UNIT_PATTERN.fullmatch(unit)) and unit != POINTS,
        f"{field_path}.unit",
        "INVALID_UNIT",
        f'a unit name of 2 to 16 letters or digits, such as "MILES" (not {POINTS})',
    )
    rate = program.conversion_rate
    require(
        rate.is_finite() and Decimal(0) <= rate <= CONVERSION_RATE_MAX,
        f"{field_path}.conversion_rate",
        "INVALID_CONVERSION_RATE",
        f"between 0 and {CONVERSION_RATE_MAX} units per point",
    )
    require(
        0 <= program.conversion_minimum_points <= POINTS_PER_TRANSACTION_MAX,
        f"{field_path}.conversion_minimum_points",
        "OUT_OF_RANGE",
        f"between 0 and {POINTS_PER_TRANSACTION_MAX:,}",
    )
    return Program(
        unit=unit,
        number_format=validate_format(program.number_format, f"{field_path}.number_format"),
        conversion_rate=rules.plain(rate) if rate else Decimal(0),
        conversion_minimum_points=program.conversion_minimum_points,
    )


def parse_conversion_rate(raw: str, field_path: str = "partner.program.conversion_rate") -> Decimal:
    return rules.parse_decimal(
        raw or "0",
        field_path,
        "INVALID_CONVERSION_RATE",
        Decimal(0),
        CONVERSION_RATE_MAX,
        CONVERSION_RATE_DECIMALS_MAX,
    )


# -- conversions -----------------------------------------------------------------------------


def convert(program: Program, program_name: str, points: int) -> int:
    """Program units for `points` coalition points: whole units, the fraction rounded down."""
    if not program.conversion_rate:
        raise FailedPrecondition(
            "CONVERSION_NOT_OFFERED",
            f"{program_name} does not take conversions",
            {"program": program_name},
        )
    if points < program.conversion_minimum_points:
        raise FailedPrecondition(
            "BELOW_CONVERSION_MINIMUM",
            f"{program_name} converts at least {program.conversion_minimum_points:,} points",
            {"minimum_points": str(program.conversion_minimum_points)},
        )
    units = int((points * program.conversion_rate).to_integral_value(ROUND_FLOOR))
    if units < 1:
        raise FailedPrecondition(
            "CONVERSION_TOO_SMALL",
            f"{points} points make less than one {program.unit} unit at "
            f"{program.conversion_rate} per point",
            {"conversion_rate": str(program.conversion_rate)},
        )
    return units


def check_external_id(raw: str, field_path: str) -> str:
    """A partner's own id for a member (a rider id): kept as given, but trimmed and bounded."""
    external = raw.strip()
    require(
        0 < len(external) <= EXTERNAL_ID_CHARS_MAX and external.isprintable(),
        field_path,
        "INVALID_EXTERNAL_ID",
        f"1 to {EXTERNAL_ID_CHARS_MAX} printable characters",
    )
    return external
