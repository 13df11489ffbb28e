"""Google Wallet: "Save to Google Wallet" links and loyalty object updates (PyJWT, httpx).

The save link is https://pay.google.com/gp/v/save/{JWT}: RS256 with the service account's key,
carrying the program's LoyaltyClass and the member's LoyaltyObject, which Google creates when the
member saves the card. Later changes PATCH the object through the Wallet REST API with an OAuth
token obtained by the service account's JWT bearer grant (RFC 7523), at the token_uri in its key
file. The API base URL is configurable so tests run against a local fake.
"""

from __future__ import annotations

import asyncio
import enum
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import jwt

from wallet.domain.card import GOOGLE_SAVE_URL

GOOGLE_API_URL_DEFAULT = "https://walletobjects.googleapis.com"
WALLET_SCOPE = "https://www.googleapis.com/auth/wallet_object.issuer"
GOOGLE_TIMEOUT_S = 10.0
TOKEN_LIFETIME_S = 3600
TOKEN_REFRESH_MARGIN_S = 300
"""An access token is renewed this long before Google says it expires."""


class GoogleConfigError(ValueError):
    """The service account key file is not usable."""


class UpdateOutcome(enum.Enum):
    UPDATED = "UPDATED"
    NOT_SAVED = "NOT_SAVED"
    """404: the member has not saved the card to Google Wallet (yet); nothing to update."""
    EXISTS = "EXISTS"
    """409 on insert: Google has it already."""
    RETRY = "RETRY"


@dataclass(frozen=True)
class UpdateResult:
    outcome: UpdateOutcome
    detail: str = ""


@dataclass(frozen=True)
class ServiceAccount:
    client_email: str
    private_key_pem: str
    private_key_id: str
    token_uri: str

    @classmethod
    def from_file(cls, path: Path) -> ServiceAccount:
        try:
            data = json.loads(path.read_text())
            account = cls(
                client_email=data["client_email"],
                private_key_pem=data["private_key"],
                private_key_id=data.get("private_key_id", ""),
                token_uri=data.get("token_uri", "https://oauth2.googleapis.com/token"),
            )
            jwt.encode({}, account.private_key_pem, algorithm="RS256")  # the key is usable
        except (OSError, ValueError, KeyError, TypeError, jwt.PyJWTError) as exc:
            raise GoogleConfigError(f"Google service account key {path}: {exc}") from None
        return account

    def sign(self, claims: dict[str, Any]) -> str:
        headers = {"kid": self.private_key_id} if self.private_key_id else None
        return jwt.encode(claims, self.private_key_pem, algorithm="RS256", headers=headers)


class GoogleWalletClient:
    def __init__(self, account: ServiceAccount, api_url: str = GOOGLE_API_URL_DEFAULT) -> None:
        self.account = account
        self._client = httpx.AsyncClient(base_url=api_url, timeout=GOOGLE_TIMEOUT_S)
        self._token = ""
        self._token_expiry = 0.0
        self._token_lock = asyncio.Lock()

    def save_url(self, claims: dict[str, Any]) -> str:
        return GOOGLE_SAVE_URL + self.account.sign(claims)

    async def _access_token(self, renew: bool = False) -> str:
        async with self._token_lock:
            if renew or time.monotonic() >= self._token_expiry:
                now = int(time.time())
                assertion = self.account.sign(
                    {
                        "iss": self.account.client_email,
                        "scope": WALLET_SCOPE,
                        "aud": self.account.token_uri,
                        "iat": now,
                        "exp": now + TOKEN_LIFETIME_S,
                    }
                )
                response = await self._client.post(
                    self.account.token_uri,
                    data={
                        "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                        "assertion": assertion,
                    },
                )
                response.raise_for_status()
                body = response.json()
                self._token = str(body["access_token"])
                lifetime = int(body.get("expires_in", TOKEN_LIFETIME_S))
                self._token_expiry = time.monotonic() + lifetime - TOKEN_REFRESH_MARGIN_S
            return self._token

    async def patch_object(self, object_id: str, fields: dict[str, Any]) -> UpdateResult:
        """PATCH walletobjects/v1/loyaltyObject/{id} with the changed fields."""
        path = f"/walletobjects/v1/loyaltyObject/{quote(object_id, safe='')}"
        try:
            for renew in (False, True):  # one retry with a fresh token after a 401
                token = await self._access_token(renew)
                response = await self._client.patch(
                    path, json=fields, headers={"authorization": f"Bearer {token}"}
                )
                if response.status_code != 401:
                    break
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            return UpdateResult(UpdateOutcome.RETRY, f"{type(exc).__name__}: {exc}")
        if response.status_code == 200:
            return UpdateResult(UpdateOutcome.UPDATED)
        if response.status_code == 404:
            return UpdateResult(UpdateOutcome.NOT_SAVED)
        return UpdateResult(UpdateOutcome.RETRY, f"{response.status_code} {response.text[:200]}")

    async def insert(self, kind: str, body: dict[str, Any]) -> UpdateResult:
        """POST walletobjects/v1/{kind} ("loyaltyClass", "loyaltyObject")."""
        try:
            token = await self._access_token()
            response = await self._client.post(
                f"/walletobjects/v1/{kind}",
                json=body,
                headers={"authorization": f"Bearer {token}"},
            )
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            return UpdateResult(UpdateOutcome.RETRY, f"{type(exc).__name__}: {exc}")
        if response.status_code == 200:
            return UpdateResult(UpdateOutcome.UPDATED)
        if response.status_code == 409:
            return UpdateResult(UpdateOutcome.EXISTS)
        return UpdateResult(UpdateOutcome.RETRY, f"{response.status_code} {response.text[:200]}")

    async def aclose(self) -> None:
        await self._client.aclose()
