"""Partner webhooks, the sending side: one signed POST, and what became of it.

`WebhookSender.post` never raises for anything the network or the partner's server does: every
outcome is an `Attempt`, so the deliverer records it and decides about retries. Only a 2xx
answer is a success. Redirects are not followed: the signature covers the body, not the URL,
and a webhook URL that moved should be updated by its owner, not guessed at by us.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp

from partners.webhooks import EVENT_ID_HEADER, EVENT_TYPE_HEADER, SIGNATURE_HEADER, sign

WEBHOOK_TIMEOUT_S_DEFAULT = 10.0
"""For the whole attempt: connecting, sending, and reading the answer."""
ERROR_CHARS_MAX = 500
RESPONSE_EXCERPT_BYTES_MAX = 200
"""Of a failed answer's body, kept in the error to help the partner debug; the rest is unread."""
USER_AGENT = "Coalition-Webhooks/1"


@dataclass(frozen=True)
class Attempt:
    ok: bool
    status: int
    """The HTTP status; 0 when no answer came."""
    error: str
    """"" when ok; otherwise a short human text ("HTTP 503", "timeout after 10 s")."""


def _failure(status: int, error: str) -> Attempt:
    return Attempt(ok=False, status=status, error=error[:ERROR_CHARS_MAX])


def _excerpt(raw: bytes) -> str:
    """A failed answer's body on one line, for the error text."""
    return " ".join(raw.decode("utf-8", errors="replace").split())


def _connect_error(exc: aiohttp.ClientConnectorError) -> str:
    where = f"{exc.host}:{exc.port}"
    if isinstance(exc.os_error, ConnectionRefusedError):
        return f"connection refused: {where}"
    return f"cannot connect to {where}: {exc.os_error.strerror or exc.os_error}"


def _is_http_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:  # such as an unclosed IPv6 bracket
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)


class WebhookSender:
    """Posts signed events over a session that the caller owns (and closes)."""

    def __init__(
        self, session: aiohttp.ClientSession, timeout_s: float = WEBHOOK_TIMEOUT_S_DEFAULT
    ) -> None:
        self._session = session
        self._timeout_s = timeout_s

    async def post(
        self, url: str, secret: bytes, event_id: str, event_type: str, body: bytes, timestamp: int
    ) -> Attempt:
        """POST `body` (JSON) to `url`, signed with `secret` at `timestamp` (unix seconds)."""
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            SIGNATURE_HEADER: sign(secret, body, timestamp),
            EVENT_ID_HEADER: event_id,
            EVENT_TYPE_HEADER: event_type,
        }
        if not _is_http_url(url):
            return _failure(0, f"invalid URL: {url!r} is not an absolute http(s) URL")
        try:
            return await self._post(url, headers, body)
        except TimeoutError:
            return _failure(0, f"timeout after {self._timeout_s:g} s")
        except aiohttp.ClientConnectorError as exc:
            return _failure(0, _connect_error(exc))
        except aiohttp.InvalidURL as exc:
            return _failure(0, f"invalid URL: {exc}")
        except (aiohttp.ClientError, OSError) as exc:
            return _failure(0, f"{type(exc).__name__}: {exc}")
        except ValueError as exc:  # a header value aiohttp refuses, such as one with a newline
            return _failure(0, f"cannot send: {exc}")

    async def _post(self, url: str, headers: dict[str, str], body: bytes) -> Attempt:
        async with self._session.post(
            url,
            data=body,
            headers=headers,
            allow_redirects=False,
            raise_for_status=False,  # whatever the session's own setting: we judge the status
            timeout=aiohttp.ClientTimeout(total=self._timeout_s),
        ) as response:
            if 200 <= response.status < 300:
                return Attempt(ok=True, status=response.status, error="")
            if 300 <= response.status < 400:
                location = response.headers.get("Location", "")
                return _failure(
                    response.status, f"HTTP {response.status}: redirect to {location} not followed"
                )
            excerpt = _excerpt(await response.content.read(RESPONSE_EXCERPT_BYTES_MAX))
            return _failure(
                response.status, f"HTTP {response.status}" + (f": {excerpt}" if excerpt else "")
            )
