"""Loyalty numbers, phone numbers and contact details: pure rules, no I/O."""

from __future__ import annotations

import pytest

from gateway.domain import members as dm
from gateway.domain.errors import InvalidArgument


@pytest.mark.parametrize(
    ("payload", "digit"),
    [("7992739871", "3"), ("00000000000", "0"), ("12345678901", "5")],
    ids=["wikipedia-example", "zeros", "sequence"],
)
def test_luhn_check_digit(payload: str, digit: str) -> None:
    assert dm.luhn_check_digit(payload) == digit


def test_new_loyalty_numbers_are_valid_and_distinct() -> None:
    numbers = {dm.new_loyalty_number() for _ in range(500)}
    assert len(numbers) == 500
    for number in numbers:
        assert len(number) == dm.LOYALTY_NUMBER_DIGITS and number[0] != "0"
        assert dm.parse_loyalty_number(number) == number


def test_every_single_digit_typo_is_caught() -> None:
    number = dm.new_loyalty_number()
    for position in range(len(number)):
        for digit in "0123456789":
            if digit == number[position]:
                continue
            typo = number[:position] + digit + number[position + 1 :]
            with pytest.raises(InvalidArgument) as caught:
                dm.parse_loyalty_number(typo)
            assert caught.value.reason == "INVALID_LOYALTY_NUMBER"


@pytest.mark.parametrize(
    "raw",
    ["", "12345", "1234567890123", "12345678901a", "１２３４５６７８９０１２"],
    ids=["empty", "short", "long", "letter", "fullwidth-digits"],
)
def test_malformed_loyalty_numbers(raw: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        dm.parse_loyalty_number(raw, "member.loyalty_number")
    assert caught.value.reason == "INVALID_LOYALTY_NUMBER"
    assert caught.value.violations[0].field == "member.loyalty_number"


def test_loyalty_number_accepts_spaces_and_dashes() -> None:
    number = dm.new_loyalty_number()
    spaced = f"{number[:4]} {number[4:8]}-{number[8:]}"
    assert dm.parse_loyalty_number(spaced) == number


@pytest.mark.parametrize(
    ("raw", "region", "e164"),
    [
        ("+14155550123", "", "+14155550123"),
        ("(415) 555-0123", "US", "+14155550123"),
        ("+44 7911 123456", "", "+447911123456"),
        ("06 12 34 56 78", "FR", "+33612345678"),
    ],
    ids=["e164", "us-national", "uk-spaced", "fr-national"],
)
def test_phone_numbers_normalize_to_e164(raw: str, region: str, e164: str) -> None:
    assert dm.parse_phone_number(raw, region=region) == e164


@pytest.mark.parametrize(
    ("raw", "region"),
    [("abc", ""), ("+1 555", ""), ("(415) 555-0123", ""), ("+1" + "5" * 40, "")],
    ids=["letters", "too-short", "no-region", "oversized"],
)
def test_bad_phone_numbers(raw: str, region: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        dm.parse_phone_number(raw, "member.phone_number", region)
    assert caught.value.reason == "INVALID_PHONE_NUMBER"
    assert caught.value.metadata["field"] == "member.phone_number"


@pytest.mark.parametrize(
    ("contact", "reason", "field"),
    [
        (dm.ContactDetails(""), "EMPTY_NAME", "member.display_name"),
        (dm.ContactDetails("   "), "EMPTY_NAME", "member.display_name"),
        (dm.ContactDetails("x" * 201), "FIELD_TOO_LONG", "member.display_name"),
        (dm.ContactDetails("Ada", email="not-an-email"), "INVALID_EMAIL", "member.email"),
        (dm.ContactDetails("Ada", locale="english!"), "INVALID_LOCALE", "member.locale"),
        (
            dm.ContactDetails("Ada", phone_number="12"),
            "INVALID_PHONE_NUMBER",
            "member.phone_number",
        ),
    ],
    ids=["empty-name", "blank-name", "long-name", "bad-email", "bad-locale", "bad-phone"],
)
def test_contact_validation_names_the_field(
    contact: dm.ContactDetails, reason: str, field: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        dm.validate_contact(contact)
    assert (caught.value.reason, caught.value.violations[0].field) == (reason, field)


def test_contact_is_trimmed_and_defaulted() -> None:
    contact = dm.validate_contact(
        dm.ContactDetails("  Ada Lovelace ", email=" ada@example.com ", locale="")
    )
    assert contact == dm.ContactDetails("Ada Lovelace", "ada@example.com", "", "en", False)


@pytest.mark.parametrize("name", ["members/", "member/abc", "members/ABC", "members/a/b"])
def test_bad_member_names(name: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        dm.parse_member_name(name)
    assert caught.value.reason == "INVALID_MEMBER_NAME"
