"""What wallet tests share: development signing files, a local APNs (HTTP/2 over TLS, requiring
the pass certificate, served by hypercorn), a fake Google (OAuth token endpoint and the Wallet
REST API, aiohttp), and a Wallet wired to them. Every certificate and key is made per test run.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypercorn.asyncio import serve
from hypercorn.config import Config

from gateway.clock import SystemClock
from partners import ca as ca_lib
from wallet.adapters.apns import ApnsClient, tls_context
from wallet.adapters.devcerts import DevCertPaths, make_dev_certs
from wallet.adapters.google import GoogleWalletClient, ServiceAccount
from wallet.adapters.pkpass import PassCredentials
from wallet.config import Apple, Google, Wallet
from wallet.domain.card import Program

PASS_TYPE_ID = "pass.org.example.coalition.test"
TEAM_ID = "TESTTEAM01"
ISSUER_ID = "3388000000022222222"


def dev_certs(directory: Path) -> DevCertPaths:
    return make_dev_certs(directory, PASS_TYPE_ID, TEAM_ID, SystemClock().now())


# -- APNs ------------------------------------------------------------------------------------


@dataclass
class Push:
    path: str
    headers: dict[str, str]
    body: bytes
    http_version: str

    @property
    def token(self) -> str:
        return self.path.rsplit("/", 1)[-1]


@dataclass
class FakeApns:
    """Answers like APNs: 200, 410 Unregistered for the tokens in `gone`, or 500
    InternalServerError for the tokens in `fail`. While `hold` is set to an event, every push is
    recorded at once but answered only when the event is set."""

    url: str = ""
    ca_file: Path | None = None
    pushes: list[Push] = field(default_factory=list)
    gone: set[str] = field(default_factory=set)
    fail: set[str] = field(default_factory=set)
    hold: asyncio.Event | None = None
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        token = scope["path"].rsplit("/", 1)[-1]
        self.pushes.append(Push(scope["path"], headers, body, scope["http_version"]))
        self.arrived.set()
        if self.hold is not None:
            await self.hold.wait()
        if token in self.gone:
            status, reply = 410, {"reason": "Unregistered", "timestamp": 1700000000000}
        elif token in self.fail:
            status, reply = 500, {"reason": "InternalServerError"}
        else:
            status, reply = 200, {}
        payload = json.dumps(reply).encode() if reply else b""
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": payload})


async def start_apns(directory: Path, certs: DevCertPaths) -> tuple[FakeApns, asyncio.Task[None]]:
    """A TLS HTTP/2 server that requires a client certificate chaining to the dev root."""
    now = SystemClock().now()
    authority = ca_lib.create_ca("Test APNs CA", now=now)
    server = ca_lib.issue_server_certificate(authority, ["127.0.0.1"], now=now)
    assert server.private_key_pem is not None
    (directory / "apns-ca.pem").write_bytes(authority.to_pem()[0])
    (directory / "apns.pem").write_bytes(server.certificate_pem)
    (directory / "apns.key").write_bytes(server.private_key_pem)
    trusted = directory / "apns-clients.pem"
    trusted.write_bytes(certs.root.read_bytes() + certs.wwdr.read_bytes())
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(100)
    port = sock.getsockname()[1]
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]  # hypercorn owns the socket from here
    config.certfile = str(directory / "apns.pem")
    config.keyfile = str(directory / "apns.key")
    config.ca_certs = str(trusted)
    config.verify_mode = ssl.CERT_REQUIRED
    config.alpn_protocols = ["h2"]
    config.accesslog = None
    config.errorlog = None
    fake = FakeApns(f"https://127.0.0.1:{port}", directory / "apns-ca.pem")
    stop = asyncio.Event()
    task = asyncio.create_task(serve(fake.app, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
    fake.stop = stop  # type: ignore[attr-defined]
    return fake, task


# -- Google ----------------------------------------------------------------------------------


@dataclass
class FakeGoogle:
    """The OAuth token endpoint and loyaltyObject PATCH, checking the service account's JWT."""

    public_key_pem: bytes
    client_email: str
    url: str = ""
    saved: set[str] = field(default_factory=set)
    """Object ids a member has saved: PATCH answers 200 for them, 404 for others."""
    fail: set[str] = field(default_factory=set)
    """Object ids whose PATCH answers 503 (Google having a bad day), saved or not."""
    patches: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    inserted: dict[str, dict[str, dict[str, Any]]] = field(
        default_factory=lambda: {"loyaltyClass": {}, "loyaltyObject": {}}
    )
    """What the gateway created, by kind and id; an inserted object counts as saved."""
    tokens_issued: int = 0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/token", self.token)
        app.router.add_patch("/walletobjects/v1/loyaltyObject/{id}", self.patch)
        app.router.add_post("/walletobjects/v1/{kind}", self.insert)
        return app

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        try:
            claims = jwt.decode(
                str(form["assertion"]),
                self.public_key_pem,
                algorithms=["RS256"],
                audience=f"{self.url}/token",
            )
        except jwt.PyJWTError as exc:
            return web.json_response({"error": "invalid_grant", "detail": str(exc)}, status=400)
        if claims["iss"] != self.client_email or "wallet_object.issuer" not in claims["scope"]:
            return web.json_response({"error": "invalid_grant"}, status=400)
        self.tokens_issued += 1
        token = f"ya29.test-{self.tokens_issued}"
        return web.json_response({"access_token": token, "expires_in": 3600})

    async def insert(self, request: web.Request) -> web.Response:
        if not request.headers.get("authorization", "").startswith("Bearer ya29.test-"):
            return web.json_response({"error": {"code": 401}}, status=401)
        kind, body = request.match_info["kind"], await request.json()
        if kind not in self.inserted:
            return web.json_response({"error": {"code": 404}}, status=404)
        if body["id"] in self.inserted[kind]:
            return web.json_response({"error": {"code": 409}}, status=409)
        self.inserted[kind][body["id"]] = body
        if kind == "loyaltyObject":
            self.saved.add(body["id"])
        return web.json_response(body)

    async def patch(self, request: web.Request) -> web.Response:
        if not request.headers.get("authorization", "").startswith("Bearer ya29.test-"):
            return web.json_response({"error": {"code": 401}}, status=401)
        object_id = request.match_info["id"]
        body = await request.json()
        self.patches.append((object_id, body))
        self.arrived.set()
        if object_id in self.fail:
            return web.json_response({"error": {"code": 503}}, status=503)
        if object_id not in self.saved:
            return web.json_response({"error": {"code": 404}}, status=404)
        return web.json_response({"id": object_id, **body})


def service_account(directory: Path, token_uri: str) -> tuple[Path, bytes]:
    """A service account key file like Google's; returns it and the public key (PEM)."""
    key = rsa.generate_private_key(65537, 2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    path = directory / "service-account.json"
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "coalition-test",
                "private_key_id": "test-key-1",
                "private_key": pem,
                "client_email": "wallet@coalition-test.iam.gserviceaccount.com",
                "token_uri": token_uri,
            }
        )
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return path, public


async def start_google(directory: Path) -> tuple[FakeGoogle, Path, web.AppRunner]:
    runner_holder: list[web.AppRunner] = []
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    key_file, public = service_account(directory, f"{url}/token")
    fake = FakeGoogle(public, "wallet@coalition-test.iam.gserviceaccount.com", url)
    runner = web.AppRunner(fake.app(), access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    runner_holder.append(runner)
    return fake, key_file, runner


# -- the wallet ------------------------------------------------------------------------------


@dataclass
class WalletRig:
    wallet: Wallet
    certs: DevCertPaths
    apns: FakeApns
    google: FakeGoogle


async def wallet_rig(directory: Path, web_url: str) -> AsyncIterator[WalletRig]:
    """A wallet with Apple (dev certificates, local APNs) and Google (fake) both set up."""
    certs = dev_certs(directory)
    apns, apns_task = await start_apns(directory, certs)
    google, key_file, google_runner = await start_google(directory)
    program = Program(
        pass_type_id=PASS_TYPE_ID, team_id=TEAM_ID, web_url=web_url, google_issuer_id=ISSUER_ID
    )
    wallet = Wallet(
        program,
        apple=Apple(
            PassCredentials.load(certs.certificate, certs.key, certs.wwdr),
            ApnsClient(apns.url, tls_context(certs.certificate, certs.key, apns.ca_file)),
        ),
        google=Google(
            GoogleWalletClient(ServiceAccount.from_file(key_file), google.url),
            (web_url,),
        ),
    )
    try:
        yield WalletRig(wallet, certs, apns, google)
    finally:
        await wallet.aclose()
        apns.stop.set()  # type: ignore[attr-defined]
        await apns_task
        await google_runner.cleanup()


# -- the wallet web service ------------------------------------------------------------------


@dataclass
class WalletWeb:
    """A rig whose wallet web service (PassKit and the card page) is served at `base`."""

    rig: WalletRig
    base: str


async def wallet_web(ctx: Any, directory: Path) -> AsyncIterator[WalletWeb]:
    """wallet_rig, with create_web_app(ctx, wallet) listening on the rig's web URL (the port is
    taken first: the wallet needs its public URL before the app exists)."""
    from gateway.entrypoints.web import create_web_app

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        async for rig in wallet_rig(directory, base):
            runner = web.AppRunner(create_web_app(ctx, rig.wallet), access_log=None)
            await runner.setup()
            try:
                await web.SockSite(runner, sock).start()
                yield WalletWeb(rig, base)
            finally:
                await runner.cleanup()
    finally:
        sock.close()
