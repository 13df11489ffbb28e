"""Phone protection and page tokens: pure, no I/O."""

from __future__ import annotations

import pytest
from cryptography.exceptions import InvalidTag

from gateway.domain import paging
from gateway.domain.errors import InvalidArgument
from gateway.domain.pii import PiiVault

KEY = b"k" * 32


def test_phone_hash_is_keyed_and_stable() -> None:
    vault, other = PiiVault(KEY), PiiVault(b"o" * 32)
    assert vault.phone_hash("+14155550123") == vault.phone_hash("+14155550123")
    assert vault.phone_hash("+14155550123") != other.phone_hash("+14155550123")
    assert "4155550123" not in vault.phone_hash("+14155550123")


def test_phone_encryption_round_trips_and_is_randomized() -> None:
    vault = PiiVault(KEY)
    a, b = vault.encrypt("+14155550123"), vault.encrypt("+14155550123")
    assert a != b and b"4155550123" not in a
    assert vault.decrypt(a) == "+14155550123"
    with pytest.raises(InvalidTag):
        PiiVault(b"o" * 32).decrypt(a)


def test_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        PiiVault(b"short")


@pytest.mark.parametrize(("requested", "size"), [(0, 50), (1, 1), (100, 100), (10_000, 100)])
def test_page_size_is_bounded(requested: int, size: int) -> None:
    assert paging.page_size(requested) == size


def test_page_tokens_round_trip_and_reject_garbage() -> None:
    token = paging.encode_token({"id": "abc"})
    assert paging.decode_token(token, ("id",)) == {"id": "abc"}
    assert paging.decode_token("", ("id",)) is None
    for bad in ["%%%", paging.encode_token({"other": 1}), "x" * 600, "bm90IGpzb24="]:
        with pytest.raises(InvalidArgument) as caught:
            paging.decode_token(bad, ("id",))
        assert caught.value.reason == "INVALID_PAGE_TOKEN"
    with pytest.raises(InvalidArgument):
        paging.page_size(-1)
