"""Partner settings validation: pure rules, no I/O."""

from __future__ import annotations

from decimal import Decimal

import pytest

from gateway.domain import partners as dp
from gateway.domain.errors import InvalidArgument


@pytest.mark.parametrize(
    ("raw", "rate"),
    [("10", Decimal(10)), ("2.5", Decimal("2.5")), ("", Decimal(0)), ("0.0001", Decimal("0.0001"))],
    ids=["integer", "decimal", "empty-is-zero", "smallest"],
)
def test_earn_rates(raw: str, rate: Decimal) -> None:
    assert dp.parse_earn_rate(raw) == rate


@pytest.mark.parametrize(
    "raw",
    ["abc", "-1", "NaN", "Infinity", "10001", "0.00001"],
    ids=["text", "negative", "nan", "infinity", "too-high", "too-precise"],
)
def test_bad_earn_rates(raw: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        dp.parse_earn_rate(raw)
    assert caught.value.reason == "INVALID_EARN_RATE"


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://hooks.example.com/coalition", True),
        ("http://localhost:9000/hook", True),
        ("http://127.0.0.1/hook", True),
        ("http://hooks.example.com/hook", False),
        ("ftp://example.com/x", False),
        ("https://", False),
        ("", True),
    ],
    ids=["https", "http-localhost", "http-loopback", "http-remote", "ftp", "no-host", "none"],
)
def test_webhook_urls(url: str, ok: bool) -> None:
    if ok:
        assert dp.parse_webhook_url(url) == url
    else:
        with pytest.raises(InvalidArgument) as caught:
            dp.parse_webhook_url(url)
        assert caught.value.reason == "INVALID_WEBHOOK_URL"


@pytest.mark.parametrize(
    ("raw", "ok"),
    [
        ("grand-hotels", True),
        ("ab", False),
        ("Grand", False),
        ("-x-y", False),
        ("a" * 55, True),
        ("a" * 56, False),
        ("hotel-", False),
    ],
    ids=["slug", "too-short", "upper", "leading-dash", "longest", "too-long", "trailing-dash"],
)
def test_partner_ids(raw: str, ok: bool) -> None:
    if ok:
        assert dp.parse_partner_id(raw) == raw
    else:
        with pytest.raises(InvalidArgument):
            dp.parse_partner_id(raw)


def test_settings_validation_normalizes_and_dedupes() -> None:
    settings = dp.validate_settings(
        dp.PartnerSettings(
            " Agency ", authorized_airlines=("air-a", "air-b", "air-a"), time_zone="Europe/Paris"
        )
    )
    assert settings.display_name == "Agency"
    assert settings.authorized_airlines == ("air-a", "air-b")


@pytest.mark.parametrize(
    ("settings", "reason", "field"),
    [
        (dp.PartnerSettings(""), "EMPTY_NAME", "partner.display_name"),
        (
            dp.PartnerSettings("X", earn_currency_code="usd"),
            "INVALID_CURRENCY",
            "partner.earn_currency_code",
        ),
        (
            dp.PartnerSettings("X", settlement_currency_code="EURO"),
            "INVALID_CURRENCY",
            "partner.settlement_currency_code",
        ),
        (
            dp.PartnerSettings("X", time_zone="Mars/Olympus"),
            "INVALID_TIME_ZONE",
            "partner.time_zone",
        ),
    ],
    ids=["empty-name", "lowercase-currency", "long-currency", "unknown-zone"],
)
def test_bad_settings(settings: dp.PartnerSettings, reason: str, field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        dp.validate_settings(settings)
    assert (caught.value.reason, caught.value.violations[0].field) == (reason, field)
