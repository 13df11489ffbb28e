"""APNs pushes for Wallet passes, over HTTP/2 with the pass type certificate (httpx[http2]).

Apple: "Sending push notifications for pass updates": POST /3/device/{push token} to the APNs
host with `apns-topic` = the pass type identifier and an empty JSON dictionary as the payload;
the device then asks the web service which passes changed. Wallet passes authenticate with the
pass certificate as the TLS client certificate (token-based auth does not apply to them).
"""

from __future__ import annotations

import enum
import json
import ssl
from dataclasses import dataclass
from pathlib import Path

import httpx

APNS_URL_DEFAULT = "https://api.push.apple.com"
APNS_TIMEOUT_S = 10.0
GONE_REASONS = frozenset({"Unregistered", "BadDeviceToken", "DeviceTokenNotForTopic"})
"""APNs reasons meaning the token will never work again: the registration is removed."""


class PushOutcome(enum.Enum):
    SENT = "SENT"
    GONE = "GONE"
    """The token is dead (410, or a 400 naming a bad token): forget the device."""
    RETRY = "RETRY"


@dataclass(frozen=True)
class PushResult:
    outcome: PushOutcome
    detail: str = ""


def tls_context(certificate: Path, key: Path, ca_file: Path | None) -> ssl.SSLContext:
    """Client TLS: the pass certificate, and the system roots (or a test CA)."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    context.load_cert_chain(str(certificate), str(key))
    return context


class ApnsClient:
    def __init__(self, base_url: str, tls: ssl.SSLContext) -> None:
        self._client = httpx.AsyncClient(
            base_url=base_url, http2=True, verify=tls, timeout=APNS_TIMEOUT_S
        )

    async def push(self, push_token: str, topic: str) -> PushResult:
        try:
            response = await self._client.post(
                f"/3/device/{push_token}",
                content=b"{}",
                # A background push must go at priority 5 (APNs "Sending notification requests").
                headers={"apns-topic": topic, "apns-push-type": "background", "apns-priority": "5"},
            )
        except httpx.InvalidURL as exc:  # a token no URL can carry will never work
            return PushResult(PushOutcome.GONE, f"InvalidURL: {exc}")
        except httpx.HTTPError as exc:
            return PushResult(PushOutcome.RETRY, f"{type(exc).__name__}: {exc}")
        if response.status_code == 200:
            return PushResult(PushOutcome.SENT)
        reason = _reason(response)
        if response.status_code == 410 or reason in GONE_REASONS:
            return PushResult(PushOutcome.GONE, reason or str(response.status_code))
        return PushResult(PushOutcome.RETRY, f"{response.status_code} {reason}".strip())

    async def aclose(self) -> None:
        await self._client.aclose()


def _reason(response: httpx.Response) -> str:
    try:
        body = json.loads(response.content or b"{}")
    except ValueError:
        return ""
    reason = body.get("reason", "") if isinstance(body, dict) else ""
    return reason if isinstance(reason, str) else ""
