"""The webhook sender against a real HTTP server on 127.0.0.1: what a partner receives, and
what every kind of failure looks like to the deliverer."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.adapters.webhooks import ERROR_CHARS_MAX, USER_AGENT, Attempt, WebhookSender
from partners.webhooks import (
    EVENT_ID_HEADER,
    EVENT_TYPE_HEADER,
    SIGNATURE_HEADER,
    verify,
)

SECRET = b"whsec_sender_test_0123456789"
EVENT_ID = "0123456789abcdef01234567"
EVENT_TYPE = "VoucherIssued"
BODY = json.dumps({"code": "ABCD-EFGH-JKMN-PQR7", "member": "members/m1"}).encode()
NOW = 1_767_614_400
SHORT_TIMEOUT_S = 0.2


@dataclass
class Partner:
    """A partner's webhook endpoint, with routes for each behaviour under test."""

    server: TestServer
    received: list[web.Request] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))


@pytest.fixture
async def partner() -> AsyncIterator[Partner]:
    app = web.Application()
    state = Partner(TestServer(app, host="127.0.0.1"))

    async def ok(request: web.Request) -> web.Response:
        state.received.append(request)
        state.bodies.append(await request.read())
        return web.Response(status=int(request.query.get("status", "204")))

    async def fail(request: web.Request) -> web.Response:
        return web.Response(status=500, text=request.query.get("text", ""))

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound("/ok")

    async def slow(request: web.Request) -> web.Response:
        await state.release.wait()  # released at teardown, so the server closes promptly
        return web.Response(status=204)

    app.add_routes(
        [
            web.post("/ok", ok),
            web.post("/fail", fail),
            web.post("/moved", moved),
            web.post("/slow", slow),
        ]
    )
    async with state.server:
        yield state
        state.release.set()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post(sender: WebhookSender, url: str, event_id: str = EVENT_ID) -> Attempt:
    return await sender.post(url, SECRET, event_id, EVENT_TYPE, BODY, NOW)


def free_port() -> int:
    """A port nothing listens on: bound, read, and released at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# -- success -----------------------------------------------------------------------------------


async def test_a_delivery_is_signed_and_labelled(
    partner: Partner, session: aiohttp.ClientSession
) -> None:
    attempt = await post(WebhookSender(session), partner.url("/ok"))

    assert attempt == Attempt(ok=True, status=204, error="")
    [request], [body] = partner.received, partner.bodies
    assert body == BODY
    assert verify(SECRET, request.headers[SIGNATURE_HEADER], body, now=NOW) == NOW
    assert request.method == "POST"
    assert request.headers[EVENT_ID_HEADER] == EVENT_ID
    assert request.headers[EVENT_TYPE_HEADER] == EVENT_TYPE
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"] == USER_AGENT


@pytest.mark.parametrize("status", [200, 202, 299])
async def test_any_2xx_is_success(
    partner: Partner, session: aiohttp.ClientSession, status: int
) -> None:
    attempt = await post(WebhookSender(session), partner.url(f"/ok?status={status}"))
    assert attempt == Attempt(ok=True, status=status, error="")


# -- answers that are failures -----------------------------------------------------------------


async def test_a_server_error_is_a_failure_with_its_status(
    partner: Partner, session: aiohttp.ClientSession
) -> None:
    attempt = await post(WebhookSender(session), partner.url("/fail"))
    assert attempt == Attempt(ok=False, status=500, error="HTTP 500")


async def test_the_error_quotes_the_start_of_the_answer_on_one_line(
    partner: Partner, session: aiohttp.ClientSession
) -> None:
    attempt = await post(WebhookSender(session), partner.url("/fail?text=db%0Adown"))
    assert attempt == Attempt(ok=False, status=500, error="HTTP 500: db down")


async def test_a_long_answer_is_cut_short(partner: Partner, session: aiohttp.ClientSession) -> None:
    attempt = await post(WebhookSender(session), partner.url("/fail?text=" + "x" * 5_000))
    assert attempt.status == 500
    assert attempt.error.startswith("HTTP 500: xxx")
    assert len(attempt.error) <= ERROR_CHARS_MAX


@pytest.mark.parametrize("status", [400, 404, 410])
async def test_a_client_error_is_a_failure(
    partner: Partner, session: aiohttp.ClientSession, status: int
) -> None:
    attempt = await post(WebhookSender(session), partner.url(f"/ok?status={status}"))
    assert attempt == Attempt(ok=False, status=status, error=f"HTTP {status}")


async def test_a_redirect_is_not_followed(partner: Partner, session: aiohttp.ClientSession) -> None:
    attempt = await post(WebhookSender(session), partner.url("/moved"))
    assert not attempt.ok
    assert attempt.status == 302
    assert attempt.error == "HTTP 302: redirect to /ok not followed"
    assert partner.received == []


# -- no answer at all --------------------------------------------------------------------------


async def test_a_slow_server_times_out(partner: Partner, session: aiohttp.ClientSession) -> None:
    attempt = await post(WebhookSender(session, timeout_s=SHORT_TIMEOUT_S), partner.url("/slow"))
    assert attempt == Attempt(ok=False, status=0, error="timeout after 0.2 s")


async def test_a_refused_connection_is_a_failure(session: aiohttp.ClientSession) -> None:
    port = free_port()
    attempt = await post(WebhookSender(session), f"http://127.0.0.1:{port}/hook")
    assert attempt == Attempt(ok=False, status=0, error=f"connection refused: 127.0.0.1:{port}")


@pytest.mark.parametrize(
    ("url", "error"),
    [
        pytest.param("ftp://partner.example/hook", "invalid URL", id="not-http"),
        pytest.param("hook", "invalid URL", id="relative"),
        pytest.param("http://[::1/hook", "invalid URL", id="unparseable"),
        pytest.param("http://partner.example:99999/hook", "invalid URL", id="bad-port"),
    ],
)
async def test_a_bad_url_is_a_failure_not_an_exception(
    session: aiohttp.ClientSession, url: str, error: str
) -> None:
    attempt = await post(WebhookSender(session), url)
    assert (attempt.ok, attempt.status) == (False, 0)
    assert attempt.error.startswith(error)


async def test_a_header_with_a_line_break_is_a_failure_not_an_exception(
    partner: Partner, session: aiohttp.ClientSession
) -> None:
    attempt = await post(WebhookSender(session), partner.url("/ok"), event_id="a\r\nX-Evil: 1")
    assert (attempt.ok, attempt.status) == (False, 0)
    assert partner.received == []
