"""Webhook signatures: what a partner's receiver accepts and rejects. Pure, no I/O."""

from __future__ import annotations

import hashlib
import hmac
import time

import pytest

from partners.webhooks import SIGNATURE_TOLERANCE_S_DEFAULT, WebhookSignatureError, sign, verify

SECRET = b"whsec_test_0123456789abcdef"
OTHER_SECRET = b"whsec_other_fedcba9876543210"
BODY = b'{"code":"ABCD-EFGH-JKMN-PQR7","member":"members/m1"}'
NOW = 1_767_614_400  # 2026-01-05T12:00:00Z


def independent_mac(secret: bytes, body: bytes, timestamp: int) -> str:
    """The scheme as docs/webhooks.md states it, computed without partners.webhooks."""
    return hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


GOOD = independent_mac(SECRET, BODY, NOW)


def reason(secret: bytes, header: str, body: bytes = BODY, now: int = NOW) -> str:
    with pytest.raises(WebhookSignatureError) as caught:
        verify(secret, header, body, now=now)
    return caught.value.reason


# -- genuine deliveries ------------------------------------------------------------------------


def test_sign_produces_the_documented_header() -> None:
    assert sign(SECRET, BODY, NOW) == f"t={NOW},v1={independent_mac(SECRET, BODY, NOW)}"


def test_a_signed_delivery_verifies_and_returns_its_timestamp() -> None:
    assert verify(SECRET, sign(SECRET, BODY, NOW), BODY, now=NOW) == NOW


def test_a_header_built_by_hand_verifies() -> None:
    header = f"t={NOW},v1={independent_mac(SECRET, BODY, NOW)}"
    assert verify(SECRET, header, BODY, now=NOW) == NOW


def test_an_empty_body_is_signed_too() -> None:
    assert verify(SECRET, sign(SECRET, b"", NOW), b"", now=NOW) == NOW


@pytest.mark.parametrize(
    "signatures",
    [
        pytest.param([OTHER_SECRET, SECRET], id="new-secret-second"),
        pytest.param([SECRET, OTHER_SECRET], id="new-secret-first"),
    ],
)
def test_any_of_several_v1_entries_may_match_during_a_secret_rotation(
    signatures: list[bytes],
) -> None:
    entries = ",".join(f"v1={independent_mac(s, BODY, NOW)}" for s in signatures)
    assert verify(SECRET, f"t={NOW},{entries}", BODY, now=NOW) == NOW


def test_unknown_schemes_and_spaces_are_ignored() -> None:
    header = f"t={NOW}, v0=deadbeef, v1={independent_mac(SECRET, BODY, NOW)}, v2=future"
    assert verify(SECRET, header, BODY, now=NOW) == NOW


@pytest.mark.parametrize(
    "skew_s",
    [
        pytest.param(-SIGNATURE_TOLERANCE_S_DEFAULT, id="oldest-accepted"),
        pytest.param(SIGNATURE_TOLERANCE_S_DEFAULT, id="newest-accepted"),
    ],
)
def test_the_tolerance_is_inclusive(skew_s: int) -> None:
    assert verify(SECRET, sign(SECRET, BODY, NOW + skew_s), BODY, now=NOW) == NOW + skew_s


def test_now_defaults_to_the_clock() -> None:
    timestamp = int(time.time())
    assert verify(SECRET, sign(SECRET, BODY, timestamp), BODY) == timestamp


# -- rejected deliveries -----------------------------------------------------------------------


def test_a_tampered_body_is_a_mismatch() -> None:
    header = sign(SECRET, BODY, NOW)
    assert reason(SECRET, header, BODY.replace(b"m1", b"m2")) == "SIGNATURE_MISMATCH"


def test_a_wrong_secret_is_a_mismatch() -> None:
    assert reason(OTHER_SECRET, sign(SECRET, BODY, NOW)) == "SIGNATURE_MISMATCH"


def test_a_moved_timestamp_is_a_mismatch() -> None:
    """The timestamp is signed: shifting it to dodge the tolerance breaks the signature."""
    signature = independent_mac(SECRET, BODY, NOW - 3_600)
    assert reason(SECRET, f"t={NOW},v1={signature}") == "SIGNATURE_MISMATCH"


def test_a_non_ascii_signature_is_a_mismatch_not_a_crash() -> None:
    assert reason(SECRET, f"t={NOW},v1=é{GOOD[1:]}") == "SIGNATURE_MISMATCH"


def test_only_v1_counts() -> None:
    header = f"t={NOW},v0={independent_mac(SECRET, BODY, NOW)},v1=00"
    assert reason(SECRET, header) == "SIGNATURE_MISMATCH"


@pytest.mark.parametrize(
    "skew_s",
    [
        pytest.param(-SIGNATURE_TOLERANCE_S_DEFAULT - 1, id="stale"),
        pytest.param(-86_400, id="replayed-a-day-later"),
        pytest.param(SIGNATURE_TOLERANCE_S_DEFAULT + 1, id="from-the-future"),
    ],
)
def test_a_timestamp_out_of_tolerance_is_rejected(skew_s: int) -> None:
    header = sign(SECRET, BODY, NOW + skew_s)
    assert reason(SECRET, header) == "TIMESTAMP_OUT_OF_TOLERANCE"


def test_a_custom_tolerance_applies() -> None:
    header = sign(SECRET, BODY, NOW - 60)
    with pytest.raises(WebhookSignatureError, match="TIMESTAMP_OUT_OF_TOLERANCE"):
        verify(SECRET, header, BODY, now=NOW, tolerance_s=30)
    assert verify(SECRET, header, BODY, now=NOW, tolerance_s=60) == NOW - 60


def test_a_negative_tolerance_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="tolerance_s"):
        verify(SECRET, sign(SECRET, BODY, NOW), BODY, now=NOW, tolerance_s=-1)


@pytest.mark.parametrize(
    "header",
    [
        pytest.param("", id="empty"),
        pytest.param(GOOD, id="bare-signature"),
        pytest.param(f"v1={GOOD}", id="no-timestamp"),
        pytest.param(f"t={NOW}", id="no-signature"),
        pytest.param(f"t={NOW},v0={GOOD}", id="only-unknown-schemes"),
        pytest.param(f"t={NOW},v1=", id="empty-signature"),
        pytest.param(f"t=,v1={GOOD}", id="empty-timestamp"),
        pytest.param(f"t=soon,v1={GOOD}", id="timestamp-not-a-number"),
        pytest.param(f"t=-{NOW},v1={GOOD}", id="negative-timestamp"),
        pytest.param(f"t={NOW}.5,v1={GOOD}", id="fractional-timestamp"),
        pytest.param(f"t=１２３,v1={GOOD}", id="non-ascii-digits"),
        pytest.param(f"t={NOW},t={NOW},v1={GOOD}", id="two-timestamps"),
        pytest.param(f"t={NOW};v1={GOOD}", id="wrong-separator"),
        pytest.param(f"t={NOW},v1={GOOD},", id="trailing-comma"),
        pytest.param(f"t={NOW}," + ",".join([f"v1={GOOD}"] * 40), id="too-long"),
    ],
)
def test_a_malformed_header_is_rejected(header: str) -> None:
    assert reason(SECRET, header) == "MALFORMED_HEADER"


def test_the_error_is_a_value_error_with_an_explanation() -> None:
    with pytest.raises(ValueError, match=r"^SIGNATURE_MISMATCH: no v1 signature matches"):
        verify(OTHER_SECRET, sign(SECRET, BODY, NOW), BODY, now=NOW)
