"""Members: loyalty numbers, phone numbers and contact details, validated without I/O."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, replace
from datetime import datetime

import phonenumbers

from gateway.domain.errors import InvalidArgument, require

LOYALTY_NUMBER_DIGITS = 12
"""Digits of a loyalty number, the last one a Luhn check digit."""
DISPLAY_NAME_CHARS_MAX = 200
EMAIL_CHARS_MAX = 254  # RFC 5321 path limit
PHONE_INPUT_CHARS_MAX = 32
LOCALE_CHARS_MAX = 35  # BCP 47 tags are rarely longer; RFC 5646 recommends supporting 35
LOCALE_DEFAULT = "en"
MEMBER_ID_BYTES = 10

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_LOCALE = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
_DIGITS = re.compile(r"^[0-9]+$")
_MEMBER_NAME = re.compile(r"^members/([a-z0-9]{1,40})$")


def luhn_check_digit(payload: str) -> str:
    """The Luhn (mod 10) digit that makes payload + digit valid."""
    total = 0
    for i, ch in enumerate(reversed(payload)):
        d = int(ch)
        if i % 2 == 0:  # these positions are doubled once the check digit is appended
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return str((10 - total % 10) % 10)


def new_loyalty_number() -> str:
    # The first digit is never 0 so the number survives spreadsheets that drop leading zeros.
    payload = str(secrets.randbelow(9) + 1) + "".join(
        str(secrets.randbelow(10)) for _ in range(LOYALTY_NUMBER_DIGITS - 2)
    )
    return payload + luhn_check_digit(payload)


def parse_loyalty_number(raw: str, field_path: str = "loyalty_number") -> str:
    """Normalize a loyalty number (spaces and dashes allowed) or raise INVALID_LOYALTY_NUMBER."""
    digits = raw.replace(" ", "").replace("-", "")
    if len(digits) != LOYALTY_NUMBER_DIGITS or not _DIGITS.fullmatch(digits):
        raise InvalidArgument.on_field(
            field_path,
            "INVALID_LOYALTY_NUMBER",
            f"a loyalty number has {LOYALTY_NUMBER_DIGITS} digits",
        )
    if luhn_check_digit(digits[:-1]) != digits[-1]:
        raise InvalidArgument.on_field(
            field_path, "INVALID_LOYALTY_NUMBER", "the loyalty number's check digit is wrong"
        )
    return digits


def parse_phone_number(raw: str, field_path: str = "phone_number", region: str = "") -> str:
    """E.164 form of a phone number, or INVALID_PHONE_NUMBER naming the field."""
    if len(raw) > PHONE_INPUT_CHARS_MAX:
        raise InvalidArgument.on_field(
            field_path, "INVALID_PHONE_NUMBER", f"at most {PHONE_INPUT_CHARS_MAX} characters"
        )
    try:
        parsed = phonenumbers.parse(raw, region.upper() or None)
    except phonenumbers.NumberParseException as exc:
        raise InvalidArgument.on_field(
            field_path, "INVALID_PHONE_NUMBER", f"not a phone number: {exc}"
        ) from None
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidArgument.on_field(
            field_path, "INVALID_PHONE_NUMBER", "not a valid phone number for its region"
        )
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def parse_member_name(raw: str, field_path: str = "name") -> str:
    """The member id in "members/{member}", or INVALID_MEMBER_NAME."""
    match = _MEMBER_NAME.fullmatch(raw)
    if not match:
        raise InvalidArgument.on_field(
            field_path, "INVALID_MEMBER_NAME", 'expected "members/{member}"'
        )
    return match.group(1)


def new_member_id() -> str:
    return secrets.token_hex(MEMBER_ID_BYTES)


@dataclass(frozen=True)
class ContactDetails:
    """What a member tells us about themselves; validated on construction by `validate`."""

    display_name: str
    email: str = ""
    phone_number: str = ""  # E.164 once validated
    locale: str = LOCALE_DEFAULT
    marketing_consent: bool = False


def validate_contact(
    details: ContactDetails, region: str = "", prefix: str = "member"
) -> ContactDetails:
    """Check and normalize every field, naming the offending one (e.g. "member.email")."""
    name = details.display_name.strip()
    require(bool(name), f"{prefix}.display_name", "EMPTY_NAME", "a member needs a name")
    require(
        len(name) <= DISPLAY_NAME_CHARS_MAX,
        f"{prefix}.display_name",
        "FIELD_TOO_LONG",
        f"at most {DISPLAY_NAME_CHARS_MAX} characters",
    )
    email = details.email.strip()
    if email:
        require(
            len(email) <= EMAIL_CHARS_MAX,
            f"{prefix}.email",
            "FIELD_TOO_LONG",
            f"at most {EMAIL_CHARS_MAX} characters",
        )
        require(bool(_EMAIL.fullmatch(email)), f"{prefix}.email", "INVALID_EMAIL", "not an e-mail")
    phone = details.phone_number.strip()
    if phone:
        phone = parse_phone_number(phone, f"{prefix}.phone_number", region)
    locale = details.locale.strip() or LOCALE_DEFAULT
    require(
        len(locale) <= LOCALE_CHARS_MAX and bool(_LOCALE.fullmatch(locale)),
        f"{prefix}.locale",
        "INVALID_LOCALE",
        'expected a BCP 47 language tag such as "en" or "fr-CA"',
    )
    return replace(details, display_name=name, email=email, phone_number=phone, locale=locale)


@dataclass(frozen=True)
class Member:
    id: str
    loyalty_number: str
    contact: ContactDetails
    tier: str
    create_time: datetime
    update_time: datetime
    tier_review_time: datetime | None = None

    @property
    def name(self) -> str:
        return f"members/{self.id}"
