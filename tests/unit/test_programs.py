"""Airline number formats as data, conversions, and CSV rows of a bulk submission (no I/O)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from gateway.domain import programs
from gateway.domain.errors import FailedPrecondition, InvalidArgument
from gateway.domain.programs import Charset, CheckDigit, NumberFormat, Program
from partners import bulk

MOD7 = NumberFormat(9, 9, Charset.DIGITS, CheckDigit.MOD7)
LUHN = NumberFormat(11, 11, Charset.DIGITS, CheckDigit.LUHN)


def test_mod7_check_digit_is_the_rest_of_the_other_digits() -> None:
    assert (
        programs.with_check_digit(CheckDigit.MOD7, "12345678") == "123456782"
    )  # 12345678 % 7 == 2
    assert programs.check_number(MOD7, "1234-5678 2", "n") == "123456782"
    with pytest.raises(InvalidArgument) as caught:
        programs.check_number(MOD7, "123456783", "member.program_number.number")
    assert caught.value.metadata["field"] == "member.program_number.number"
    assert "check digit does not match (mod7)" in caught.value.message


def test_luhn_numbers() -> None:
    number = programs.with_check_digit(CheckDigit.LUHN, "7992739871")
    assert number == "79927398713"  # the textbook example
    assert programs.check_number(LUHN, number, "n") == number
    with pytest.raises(InvalidArgument, match="check digit"):
        programs.check_number(LUHN, "79927398714", "n")


@pytest.mark.parametrize(
    ("raw", "problem"),
    [("", "empty"), ("12345", "5 characters"), ("12345678A", "only digits"), ("1234567890", "10")],
)
def test_each_format_problem_is_named(raw: str, problem: str) -> None:
    with pytest.raises(InvalidArgument, match=problem) as caught:
        programs.check_number(MOD7, raw, "n")
    assert caught.value.reason == "INVALID_PROGRAM_NUMBER"
    assert "9 digits mod7" in caught.value.message  # the format is quoted to the caller


def test_alphanumeric_with_prefix_upper_cases_and_checks_the_prefix() -> None:
    fmt = programs.parse_format("6-12 alnum ua")
    assert fmt == NumberFormat(6, 12, Charset.ALPHANUMERIC, CheckDigit.NONE, "UA")
    assert programs.check_number(fmt, "ua 12345", "n") == "UA12345"
    with pytest.raises(InvalidArgument, match="start with UA"):
        programs.check_number(fmt, "XY12345", "n")


@pytest.mark.parametrize(
    "spec", ["9 digits mod7", "10 digits luhn", "6-12 alnum UA", "8 alnum", "2-32 digits"]
)
def test_format_specs_round_trip(spec: str) -> None:
    assert str(programs.parse_format(spec)) == spec


@pytest.mark.parametrize(
    "spec", ["", "digits", "x digits", "9 letters", "9 alnum luhn", "40 digits", "9-5 digits"]
)
def test_bad_format_specs_are_refused(spec: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        programs.parse_format(spec)
    assert caught.value.reason == "INVALID_NUMBER_FORMAT"


def test_conversion_rounds_down_to_whole_units_from_the_minimum() -> None:
    program = Program("MILES", MOD7, Decimal("0.5"), 1000)
    assert programs.convert(program, "partners/x", 1001) == 500
    assert programs.convert(program, "partners/x", 1000) == 500
    with pytest.raises(FailedPrecondition) as caught:
        programs.convert(program, "partners/x", 999)
    assert caught.value.reason == "BELOW_CONVERSION_MINIMUM"
    with pytest.raises(FailedPrecondition) as caught:
        programs.convert(Program(conversion_rate=Decimal("0.001")), "partners/x", 999)
    assert caught.value.reason == "CONVERSION_TOO_SMALL"
    with pytest.raises(FailedPrecondition) as caught:
        programs.convert(Program(), "partners/x", 5000)
    assert caught.value.reason == "CONVERSION_NOT_OFFERED"


def test_program_validation() -> None:
    valid = programs.validate_program(Program("avios", LUHN, Decimal("1.50"), 0))
    assert (valid.unit, valid.conversion_rate) == ("AVIOS", Decimal("1.5"))
    with pytest.raises(InvalidArgument, match="unit"):
        programs.validate_program(Program("m", LUHN))
    with pytest.raises(InvalidArgument):
        programs.validate_program(Program("MILES", LUHN, Decimal(-1)))
    with pytest.raises(InvalidArgument):
        programs.validate_program(
            Program("MILES", NumberFormat(4, 8, Charset.ALPHANUMERIC, CheckDigit.LUHN))
        )


# -- CSV rows --------------------------------------------------------------------------------


def test_a_folio_row_becomes_an_earn_request() -> None:
    request = bulk.to_request(
        {
            "partner_reference": "F-1",
            "loyalty_number": "912915359414",
            "amount": "123.45",
            "currency": "usd",
            "category": "spa",
            "occur_time": "2026-11-20T10:00:00+01:00",
        }
    )
    assert request.request_id == "F-1"  # no request_id column: the reference is the key
    assert request.member.loyalty_number == "912915359414"
    assert (request.purchase.amount_minor, request.purchase.currency_code) == (12345, "USD")
    assert request.occur_time.ToJsonString() == "2026-11-20T09:00:00Z"


def test_an_agency_row_with_a_program_number_uses_the_default_airline() -> None:
    request = bulk.to_request(
        {"request_id": "b1", "program_number": "123456785", "amount": "400", "currency": "JPY"},
        on_behalf_of="partners/skyways",
    )
    assert request.on_behalf_of == "partners/skyways"
    assert request.member.program_number.program == "partners/skyways"
    assert request.purchase.amount_minor == 400  # JPY has no minor unit


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ({"partner_reference": "x", "amount": "1", "currency": "USD"}, "exactly one"),
        ({"loyalty_number": "1", "amount": "1", "currency": "USD"}, "request_id"),
        (
            {"request_id": "r", "loyalty_number": "1", "amount": "1.234", "currency": "USD"},
            "decimals",
        ),
        ({"request_id": "r", "loyalty_number": "1", "amount": "abc", "currency": "USD"}, "number"),
        ({"request_id": "r", "loyalty_number": "1", "amount": "1", "currency": "XX"}, "ISO 4217"),
        ({"request_id": "r", "loyalty_number": "1"}, "amount and currency"),
        ({"request_id": "r", "member": "m", "action": "A", "points": "x"}, "whole number"),
        (
            {
                "request_id": "r",
                "member": "m",
                "amount": "1",
                "currency": "USD",
                "occur_time": "2026-01-01",
            },
            "zone",
        ),
    ],
)
def test_unreadable_rows_say_which_column(row: dict[str, str], problem: str) -> None:
    with pytest.raises(bulk.RowError, match=problem):
        bulk.to_request(row)
