"""Phone numbers at rest: looked up by a keyed hash, kept only encrypted.

One deployment secret feeds HKDF, which derives an HMAC key (the lookup hash: equal numbers give
equal hashes, but a leaked table cannot be reversed without the secret) and an AES-GCM key (so
the number can still be shown back on GetMember).
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


def _derive(secret: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(secret)


class PiiVault:
    def __init__(self, secret: bytes) -> None:
        if len(secret) < SECRET_KEY_BYTES_MIN:
            raise ValueError(f"the secret key needs at least {SECRET_KEY_BYTES_MIN} bytes")
        self._hash_key = _derive(secret, b"coalition/v1 phone lookup hash")
        self._aead = AESGCM(_derive(secret, b"coalition/v1 phone encryption"))

    def phone_hash(self, e164: str) -> str:
        return hmac.new(self._hash_key, e164.encode(), hashlib.sha256).hexdigest()

    def encrypt(self, text: str) -> bytes:
        nonce = os.urandom(AES_GCM_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, text.encode(), b"phone")

    def decrypt(self, blob: bytes) -> str:
        nonce, sealed = blob[:AES_GCM_NONCE_BYTES], blob[AES_GCM_NONCE_BYTES:]
        return self._aead.decrypt(nonce, sealed, b"phone").decode()
