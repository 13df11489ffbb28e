"""Wallet card rules: the program settings, the card's content and the Apple and Google documents
built from it, plus the small pure helpers of the card store and the PassKit web service.
No I/O."""

from __future__ import annotations

import json
import logging
import random
import re
import socket
import ssl
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from gateway.domain.errors import InvalidArgument
from wallet.adapters.apns import ApnsClient, PushOutcome
from wallet.domain import card as dc
from wallet.service import passkit
from wallet.service.cards import later_second

ISSUER = "3388000000022222222"
SERIAL = "0123456789abcdef0123456789abcdef"
EXPIRES = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)

CONTENT = dc.CardContent(
    member_name='Zoë "Z" Müller',
    loyalty_number="123456789012",
    locale="fr-CA",
    balance_points=12_345,
    tier_code="gold",
    tier_name="Gold",
    next_tier_name="Platinum",
    points_to_next_tier=5_000,
    expiring_points=250,
    expiring_time=EXPIRES,
    partners=("Brand A", "Brand B"),
)
NOTHING_DUE = replace(CONTENT, expiring_points=0, expiring_time=None)
TOP_TIER = replace(
    CONTENT, tier_code="platinum", tier_name="Platinum", next_tier_name="", points_to_next_tier=0
)
PROGRAM = dc.Program(google_issuer_id=ISSUER)

_STRINGS_LINE = re.compile(r'^"((?:[^"\\]|\\.)*)" = "((?:[^"\\]|\\.)*)";$')
_ESCAPE = re.compile(r"\\(.)")


def t(iso: str) -> datetime:
    return datetime.fromisoformat(iso).replace(tzinfo=UTC)


def fields(layout: dc.PassLayout) -> dict[str, dc.PassField]:
    every = (*layout.header, *layout.primary, *layout.secondary, *layout.auxiliary, *layout.back)
    return {f.key: f for f in every}


def parse_strings(data: bytes) -> dict[str, str]:
    """`"KEY" = "value";` lines, unescaped (\\n, \\", \\\\)."""
    entries: dict[str, str] = {}
    for line in data.decode("utf-8").splitlines():
        match = _STRINGS_LINE.match(line)
        assert match, f"not a strings line: {line!r}"
        key, value = (
            _ESCAPE.sub(lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), part)
            for part in match.groups()
        )
        entries[key] = value
    return entries


# -- Program ---------------------------------------------------------------------------------


def test_default_program_is_valid() -> None:
    program = dc.Program()

    assert program.pass_type_id == "pass.org.example.coalition"
    assert program.google_issuer_id == ""


@pytest.mark.parametrize(
    "pass_type_id",
    [
        "",
        "pass",
        "pass.",
        "pass.example",
        "com.example.card",
        "PASS.com.example.card",
        "pass.com..card",
        "pass.com.example.",
        "pass.com.exa mple",
        "pass.com_example.card",
        " pass.com.example.card",
        "pass.com.example.card\n",
    ],
    ids=[
        "empty",
        "bare-pass",
        "pass-dot",
        "one-segment",
        "no-pass-prefix",
        "uppercase-prefix",
        "empty-segment",
        "trailing-dot",
        "space",
        "underscore",
        "leading-space",
        "trailing-newline",
    ],
)
def test_program_rejects_a_bad_pass_type_id(pass_type_id: str) -> None:
    with pytest.raises(dc.WalletConfigError, match="pass type id"):
        dc.Program(pass_type_id=pass_type_id)


@pytest.mark.parametrize(
    "pass_type_id",
    ["pass.com.example.card", "pass.org.example-1.coalition", "pass.A1.b2.C3"],
    ids=["reverse-dns", "hyphen", "mixed-case"],
)
def test_program_accepts_a_pass_type_id(pass_type_id: str) -> None:
    assert dc.Program(pass_type_id=pass_type_id).pass_type_id == pass_type_id


@pytest.mark.parametrize(
    "team_id",
    ["", "DEVTEAM00", "DEVTEAM0011", "devteam001", "DEVTEAM-01", "DEVTEAM00\n", "DEVTEAM00É"],
    ids=["empty", "nine", "eleven", "lowercase", "hyphen", "trailing-newline", "accent"],
)
def test_program_rejects_a_bad_team_id(team_id: str) -> None:
    with pytest.raises(dc.WalletConfigError, match="team id"):
        dc.Program(team_id=team_id)


@pytest.mark.parametrize(
    "web_url",
    ["", "ftp://wallet.example.org", "wallet.example.org", "127.0.0.1:8080", "javascript:x"],
    ids=["empty", "ftp", "no-scheme", "host-port", "javascript"],
)
def test_program_rejects_a_bad_web_url(web_url: str) -> None:
    with pytest.raises(dc.WalletConfigError, match="web URL"):
        dc.Program(web_url=web_url)


@pytest.mark.parametrize("attribute", ["background_color", "foreground_color", "label_color"])
@pytest.mark.parametrize(
    "color",
    [
        "",
        "#fff",
        "1f3a5f",
        "#1f3a5g",
        "#1f3a5f0",
        "rgb(1, 2, 3)",
        "#1f3a5f\n",
    ],
    ids=["empty", "short", "no-hash", "not-hex", "seven-digits", "rgb", "trailing-newline"],
)
def test_program_rejects_a_bad_color(attribute: str, color: str) -> None:
    with pytest.raises(dc.WalletConfigError, match="#rrggbb"):
        dc.Program(**{attribute: color})


@pytest.mark.parametrize(
    "issuer_id",
    [
        "abc",
        "12a",
        "-1",
        "1.5",
        " 123",
        "٣٣٨٨",
        "³³⁸⁸",
    ],
    ids=[
        "letters",
        "trailing-letter",
        "negative",
        "decimal",
        "leading-space",
        "arabic-indic-digits",
        "superscript-digits",
    ],
)
def test_program_rejects_a_bad_google_issuer_id(issuer_id: str) -> None:
    with pytest.raises(dc.WalletConfigError, match="issuer id"):
        dc.Program(google_issuer_id=issuer_id)


@pytest.mark.parametrize(
    "suffix",
    [
        "",
        "a b",
        "a/b",
        "x" * 101,
        "loyalty\n",
    ],
    ids=["empty", "space", "slash", "too-long", "trailing-newline"],
)
def test_program_rejects_a_bad_google_class_suffix(suffix: str) -> None:
    with pytest.raises(dc.WalletConfigError, match="class suffix"):
        dc.Program(google_class_suffix=suffix)


def test_wallet_config_error_is_a_value_error() -> None:
    assert issubclass(dc.WalletConfigError, ValueError)


@pytest.mark.parametrize(
    ("web_url", "passkit_url", "page_url"),
    [
        (
            "https://wallet.example.org",
            "https://wallet.example.org/passkit",
            f"https://wallet.example.org/cards/{SERIAL}?token=tok",
        ),
        (
            "https://wallet.example.org/",
            "https://wallet.example.org/passkit",
            f"https://wallet.example.org/cards/{SERIAL}?token=tok",
        ),
        (
            "http://127.0.0.1:8080/base/",
            "http://127.0.0.1:8080/base/passkit",
            f"http://127.0.0.1:8080/base/cards/{SERIAL}?token=tok",
        ),
    ],
    ids=["plain", "trailing-slash", "path"],
)
def test_program_urls(web_url: str, passkit_url: str, page_url: str) -> None:
    program = dc.Program(web_url=web_url)

    assert program.passkit_url == passkit_url
    assert program.card_page_url(SERIAL, "tok") == page_url


def test_program_google_ids() -> None:
    assert PROGRAM.google_class_id == f"{ISSUER}.coalition-loyalty"
    assert PROGRAM.google_object_id(SERIAL) == f"{ISSUER}.{SERIAL}"
    assert dc.Program().google_object_id(SERIAL) == "", "no issuer, no Google object"


# -- CardContent -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        CONTENT,
        NOTHING_DUE,
        TOP_TIER,
        replace(CONTENT, partners=()),
        replace(CONTENT, expiring_time=datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)),
        replace(
            CONTENT,
            expiring_time=datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2))),
        ),
        replace(CONTENT, member_name='名前 \\ "q"\n', partners=('Café "Ça"', "Ünïcødé")),
    ],
    ids=[
        "expiring",
        "nothing-expiring",
        "top-tier",
        "no-partners",
        "microseconds",
        "offset-zone",
        "awkward-text",
    ],
)
def test_card_content_json_round_trip(content: dc.CardContent) -> None:
    raw = content.to_json()
    back = dc.CardContent.from_json(raw)

    assert back == content
    assert isinstance(back.partners, tuple)
    assert back.to_json() == raw, "stable: equal content, equal JSON"
    if content.expiring_time is None:
        assert back.expiring_time is None
    else:
        assert back.expiring_time is not None
        assert back.expiring_time.utcoffset() == content.expiring_time.utcoffset()


def test_card_content_json_is_compact_with_sorted_keys() -> None:
    raw = CONTENT.to_json()
    data = json.loads(raw)

    assert raw == json.dumps(data, sort_keys=True, separators=(",", ":"))
    assert data["expiring_time"] == "2030-01-02T03:04:05+00:00"
    assert data["partners"] == ["Brand A", "Brand B"]
    assert json.loads(NOTHING_DUE.to_json())["expiring_time"] is None


def test_card_content_json_differs_when_content_differs() -> None:
    assert CONTENT.to_json() != replace(CONTENT, balance_points=12_346).to_json()
    assert CONTENT.to_json() != replace(CONTENT, partners=("Brand B", "Brand A")).to_json()


# -- the Apple pass layout -------------------------------------------------------------------


def test_pass_layout_shows_the_card() -> None:
    layout = dc.pass_layout(CONTENT, PROGRAM)
    by_key = fields(layout)

    assert [f.key for f in layout.header] == ["tier"]
    assert [f.key for f in layout.primary] == ["points"]
    assert [f.key for f in layout.secondary] == ["member"]
    assert by_key["tier"] == dc.PassField("tier", "TIER", "Gold", change_message="TIER_CHANGED")
    assert by_key["points"] == dc.PassField(
        "points", "POINTS", 12_345, change_message="POINTS_CHANGED", number=True
    )
    assert by_key["member"].value == 'Zoë "Z" Müller'
    assert layout.barcode_message == "123456789012"
    assert layout.barcode_alt_text == "1234 5678 9012"
    assert by_key["number"].value == "1234 5678 9012"


def test_pass_layout_dates_the_expiry() -> None:
    layout = dc.pass_layout(CONTENT, PROGRAM)

    assert [f.key for f in layout.auxiliary] == ["expiring", "expires"]
    expiring, expires = layout.auxiliary
    assert expiring == dc.PassField(
        "expiring", "EXPIRING", 250, change_message="EXPIRING_CHANGED", number=True
    )
    assert expires == dc.PassField("expires", "EXPIRES", EXPIRES.isoformat(), date=True)


@pytest.mark.parametrize(
    "content",
    [
        NOTHING_DUE,
        replace(CONTENT, expiring_points=0),
        replace(CONTENT, expiring_time=None),
    ],
    ids=["nothing-expiring", "no-points-but-a-date", "points-but-no-date"],
)
def test_pass_layout_has_no_expiry_date_when_nothing_is_expiring(
    content: dc.CardContent,
) -> None:
    layout = dc.pass_layout(content, PROGRAM)

    assert [f.key for f in layout.auxiliary] == ["expiring"]
    assert layout.auxiliary[0].value == content.expiring_points
    assert not any(f.date for f in fields(layout).values())


def test_pass_layout_names_the_next_tier_on_the_back() -> None:
    back = {f.key: f for f in dc.pass_layout(CONTENT, PROGRAM).back}

    assert back["nextTier"] == dc.PassField("nextTier", "NEXT_TIER", "5000 → Platinum")


def test_pass_layout_has_no_next_tier_line_at_the_top_tier() -> None:
    layout = dc.pass_layout(TOP_TIER, PROGRAM)

    assert "nextTier" not in fields(layout)
    assert [f.key for f in layout.back] == ["number", "partners"]


def test_pass_layout_lists_the_partners_on_the_back() -> None:
    layout = dc.pass_layout(CONTENT, PROGRAM)
    (partners,) = [f for f in layout.back if f.key == "partners"]

    assert partners == dc.PassField("partners", "PARTNERS", "Brand A\nBrand B")
    front = (*layout.header, *layout.primary, *layout.secondary, *layout.auxiliary)
    assert all(f.key != "partners" for f in front)


def test_pass_layout_has_no_partners_field_without_partners() -> None:
    layout = dc.pass_layout(replace(CONTENT, partners=()), PROGRAM)

    assert [f.key for f in layout.back] == ["number", "nextTier"]


@pytest.mark.parametrize(
    "content",
    [CONTENT, NOTHING_DUE, TOP_TIER],
    ids=["expiring", "nothing-expiring", "top-tier"],
)
def test_pass_layout_keys_are_unique_and_every_string_is_translated(
    content: dc.CardContent,
) -> None:
    layout = dc.pass_layout(content, PROGRAM)
    every = (*layout.header, *layout.primary, *layout.secondary, *layout.auxiliary, *layout.back)

    assert len({f.key for f in every}) == len(every)
    for locale in dc.LOCALES:
        for f in every:
            assert f.label in dc.STRINGS[locale], (locale, f.label)
            if f.change_message:
                assert "%@" in dc.STRINGS[locale][f.change_message], (locale, f.change_message)


def test_every_language_has_the_same_keys() -> None:
    english = set(dc.STRINGS["en"])

    assert set(dc.STRINGS) == set(dc.LOCALES)
    for locale in dc.LOCALES:
        assert set(dc.STRINGS[locale]) == english, locale


# -- pass.strings ----------------------------------------------------------------------------


@pytest.mark.parametrize("locale", dc.LOCALES)
def test_pass_strings_parse_back_to_the_strings(locale: str) -> None:
    data = dc.pass_strings(locale)

    assert data.endswith(b"\n")
    assert parse_strings(data) == dc.STRINGS[locale]
    keys = [line.split('"')[1] for line in data.decode().splitlines()]
    assert keys == sorted(keys)


def test_pass_strings_are_utf8() -> None:
    assert '"NUMBER" = "Numéro de fidélité";' in dc.pass_strings("fr").decode("utf-8")


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ('say "hi"', r'"K" = "say \"hi\"";'),
        ("back\\slash", r'"K" = "back\\slash";'),
        ("two\nlines", r'"K" = "two\nlines";'),
        ('\\"\n', r'"K" = "\\\"\n";'),
        ("\\n", r'"K" = "\\n";'),
        ("%@ points", r'"K" = "%@ points";'),
    ],
    ids=["quotes", "backslash", "newline", "all-three", "literal-backslash-n", "format"],
)
def test_pass_strings_escape_quotes_backslashes_and_newlines(
    monkeypatch: pytest.MonkeyPatch, text: str, line: str
) -> None:
    monkeypatch.setitem(dc.STRINGS, "en", {"K": text})

    data = dc.pass_strings("en")

    assert data.decode() == line + "\n"
    assert parse_strings(data) == {"K": text}


def test_pass_strings_escape_keys_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(dc.STRINGS, "de", {'A"B': "x", "C\nD": "y"})

    assert parse_strings(dc.pass_strings("de")) == {'A"B': "x", "C\nD": "y"}


@pytest.mark.parametrize(
    ("locale", "expected"),
    [
        ("en", "en"),
        ("fr", "fr"),
        ("de", "de"),
        ("fr-CA", "fr"),
        ("FR-ca", "fr"),
        ("de-AT", "de"),
        ("de-CH-1996", "de"),
        ("en-GB", "en"),
        ("xx", "en"),
        ("xx-FR", "en"),
        ("es", "en"),
        ("", "en"),
    ],
    ids=lambda v: v or "empty",
)
def test_strings_for_falls_back_to_the_language_then_english(locale: str, expected: str) -> None:
    assert dc.strings_for(locale) is dc.STRINGS[expected]


# -- Google ----------------------------------------------------------------------------------


def test_loyalty_class_shape() -> None:
    made = dc.loyalty_class(PROGRAM, "https://wallet.example.org/logo.png")

    assert made == {
        "id": f"{ISSUER}.coalition-loyalty",
        "issuerName": "Coalition",
        "programName": "Coalition Rewards",
        "programLogo": {
            "sourceUri": {"uri": "https://wallet.example.org/logo.png"},
            "contentDescription": {
                "defaultValue": {"language": "en-US", "value": "Coalition Rewards"}
            },
        },
        "hexBackgroundColor": "#1f3a5f",
        "reviewStatus": "UNDER_REVIEW",
    }


def test_loyalty_fields_with_points_expiring() -> None:
    assert dc.loyalty_fields(CONTENT) == {
        "accountName": 'Zoë "Z" Müller',
        "loyaltyPoints": {"label": "Points", "balance": {"int": 12_345}},
        "textModulesData": [
            {"id": "tier", "header": "Tier", "body": "Gold"},
            {"id": "expiring", "header": "Expiring", "body": "250 points on 2030-01-02"},
        ],
    }


@pytest.mark.parametrize(
    "content",
    [NOTHING_DUE, replace(CONTENT, expiring_points=0), replace(CONTENT, expiring_time=None)],
    ids=["nothing-expiring", "no-points-but-a-date", "points-but-no-date"],
)
def test_loyalty_fields_without_an_expiry(content: dc.CardContent) -> None:
    modules = dc.loyalty_fields(content)["textModulesData"]

    assert modules == [{"id": "tier", "header": "Tier", "body": "Gold"}]


def test_loyalty_object_shape() -> None:
    made = dc.loyalty_object(PROGRAM, SERIAL, CONTENT)

    assert made == {
        "id": f"{ISSUER}.{SERIAL}",
        "classId": f"{ISSUER}.coalition-loyalty",
        "state": "ACTIVE",
        "accountId": "123456789012",
        "barcode": {
            "type": "QR_CODE",
            "value": "123456789012",
            "alternateText": "1234 5678 9012",
        },
        **dc.loyalty_fields(CONTENT),
    }


def test_save_claims_shape() -> None:
    now = datetime(2030, 1, 1, 12, 0, 0, 999_999, tzinfo=UTC)
    obj = dc.loyalty_object(PROGRAM, SERIAL, CONTENT)

    claims = dc.save_claims(
        "wallet@example.iam.gserviceaccount.com", ("https://a", "https://b"), obj, now
    )

    assert claims == {
        "iss": "wallet@example.iam.gserviceaccount.com",
        "aud": "google",
        "typ": "savetowallet",
        "iat": int(datetime(2030, 1, 1, 12, tzinfo=UTC).timestamp()),
        "origins": ["https://a", "https://b"],
        "payload": {"loyaltyObjects": [obj]},  # the class is created over REST
    }
    assert isinstance(claims["iat"], int)
    json.dumps(claims)  # a JWT payload: plain JSON


# -- small helpers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "printed"),
    [
        ("123456789012", "1234 5678 9012"),
        ("1234567890123456", "1234 5678 9012 3456"),
        ("1234", "1234"),
        ("12345", "1234 5"),
        ("123", "123"),
        ("", ""),
    ],
    ids=["twelve", "sixteen", "four", "five", "three", "empty"],
)
def test_formatted_number(number: str, printed: str) -> None:
    assert dc.formatted_number(number) == printed


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        (SERIAL, True),
        ("f" * 32, True),
        (SERIAL.upper(), False),
        (SERIAL[:-1], False),
        (SERIAL + "0", False),
        ("g" * 32, False),
        ("", False),
        (" " + SERIAL[1:], False),
        (SERIAL + "\n", False),
    ],
    ids=[
        "hex",
        "all-f",
        "uppercase",
        "short",
        "long",
        "not-hex",
        "empty",
        "space",
        "trailing-newline",
    ],
)
def test_is_serial_number(text: str, valid: bool) -> None:
    assert dc.is_serial_number(text) is valid


def test_card_name() -> None:
    assert dc.card_name("abc123") == "members/abc123/walletCard"


# -- later_second ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("previous", "now", "expected"),
    [
        ("2030-01-01T10:00:00.500", "2030-01-01T10:00:00.900", "2030-01-01T10:00:01"),
        ("2030-01-01T10:00:00", "2030-01-01T10:00:00", "2030-01-01T10:00:01"),
        ("2030-01-01T10:00:00.999999", "2030-01-01T10:00:00.999999", "2030-01-01T10:00:01"),
        ("2030-01-01T10:00:05.200", "2030-01-01T10:00:03", "2030-01-01T10:00:06"),
        ("2030-01-01T10:00:00.500", "2030-01-01T10:00:01", "2030-01-01T10:00:01"),
        ("2030-01-01T10:00:00.500", "2030-01-01T10:00:01.250", "2030-01-01T10:00:01.250"),
        ("2030-01-01T10:00:00.999", "2030-01-01T10:00:01.001", "2030-01-01T10:00:01.001"),
        ("2030-01-01T10:00:00", "2030-01-02T08:30:00.123", "2030-01-02T08:30:00.123"),
    ],
    ids=[
        "same-second",
        "same-instant",
        "end-of-second",
        "clock-went-back",
        "exactly-next-second",
        "later-second-kept",
        "just-into-next-second",
        "much-later",
    ],
)
def test_later_second(previous: str, now: str, expected: str) -> None:
    assert later_second(t(previous), t(now)) == t(expected)


def test_later_second_keeps_now_itself_when_already_a_later_second() -> None:
    now = t("2030-01-01T10:00:02.345678")

    assert later_second(t("2030-01-01T10:00:01.999"), now) is now


def test_later_second_is_always_a_strictly_later_whole_second_and_not_before_now() -> None:
    rng = random.Random(20300101)
    base = t("2030-01-01T10:00:00")
    for _ in range(2000):
        previous = base + timedelta(microseconds=rng.randrange(0, 5_000_000))
        now = base + timedelta(microseconds=rng.randrange(0, 5_000_000))

        when = later_second(previous, now)

        assert when.replace(microsecond=0) > previous.replace(microsecond=0), (previous, now)
        assert when >= now
        assert when == now or when.microsecond == 0


def test_later_second_in_a_burst_gives_every_version_its_own_second() -> None:
    now = t("2030-01-01T10:00:00.100")
    stamps = [now]
    for _ in range(5):
        stamps.append(later_second(stamps[-1], now))

    seconds = [s.replace(microsecond=0) for s in stamps]
    assert seconds == sorted(set(seconds))
    assert stamps[-1] == t("2030-01-01T10:00:05")


# -- PassKit web service helpers -------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "tag"),
    [
        (None, 0),
        ("", 0),
        ("0", 0),
        ("42", 42),
        ("007", 7),
        ("9" * 18, 10**18 - 1),
        ("1" + "0" * 18, 0),
        ("-1", 0),
        ("+5", 0),
        (" 5", 0),
        ("5 ", 0),
        ("1.5", 0),
        ("1e3", 0),
        ("abc", 0),
        ("٤٢", 0),
        ("²", 0),
    ],
    ids=[
        "absent",
        "empty",
        "zero",
        "number",
        "leading-zeros",
        "eighteen-digits",
        "nineteen-digits",
        "negative",
        "plus",
        "leading-space",
        "trailing-space",
        "decimal",
        "exponent",
        "letters",
        "arabic-indic-digits",
        "superscript",
    ],
)
def test_parse_tag(raw: str | None, tag: int) -> None:
    assert passkit.parse_tag(raw) == tag


@pytest.mark.parametrize(
    "device_id",
    ["a", "A" * passkit.DEVICE_ID_CHARS_MAX, "dev.lib_id-1", "0123456789abcdef"],
    ids=["one-char", "longest", "punctuation", "hex"],
)
def test_check_device_id_accepts(device_id: str) -> None:
    assert passkit.check_device_id(device_id) == device_id


@pytest.mark.parametrize(
    "device_id",
    [
        "",
        "a" * (passkit.DEVICE_ID_CHARS_MAX + 1),
        "dev/1",
        "dev 1",
        "dévice",
        "dev%0A",
        "device-1\n",
    ],
    ids=["empty", "too-long", "slash", "space", "accent", "percent", "trailing-newline"],
)
def test_check_device_id_rejects(device_id: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        passkit.check_device_id(device_id)

    assert caught.value.reason == "INVALID_DEVICE_ID"
    assert caught.value.metadata["field"] == "deviceLibraryIdentifier"


@pytest.mark.parametrize(
    "token",
    ["a", "a1B2c3D4", "F" * passkit.PUSH_TOKEN_CHARS_MAX],
    ids=["one-char", "mixed", "longest"],
)
def test_check_push_token_accepts(token: str) -> None:
    assert passkit.check_push_token(token) == token


@pytest.mark.parametrize(
    "token",
    [
        "",
        "a" * (passkit.PUSH_TOKEN_CHARS_MAX + 1),
        "ab-cd",
        "ab cd",
        "ab/cd",
        "ü",
        None,
        123,
        ["ab"],
        {"token": "ab"},
        "a1b2c3\n",
    ],
    ids=[
        "empty",
        "too-long",
        "hyphen",
        "space",
        "slash",
        "accent",
        "none",
        "int",
        "list",
        "dict",
        "trailing-newline",
    ],
)
def test_check_push_token_rejects(token: object) -> None:
    with pytest.raises(InvalidArgument) as caught:
        passkit.check_push_token(token)

    assert caught.value.reason == "INVALID_PUSH_TOKEN"
    assert caught.value.metadata["field"] == "pushToken"


async def test_apns_push_of_a_stored_bad_token_reports_instead_of_raising() -> None:
    """A token that got past check_push_token is stored and pushed on every card change."""
    with socket.socket() as probe:  # a closed port: nothing is ever sent
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = ApnsClient(f"https://127.0.0.1:{port}", ssl.create_default_context())
    try:
        result = await client.push("a1b2c3\n", "pass.org.example.coalition")
    finally:
        await client.aclose()

    assert result.outcome is PushOutcome.GONE


@pytest.fixture
def device_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.WARNING, logger="coalition.passkit")
    return caplog


def _logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "coalition.passkit"]


@pytest.mark.parametrize(
    "entries",
    [None, "a log line", {"logs": ["x"]}, 3, ("a", "b")],
    ids=["none", "string", "dict", "int", "tuple"],
)
def test_log_messages_wants_a_list(entries: Any, device_logs: pytest.LogCaptureFixture) -> None:
    with pytest.raises(InvalidArgument) as caught:
        passkit.log_messages(entries)

    assert caught.value.reason == "INVALID_LOGS"
    assert caught.value.metadata["field"] == "logs"
    assert _logged(device_logs) == []


def test_log_messages_logs_each_string(device_logs: pytest.LogCaptureFixture) -> None:
    assert passkit.log_messages(["first", "second"]) == 2

    assert _logged(device_logs) == ["device log: first", "device log: second"]
    assert all(r.levelno == logging.WARNING for r in device_logs.records)


def test_log_messages_of_an_empty_list(device_logs: pytest.LogCaptureFixture) -> None:
    assert passkit.log_messages([]) == 0
    assert _logged(device_logs) == []


def test_log_messages_skips_what_is_not_a_string(device_logs: pytest.LogCaptureFixture) -> None:
    assert passkit.log_messages([1, "a", None, {"b": 2}, ["c"], "d"]) == 2

    assert _logged(device_logs) == ["device log: a", "device log: d"]


def test_log_messages_keeps_the_first_entries_only(device_logs: pytest.LogCaptureFixture) -> None:
    entries = [f"entry {i}" for i in range(passkit.LOG_ENTRIES_MAX + 25)]

    assert passkit.log_messages(entries) == passkit.LOG_ENTRIES_MAX

    logged = _logged(device_logs)
    assert len(logged) == passkit.LOG_ENTRIES_MAX
    assert logged[-1] == f"device log: entry {passkit.LOG_ENTRIES_MAX - 1}"


def test_log_messages_counts_skipped_entries_against_the_cap(
    device_logs: pytest.LogCaptureFixture,
) -> None:
    entries: list[object] = [0] * passkit.LOG_ENTRIES_MAX + ["too late"]

    assert passkit.log_messages(entries) == 0
    assert _logged(device_logs) == []


def test_log_messages_cuts_long_entries_and_keeps_one_line(
    device_logs: pytest.LogCaptureFixture,
) -> None:
    long = "x" * (passkit.LOG_ENTRY_CHARS_MAX + 500)

    assert passkit.log_messages([long, "line one\nline two\n"]) == 2

    first, second = _logged(device_logs)
    assert first == "device log: " + "x" * passkit.LOG_ENTRY_CHARS_MAX
    assert second == "device log: line one line two "
