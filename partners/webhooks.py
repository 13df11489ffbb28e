"""Webhook signatures: verify that a delivery came from Coalition, and came recently.

    from partners.webhooks import SIGNATURE_HEADER, WebhookSignatureError, verify

    def handle(request):  # any web framework: you need the raw body bytes and one header
        try:
            verify(WEBHOOK_SECRET, request.headers[SIGNATURE_HEADER], request.body)
        except WebhookSignatureError as err:  # err.reason == "SIGNATURE_MISMATCH", ...
            return 400
        event = json.loads(request.body)
        ...

The `Coalition-Signature` header is `t=<unix seconds>,v1=<hex HMAC-SHA256>`, where the HMAC
key is the partner's webhook secret and the message is `"<t>."` followed by the raw body. The
timestamp is signed with the body, so a captured delivery cannot be replayed after the
tolerance, nor its timestamp moved. While a secret is being rotated the header carries one
`v1=` entry per secret, and a delivery is genuine if any of them matches. Schemes other than
`v1` are ignored, so new ones can be added without breaking old receivers.

Errors::

    ValueError
     └── WebhookSignatureError    .reason: MALFORMED_HEADER | SIGNATURE_MISMATCH
                                           | TIMESTAMP_OUT_OF_TOLERANCE

Only the standard library is used, so this file can be copied into a receiver as it is.
docs/webhooks.md shows the same check in Node.js.
"""

from __future__ import annotations

import hashlib
import hmac
import time

__all__ = [
    "EVENT_ID_HEADER",
    "EVENT_TYPE_HEADER",
    "SIGNATURE_HEADER",
    "SIGNATURE_TOLERANCE_S_DEFAULT",
    "WebhookSignatureError",
    "sign",
    "verify",
]

SIGNATURE_HEADER = "Coalition-Signature"
EVENT_ID_HEADER = "Coalition-Event-Id"
EVENT_TYPE_HEADER = "Coalition-Event-Type"
SIGNATURE_TOLERANCE_S_DEFAULT = 300
"""How far a delivery's timestamp may be from the receiver's clock, either way."""
SIGNATURE_HEADER_CHARS_MAX = 2_000
"""Room for many rotated secrets; anything longer is not a header Coalition sends."""
SIGNATURE_SCHEME = "v1"

MALFORMED_HEADER = "MALFORMED_HEADER"
SIGNATURE_MISMATCH = "SIGNATURE_MISMATCH"
TIMESTAMP_OUT_OF_TOLERANCE = "TIMESTAMP_OUT_OF_TOLERANCE"
_EXPLANATIONS = {
    MALFORMED_HEADER: f"the {SIGNATURE_HEADER} header is not t=<seconds>,v1=<hex>",
    SIGNATURE_MISMATCH: "no v1 signature matches the body and the secret",
    TIMESTAMP_OUT_OF_TOLERANCE: "the signed timestamp is too far from now (a replay, or a clock "
    "that is off)",
}


class WebhookSignatureError(ValueError):
    """A delivery that must be rejected; `reason` says why, in UPPER_SNAKE."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"{reason}: {_EXPLANATIONS.get(reason, reason)}")
        self.reason = reason


def _mac(secret: bytes, body: bytes, timestamp: int) -> str:
    return hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: bytes, body: bytes, timestamp: int) -> str:
    """The `Coalition-Signature` header value for `body` sent at `timestamp` (unix seconds)."""
    return f"t={timestamp},{SIGNATURE_SCHEME}={_mac(secret, body, timestamp)}"


def _parse(header: str) -> tuple[int, list[str]]:
    """The timestamp and the v1 signatures of a header."""
    if len(header) > SIGNATURE_HEADER_CHARS_MAX:
        raise WebhookSignatureError(MALFORMED_HEADER)
    timestamps: list[str] = []
    signatures: list[str] = []
    for item in header.split(","):
        scheme, equals, value = item.strip().partition("=")
        if not equals or not value:
            raise WebhookSignatureError(MALFORMED_HEADER)
        if scheme == "t":
            timestamps.append(value)
        elif scheme == SIGNATURE_SCHEME:
            signatures.append(value)
    # isdigit() alone accepts non-ASCII digits such as "²", which int() then rejects.
    if len(timestamps) != 1 or not (timestamps[0].isascii() and timestamps[0].isdigit()):
        raise WebhookSignatureError(MALFORMED_HEADER)
    if not signatures:
        raise WebhookSignatureError(MALFORMED_HEADER)
    return int(timestamps[0]), signatures


def verify(
    secret: bytes,
    header: str,
    body: bytes,
    now: int | None = None,
    tolerance_s: int = SIGNATURE_TOLERANCE_S_DEFAULT,
) -> int:
    """The signed timestamp of a genuine, recent delivery; raises WebhookSignatureError.

    `body` must be the raw bytes received, before any JSON parsing. The signature is checked
    before the timestamp, so TIMESTAMP_OUT_OF_TOLERANCE is only ever reported for a delivery
    that Coalition really signed: then the receiver's clock, or a replay, is to blame.
    """
    if tolerance_s < 0:
        raise ValueError(f"tolerance_s must be 0 or more, not {tolerance_s}")
    timestamp, signatures = _parse(header)
    expected = _mac(secret, body, timestamp).encode()
    # Compare every entry, in constant time each, so timing tells nothing about which matched.
    matched = [hmac.compare_digest(expected, candidate.encode()) for candidate in signatures]
    if not any(matched):
        raise WebhookSignatureError(SIGNATURE_MISMATCH)
    current = int(time.time()) if now is None else now
    if abs(current - timestamp) > tolerance_s:
        raise WebhookSignatureError(TIMESTAMP_OUT_OF_TOLERANCE)
    return timestamp
