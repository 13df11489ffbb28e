"""Hostile HTTP against the wallet web service: Apple's PassKit endpoints and the card page.

Requests are written byte by byte on a plain socket, so nothing is cleaned up on the way: wrong
and unknown methods, random paths under /passkit/v1/ and /cards/, path traversal (plain,
percent-encoded, doubled, with backslashes), NUL, newlines and bytes that are not UTF-8 in paths,
queries and headers, header lines at and past the server's limits, bogus and oversized
`Authorization: ApplePass …` tokens (and real tokens of another pass), huge, negative and
non-ASCII `passesUpdatedSince` tags, If-Modified-Since dates from year 0 to 99999, and bodies
that are deep, huge, not JSON, not UTF-8 or JSON of every wrong shape. Half the requests are
real (the registered device, the pass type, a card's serial and its own token, a valid body)
but for one hostile part, so they reach past the first check.

What must hold for every answer: it arrives within its deadline (no hang), its status is never
5xx, and its body never carries a traceback. The members behind the cards have names a browser
would run if they were not escaped: the card page must show them as text. Afterwards /healthz
still answers, the real device can still register, and `coalition ledger verify` passes.

Request number i is generated from COALITION_FUZZ_SEED and i alone (a failure names it and
replays by itself); sizes from `stress.count`. A known bug (a PostgreSQL deadlock) is left out
of the loop, exactly its answers, and pinned by a strict xfail test at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from stress import count
from wallet_support import PASS_TYPE_ID, WalletWeb, wallet_web

from coalition.v1 import (
    common_pb2,
    members_pb2,
    members_pb2_grpc,
    points_pb2,
    points_pb2_grpc,
    wallet_pb2,
    wallet_pb2_grpc,
)
from gateway.service.verify import verify
from wallet.entrypoints.web import REQUEST_BODY_BYTES_MAX

SEED = int(os.environ.get("COALITION_FUZZ_SEED", "20260611"))
REQUESTS = count(10_000, 100_000)
IN_FLIGHT = 16
DEADLINE_S = 15.0
"""Per request, connection to last byte; longer is a hang."""
HEADER_BYTES_MAX = 8190
"""aiohttp's default limit for a request line or one header field."""
HOSTILE_NAMES = [
    "<script>alert('card')</script>",
    '"><img src=x onerror=alert(1)>',
    "Ada \u202eevil\u202c Lovelace",
    "{{ 7 * 7 }} {% raw %}",
    "😀" * 60,
]
"""Display names the gateway accepts, which the card page must escape (it renders them)."""
DEADLOCK_ROUNDS = 30
"""Rounds of the register/unregister race; on PostgreSQL about 40% deadlock, so thirty rounds
without one would be a fix (and the strict xfail says so)."""
TRACEBACK_MARKERS = (b"Traceback (most recent call last)", b'File "/', b"site-packages")


@dataclass
class Card:
    serial: str
    token: str
    page: str
    """The card page's path and query, token included."""


@dataclass
class Target:
    """The service and the real values hostile requests are built around."""

    host: str
    port: int
    cards: list[Card]
    device: str
    push_token: str


async def issue_cards(gateway: Any) -> list[Card]:
    members = members_pb2_grpc.MemberServiceStub(gateway.channel)
    points = points_pb2_grpc.PointsServiceStub(gateway.channel)
    wallet = wallet_pb2_grpc.WalletServiceStub(gateway.channel)
    _, hotel = await gateway.create_partner("fuzz-hotel")
    cards = []
    for i, name in enumerate(HOSTILE_NAMES):
        enrolled = await members.EnrollMember(
            members_pb2.EnrollMemberRequest(
                request_id=f"enroll-{i}", member=members_pb2.Member(display_name=name)
            ),
            metadata=gateway.as_operator,
        )
        ref = common_pb2.MemberRef(member=enrolled.member.name)
        await points.EarnPoints(
            points_pb2.EarnPointsRequest(
                request_id=f"earn-{i}",
                member=ref,
                purchase=common_pb2.Purchase(amount_minor=12_345, currency_code="USD"),
            ),
            metadata=gateway.auth(hotel),
        )
        issued = await wallet.IssueWalletCard(
            wallet_pb2.IssueWalletCardRequest(request_id=f"card-{i}", member=ref),
            metadata=gateway.as_operator,
        )
        page = urlsplit(issued.card_page_url)
        serial = issued.card.serial_number
        token = page.query.removeprefix("token=")
        cards.append(Card(serial, token, f"{page.path}?{page.query}"))
    return cards


# -- raw HTTP --------------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    body: bytes


class Reset(Exception):
    """The server closed the connection without an answer."""


async def exchange(host: str, port: int, raw: bytes) -> Answer:
    """Send raw bytes and read one HTTP/1.1 response (the request says Connection: close)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        with contextlib.suppress(ConnectionError):  # it may answer before reading everything
            writer.write(raw)
            await writer.drain()
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError) as gone:
            raise Reset(str(gone)) from None
        status_line, *lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ")[1])
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        body = b""
        if raw.startswith(b"HEAD ") or status in (204, 304):
            pass
        elif "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
                body += await reader.readexactly(size + 2)
                if size == 0:
                    break
        else:
            body = await reader.read()
        return Answer(status, body)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def request_bytes(
    method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes
) -> bytes:
    lines = [method + b" " + target + b" HTTP/1.1", b"Host: wallet.test", b"Connection: close"]
    lines += [name + b": " + value for name, value in headers]
    framed = any(name.lower() in (b"content-length", b"transfer-encoding") for name, _ in headers)
    if body and not framed:
        lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


# -- the generator ---------------------------------------------------------------------------


class Fuzzer:
    SLOTS = ("device", "pass_type", "serial", "token", "tag", "body", "method", "headers")

    def __init__(self, rng: random.Random, target: Target) -> None:
        self.rng = rng
        self.target = target
        # Half the requests are real but for one part, so they pass every other check.
        self.hostile = rng.choice(self.SLOTS) if rng.random() < 0.5 else "all"
        self.own = rng.choice(target.cards)
        """The card a near-valid request is about (its serial with its own token)."""

    def real(self, slot: str) -> bool:
        return self.hostile not in ("all", slot)

    def card(self) -> Card:
        return self.own if self.hostile != "all" else self.rng.choice(self.target.cards)

    def segment(self, real: str, slot: str = "") -> bytes:
        """A path segment: the real value (often), or something hostile in its place."""
        rng = self.rng
        if self.real(slot) or (self.hostile == "all" and rng.random() < 0.45):
            return real.encode()
        return rng.choice(
            [
                b"",
                b".",
                b"..",
                b"%2e%2e",
                b"..%2f..%2f..%2fetc%2fpasswd",
                b"..\\..\\windows",
                b"%00",
                real.encode() + b"%00",
                real.encode() + b"%0a",
                real.encode() + b"%0d%0aX-Injected:%201",
                b"%ff%fe",
                b"\xff\xfe",  # raw bytes that are not UTF-8
                "é".encode(),
                real.upper().encode(),
                real.encode() + b"0",
                real[:-1].encode(),
                b"x" * rng.choice([129, 1000, 4000]),
                b"%" * 3,
                b"%zz",
                b";jsessionid=1",
                b"*",
                b"~root",
            ]
        )

    def tag(self) -> bytes:
        if self.real("tag"):
            return self.rng.choice([b"0", b"1", b"2"])
        return self.rng.choice(
            [
                b"",
                b"0",
                b"1",
                b"-1",
                b"-9223372036854775808",
                b"9" * 18,
                b"9" * 19,
                b"9223372036854775807",
                b"18446744073709551616",
                b"9" * 5000,
                b"1e10",
                b"NaN",
                b"%d9%a1%d9%a2",  # Arabic-Indic digits, percent-encoded
                "١٢".encode(),
                b"+5",
                b"%00",
                b"0x10",
                b" 1",
            ]
        )

    def path(self) -> tuple[bytes, str]:
        rng, card, t = self.rng, self.card(), self.target
        device = self.segment(t.device, "device")
        pass_type = self.segment(PASS_TYPE_ID, "pass_type")
        serial = self.segment(card.serial, "serial")
        kind = rng.choice(
            ["register", "listing", "pass", "log", "page", "pkpass", "asset", "random", "misc"]
        )
        if kind == "register":
            path = b"/passkit/v1/devices/%b/registrations/%b/%b" % (device, pass_type, serial)
        elif kind == "listing":
            path = b"/passkit/v1/devices/%b/registrations/%b" % (device, pass_type)
            if rng.random() < 0.7:
                path += b"?passesUpdatedSince=" + self.tag()
        elif kind == "pass":
            path = b"/passkit/v1/passes/%b/%b" % (pass_type, serial)
        elif kind == "log":
            path = b"/passkit/v1/log"
        elif kind in ("page", "pkpass"):
            path = b"/cards/" + serial + (b"/pass.pkpass" if kind == "pkpass" else b"")
            token = card.token if self.real("token") or rng.random() < 0.5 else self.token_value()
            path += rng.choice([b"?token=", b"?token=%b&token=" % b"x", b"?"]) + token.encode(
                "latin-1", "replace"
            )
        elif kind == "asset":
            path = b"/cards/assets/" + self.segment(
                rng.choice(["icon.png", "logo@2x.png", "pass.json"])
            )
        elif kind == "random":
            segments = [
                rng.choice([b"devices", b"passes", b"registrations", b"log", b"v1", b"v2"])
                if rng.random() < 0.5
                else self.segment("x")
                for _ in range(rng.randrange(0, 8))
            ]
            path = b"/passkit/v1/" + b"/".join(segments)
        else:
            path = rng.choice(
                [
                    b"/",
                    b"//passkit//v1//log",
                    b"/passkit",
                    b"/passkit/v1",
                    b"/passkit/v1/",
                    b"/passkit/../passkit/v1/log",
                    b"/cards/../../etc/passwd",
                    b"/cards/assets/../../../../etc/passwd",
                    b"/cards/assets/%2e%2e/%2e%2e/wallet/config.py",
                    b"/%2e%2e/%2e%2e/etc/passwd",
                    b"/healthz",
                    b"/readyz",
                    b"*",
                    b"http://evil.example/passkit/v1/log",
                    b"/passkit/v1/log?" + b"a=" * 2000,
                    b"/" + b"a" * 9000,
                ]
            )
        return path, kind

    def token_value(self) -> str:
        rng = self.rng
        real = self.card().token
        if self.real("token"):
            return real
        return rng.choice(
            [
                "",
                real,
                real.upper(),
                real[:-1],
                real + "0",
                "0" * 64,
                "f" * 64,
                "g" * 64,
                "x" * 5000,
                "\x00" * 64,
                "é" * 64,
                self.target.cards[0].token,  # another card's token
            ]
        )

    def headers(self, kind: str) -> list[tuple[bytes, bytes]]:
        rng = self.rng
        out: list[tuple[bytes, bytes]] = []
        if self.real("headers"):
            out = [(b"Authorization", b"ApplePass " + self.card().token.encode())]
            if rng.random() < 0.3:
                out.append((b"If-Modified-Since", b"Tue, 24 Nov 2099 19:46:52 GMT"))
            return out
        if rng.random() < 0.8:
            token = self.token_value()
            scheme = rng.choice(
                [b"ApplePass ", b"ApplePass ", b"applepass ", b"ApplePass", b"Bearer "]
            )
            value = scheme + token.encode("utf-8")
            if rng.random() < 0.1:
                value = b"ApplePass \xff\xfe" + token[:10].encode()  # not even Latin-1 text
            out.append((b"Authorization", value))
        if rng.random() < 0.3:
            out.append(
                (
                    b"If-Modified-Since",
                    rng.choice(
                        [
                            b"Tue, 24 Nov 2099 19:46:52 GMT",
                            b"Mon, 01 Jan 0001 00:00:00 GMT",
                            b"Fri, 31 Dec 99999 23:59:59 GMT",
                            b"Sun, 06 Nov 1994 08:49:37 +9999",
                            b"yesterday",
                            b"",
                            b"-1",
                            b"Thu, 01 Jan 1970 00:00:00 GMT",
                            b"Sat, 30 Feb 2026 25:61:61 GMT",
                        ]
                    ),
                )
            )
        if rng.random() < 0.2:
            out.append((b"Content-Type", rng.choice([b"application/json", b"text/plain", b"\xff"])))
        if rng.random() < 0.08:  # header lines at and past the server's limit
            size = rng.choice([HEADER_BYTES_MAX - 20, HEADER_BYTES_MAX + 10, 70_000])
            out.append((b"X-Fuzz", b"v" * size))
        if rng.random() < 0.04:
            out += [(b"X-Many-%d" % i, b"1") for i in range(rng.choice([100, 500]))]
        return out

    def body(self, kind: str) -> bytes:
        rng = self.rng
        if self.real("body"):
            if kind == "register":
                return json.dumps({"pushToken": self.target.push_token}).encode()
            return json.dumps({"logs": ["fine"]}).encode() if kind == "log" else b""
        if kind not in ("register", "log") and rng.random() < 0.8:
            return b""
        roll = rng.random()
        if roll < 0.3:
            token = rng.choice(["a1b2c3", "A" * 200, "A" * 201, "", "x y", "é", "0" * 64])
            value: Any = rng.choice([token, 12, None, [token], {"t": token}, True])
            return json.dumps({"pushToken": value}).encode()
        if roll < 0.5:
            logs: Any = rng.choice(
                [
                    ["fine"],
                    ["\x00\x1b[31mred\u202e"] * 60,
                    ["x" * 2000] * 10,
                    [1, None, {}],
                    "not a list",
                    list(range(5000)),
                ]
            )
            return json.dumps({"logs": logs}).encode()
        return rng.choice(
            [
                b"[" * 60_000,
                b"{" * 30_000,
                b"[" * (REQUEST_BODY_BYTES_MAX + 1),
                b'{"pushToken": "' + b"a" * (REQUEST_BODY_BYTES_MAX + 100) + b'"}',
                b"\xff\xfe\xfd",
                b"\xef\xbb\xbf{}",
                b'{"pushToken": "\xc0\x80"}',
                b"9" * 5000,
                b"1e999999",
                b"NaN",
                b'{"pushToken": NaN, "logs": Infinity}',
                b'{"pushToken": "a", "pushToken": "b"}',
                b"null",
                b"[]",
                b'"str"',
                b"",
                b"\x00" * 100,
                b"{" + b'"a":1,' * 5000 + b'"b":2}',
                rng.randbytes(rng.choice([1, 100, 5000])),
            ]
        )

    def method(self, kind: str) -> bytes:
        natural = {"register": b"POST", "log": b"POST"}.get(kind, b"GET")
        if kind == "register" and self.real("method"):
            return self.rng.choice([b"POST", b"POST", b"DELETE"])
        if self.real("method") or self.rng.random() < 0.6:
            return natural
        return self.rng.choice(
            [
                b"GET",
                b"POST",
                b"DELETE",
                b"PUT",
                b"PATCH",
                b"HEAD",
                b"OPTIONS",
                b"TRACE",
                b"CONNECT",
                b"FOO",
                b"get",
                b"G\x00T",
                b"POST" * 100,
            ]
        )

    def request(self) -> tuple[str, bytes]:
        path, kind = self.path()
        method = self.method(kind)
        headers, body = self.headers(kind), self.body(kind)
        if self.hostile == "all" and self.rng.random() < 0.05:
            # The same body in chunks (complete: a body promised and never sent would be the
            # client hanging, not the server).
            size = self.rng.choice([1, 7, 4096])
            pieces = [body[i : i + size] for i in range(0, len(body), size)]
            body = b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
            headers.append((b"Transfer-Encoding", b"chunked"))
        raw = request_bytes(method, path, headers, body)
        if self.hostile == "all" and self.rng.random() < 0.06:  # a broken request or framing
            raw = self.rng.choice(
                [
                    b"GET /passkit/v1/log\r\n\r\n",
                    b"GET /passkit/v1/log HTTP/9.9\r\nConnection: close\r\n\r\n",
                    b"GET  /passkit/v1/log  HTTP/1.1\r\nConnection: close\r\n\r\n",
                    b"\r\n\r\nGET / HTTP/1.1\r\nConnection: close\r\n\r\n",
                    b"POST /passkit/v1/log HTTP/1.1\r\nConnection: close\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
                    b"POST /passkit/v1/log HTTP/1.1\r\nConnection: close\r\n"
                    b"Content-Length: -5\r\n\r\n{}",
                    b"POST /passkit/v1/log HTTP/1.1\r\nConnection: close\r\n"
                    b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
                    b"GET /passkit/v1/log HTTP/1.1\r\nHost: a\r\nHost: b\r\n"
                    b"Connection: close\r\n\r\n",
                    b"GET /passkit/v1/log HTTP/1.1\nConnection: close\n\n",
                    b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",  # a TLS hello
                ]
            )
            kind = "broken-framing"
        return kind, raw


# -- the run ---------------------------------------------------------------------------------


@dataclass
class Tally:
    sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    resets: int = 0
    failures: list[str] = field(default_factory=list)
    server_errors: list[tuple[str, str]] = field(default_factory=list)
    """(request kind, description) of every 5xx answer."""
    known: Counter[str] = field(default_factory=Counter)

    def fail(self, text: str) -> None:
        if len(self.failures) < 100:
            self.failures.append(text)


def shown(raw: bytes) -> str:
    return repr(raw[:160]) + ("…" if len(raw) > 160 else "")


async def fuzz(target: Target, tally: Tally) -> None:
    numbers = iter(range(REQUESTS))

    async def worker() -> None:
        for i in numbers:
            kind, raw = Fuzzer(random.Random(SEED * 1_000_003 + i), target).request()
            tally.sent += 1
            tally.kinds[kind] += 1
            what = f"request #{i} [{kind}] {shown(raw)}"
            try:
                answer = await asyncio.wait_for(exchange(target.host, target.port, raw), DEADLINE_S)
            except TimeoutError:
                tally.fail(f"{what}: no answer within {DEADLINE_S} s")
                continue
            except Reset:
                tally.resets += 1  # refused before a word: no 5xx, no hang, nothing leaked
                continue
            tally.statuses[answer.status] += 1
            if answer.status >= 500:
                tally.server_errors.append((kind, f"{what}: {answer.status} {shown(answer.body)}"))
            if any(marker in answer.body for marker in TRACEBACK_MARKERS):
                tally.fail(f"{what}: a traceback in the body {shown(answer.body)}")

    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))


@pytest.fixture
async def served(ctx: Any, tmp_path: Path) -> AsyncIterator[WalletWeb]:
    async for made in wallet_web(ctx, tmp_path):
        yield made


async def register(target: Target, card: Card) -> int:
    path = f"/passkit/v1/devices/{target.device}/registrations/{PASS_TYPE_ID}/{card.serial}"
    body = json.dumps({"pushToken": target.push_token}).encode()
    raw = request_bytes(
        b"POST", path.encode(), [(b"Authorization", f"ApplePass {card.token}".encode())], body
    )
    return (await exchange(target.host, target.port, raw)).status


DEADLOCK_BUG = "register and unregister of one device deadlock on PostgreSQL (500)"


def known_server_errors(tally: Tally, caplog: pytest.LogCaptureFixture) -> None:
    """Every 5xx answer is a failure (the register/unregister deadlock on PostgreSQL, once
    left out here, is fixed: the test below keeps it so)."""
    for _, what in tally.server_errors:
        tally.fail(what)


@pytest.mark.slow
async def test_hostile_http_never_gets_a_5xx_a_traceback_or_a_hang(
    ctx: Any, start_gateway: Any, served: WalletWeb, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = await start_gateway(wallet=served.rig.wallet)
    cards = await issue_cards(gateway)
    base = urlsplit(served.base)
    assert base.hostname is not None and base.port is not None
    target = Target(base.hostname, base.port, cards, "fuzz-device-0001", "a1b2c3d4e5f6")
    assert await register(target, cards[0]) == 201  # so listings have something to list

    # The card page shows every hostile name as text, never as markup.
    for card in cards:
        page = await exchange(
            target.host, target.port, request_bytes(b"GET", card.page.encode(), [], b"")
        )
        assert page.status == 200, page
        for name in HOSTILE_NAMES:
            if "<" in name:
                assert name.encode() not in page.body, f"the page carries {name!r} unescaped"

    tally = Tally()
    started = time.monotonic()
    await fuzz(target, tally)
    elapsed = time.monotonic() - started
    known_server_errors(tally, caplog)
    print(
        f"\nPassKit fuzz (seed {SEED}): {tally.sent:,} HTTP requests in {elapsed:.1f} s "
        f"({tally.resets} refused without an answer); statuses "
        f"{dict(sorted(tally.statuses.items()))}; kinds {dict(tally.kinds.most_common())}; "
        f"known bugs hit {dict(tally.known)}"
    )
    health = await exchange(target.host, target.port, request_bytes(b"GET", b"/healthz", [], b""))
    assert health.status == 200, "the web service stopped answering"
    assert await register(target, cards[0]) in (200, 201), "the real device cannot register"
    report = await verify(ctx)
    assert report.ok, report.problems
    assert not tally.failures, "\n".join(tally.failures)


async def test_a_device_registering_and_unregistering_at_once_never_gets_a_500(
    ctx: Any, start_gateway: Any, served: WalletWeb
) -> None:
    """A phone that deletes a pass and adds it back (or retries both) races itself."""
    gateway = await start_gateway(wallet=served.rig.wallet)
    wallet = wallet_pb2_grpc.WalletServiceStub(gateway.channel)
    members = members_pb2_grpc.MemberServiceStub(gateway.channel)
    enrolled = await members.EnrollMember(
        members_pb2.EnrollMemberRequest(
            request_id="enroll", member=members_pb2.Member(display_name="Ada")
        ),
        metadata=gateway.as_operator,
    )
    issued = await wallet.IssueWalletCard(
        wallet_pb2.IssueWalletCardRequest(
            request_id="card", member=common_pb2.MemberRef(member=enrolled.member.name)
        ),
        metadata=gateway.as_operator,
    )
    card = issued.card.serial_number
    token = urlsplit(issued.card_page_url).query.removeprefix("token=")
    base = urlsplit(served.base)
    assert base.hostname is not None and base.port is not None
    path = f"/passkit/v1/devices/phone-1/registrations/{PASS_TYPE_ID}/{card}".encode()
    auth = [(b"Authorization", b"ApplePass " + token.encode())]
    add = request_bytes(b"POST", path, auth, b'{"pushToken": "a1b2c3"}')
    remove = request_bytes(b"DELETE", path, auth, b"")
    for _ in range(DEADLOCK_ROUNDS):  # each round: both at once (a deadlock costs PG 1 s)
        answers = await asyncio.gather(
            exchange(base.hostname, base.port, add), exchange(base.hostname, base.port, remove)
        )
        assert all(a.status < 500 for a in answers), [(a.status, a.body) for a in answers]
