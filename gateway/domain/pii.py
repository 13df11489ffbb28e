"""Phone numbers at rest, and the secrets derived from the deployment's one secret key.

Phone numbers, and the external ids linked to members (partner account ids, airline program
numbers), are looked up by a keyed hash and kept only encrypted.

One deployment secret feeds HKDF, which derives an HMAC key (the lookup hash: equal numbers give
equal hashes, but a leaked table cannot be reversed without the secret), an AES-GCM key (so
the number can still be shown back on GetMember), and the key that partners' webhook signing
secrets are derived from (so no signing secret is stored anywhere).
"""

from __future__ import annotations

import hashlib
import hmac
import os

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SECRET_KEY_BYTES_MIN = 32
AES_GCM_NONCE_BYTES = 12
WEBHOOK_SECRET_PREFIX = "whsec_"


def _derive(secret: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(secret)


class PiiVault:
    def __init__(self, secret: bytes) -> None:
        if len(secret) < SECRET_KEY_BYTES_MIN:
            raise ValueError(f"the secret key needs at least {SECRET_KEY_BYTES_MIN} bytes")
        self._hash_key = _derive(secret, b"coalition/v1 phone lookup hash")
        self._aead = AESGCM(_derive(secret, b"coalition/v1 phone encryption"))
        self._webhook_key = _derive(secret, b"coalition/v1 webhook signing")
        self._lookup_key = _derive(secret, b"coalition/v1 external id lookup hash")
        self._pass_key = _derive(secret, b"coalition/v1 wallet pass token")

    def webhook_secret(self, partner_id: str, version: int) -> str:
        """A partner's webhook signing secret: derived, never stored; a new version rotates it.

        The partner uses the whole string (as UTF-8 bytes) as its HMAC key.
        """
        digest = hmac.new(self._webhook_key, f"{partner_id}/{version}".encode(), hashlib.sha256)
        return WEBHOOK_SECRET_PREFIX + digest.hexdigest()

    def pass_token(self, serial_number: str) -> str:
        """A wallet card's secret: Apple's per-pass authenticationToken and the key to the
        member's card page. Derived from the serial, never stored; compare in constant time."""
        return hmac.new(self._pass_key, serial_number.encode(), hashlib.sha256).hexdigest()

    def phone_hash(self, e164: str) -> str:
        return hmac.new(self._hash_key, e164.encode(), hashlib.sha256).hexdigest()

    def lookup_hash(self, *parts: str) -> str:
        """A keyed hash of an external id in its namespace (linked accounts, one-time codes)."""
        return hmac.new(self._lookup_key, "\x1f".join(parts).encode(), hashlib.sha256).hexdigest()

    def encrypt(self, text: str, purpose: bytes = b"phone") -> bytes:
        nonce = os.urandom(AES_GCM_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, text.encode(), purpose)

    def decrypt(self, blob: bytes, purpose: bytes = b"phone") -> str:
        nonce, sealed = blob[:AES_GCM_NONCE_BYTES], blob[AES_GCM_NONCE_BYTES:]
        return self._aead.decrypt(nonce, sealed, purpose).decode()
