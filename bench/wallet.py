"""Wallet: passes built and signed per second, and PassKit "list updated serials" requests per
second, each beside a baseline measured in the same run.

    python bench/wallet.py [--database-url URL] [--passes 600] [--requests 4000] [--concurrency 32]

Passes (targets: >= 300/s):
    floor      the PKCS #7 signature alone over a manifest of the same size (cryptography)
    stock      py-pkpass's own Pass.create, which reads and parses the certificate files each time
    gateway    wallet.adapters.pkpass.build_pass with credentials loaded once (what serving uses)

Updated serials (target: >= 2,000 requests/s): the aiohttp servers run in this process, the
client in another (as phones would be), with N requests in flight:
    baseline   an aiohttp handler answering the same JSON without touching the database
    gateway    GET /passkit/v1/devices/{d}/registrations/{type}?passesUpdatedSince=tag on the
               gateway's web app, over a device holding 5 of 1,000 cards

SQLite in a temp dir by default; pass a PostgreSQL URL (its schema is dropped and recreated).
Absolute numbers vary with the machine; compare ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs7

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import harness
from harness import Figure
from py_pkpass import models as pk

from gateway.clock import SystemClock
from gateway.domain.members import ContactDetails
from gateway.domain.pii import PiiVault
from gateway.entrypoints.web import create_web_app
from gateway.service import members as members_service
from gateway.service.context import AppContext
from wallet.adapters.apns import ApnsClient, tls_context
from wallet.adapters.devcerts import make_dev_certs
from wallet.adapters.pkpass import ASSETS_DIR_DEFAULT, PassCredentials, build_pass, load_images
from wallet.config import Apple, Wallet
from wallet.domain import card as dc
from wallet.service import cards, passkit

PASS_TYPE_ID = "pass.org.example.bench"
TEAM_ID = "BENCHTEAM1"
CARDS = 1_000
CARDS_PER_DEVICE = 5
SECRET = b"bench-secret-key-0123456789abcdef0123456789"


def content(n: int) -> dc.CardContent:
    return dc.CardContent(
        member_name=f"Member {n}",
        loyalty_number=f"{n:012d}",
        locale="en",
        balance_points=1_000 + n,
        tier_code="SILVER",
        tier_name="Silver",
        next_tier_name="Gold",
        points_to_next_tier=4_000,
        expiring_points=200,
        expiring_time=SystemClock().now(),
        partners=("Grand Hotel", "SwiftRide", "Aurora Airways"),
    )


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds else float("inf")


def bench_passes(count: int, directory: Path) -> list[tuple[str, float]]:
    certs = make_dev_certs(directory, PASS_TYPE_ID, TEAM_ID, SystemClock().now())
    creds = PassCredentials.load(certs.certificate, certs.key, certs.wwdr)
    images = load_images(ASSETS_DIR_DEFAULT)
    program = dc.Program(pass_type_id=PASS_TYPE_ID, team_id=TEAM_ID)
    manifest = b'{"pass.json": "%s"}' % (b"0" * 40) * 10

    started = time.perf_counter()
    for _ in range(count):
        pkcs7.PKCS7SignatureBuilder().set_data(manifest).add_signer(
            creds.certificate, creds.private_key, hashes.SHA256()
        ).add_certificate(creds.wwdr).sign(
            serialization.Encoding.DER, [pkcs7.PKCS7Options.DetachedSignature]
        )
    floor = rate(count, time.perf_counter() - started)

    started = time.perf_counter()
    for n in range(count):
        stock = pk.Pass(
            pk.StoreCard(),
            passTypeIdentifier=PASS_TYPE_ID,
            organizationName="Coalition",
            teamIdentifier=TEAM_ID,
        )
        stock.serialNumber = f"{n:032x}"
        stock.description = "Loyalty card"
        for name, data in images.items():
            stock.addFile(name, io.BytesIO(data))
        stock.create(str(certs.certificate), str(certs.key), str(certs.wwdr), "")
    stock_rate = rate(count, time.perf_counter() - started)

    started = time.perf_counter()
    for n in range(count):
        build_pass(
            dc.pass_layout(content(n), program),
            program,
            f"{n:032x}",
            "t" * 64,
            "Loyalty card",
            creds,
            images,
        )
    gateway = rate(count, time.perf_counter() - started)
    return [("floor (PKCS #7 only)", floor), ("stock py-pkpass", stock_rate), ("gateway", gateway)]


async def _client(base: str, path: str, count: int, concurrency: int) -> float:
    async with aiohttp.ClientSession(base_url=base) as session:
        queue = iter(range(count))

        async def worker() -> None:
            for _ in queue:
                async with session.get(path) as reply:
                    assert reply.status == 200, reply.status
                    await reply.read()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return rate(count, time.perf_counter() - started)


def _client_process(base: str, path: str, count: int, concurrency: int, out: Any) -> None:
    out.put(asyncio.run(_client(base, path, count, concurrency)))


async def load(base: str, path: str, count: int, concurrency: int) -> float:
    """Requests/s from a client in its own process, as phones would be: the server keeps the
    event loop (and a core) to itself."""
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    client = context.Process(target=_client_process, args=(base, path, count, concurrency, out))
    client.start()
    # The result is small: the child can exit before it is read without blocking on the pipe.
    result = await asyncio.to_thread(out.get)
    await asyncio.to_thread(client.join)
    return float(result)


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


async def bench_serials(url: str, requests: int, concurrency: int, directory: Path) -> list[Any]:
    db = await harness.fresh_database(url)
    ctx = AppContext(database=db, vault=PiiVault(SECRET))
    certs = make_dev_certs(directory / "serials", PASS_TYPE_ID, TEAM_ID, SystemClock().now())
    creds = PassCredentials.load(certs.certificate, certs.key, certs.wwdr)
    wallet = Wallet(dc.Program(pass_type_id=PASS_TYPE_ID, team_id=TEAM_ID))
    apns = ApnsClient("https://127.0.0.1:9", tls_context(certs.certificate, certs.key, None))
    wallet.apple = Apple(creds, apns)  # pushes nothing here
    serials = []
    for n in range(CARDS):
        async with db.begin() as conn:
            member = await members_service.enroll(
                conn, ctx, ContactDetails(display_name=f"Member {n}")
            )
            card = await cards.issue(conn, ctx, wallet, member)
            serials.append(card.serial_number)
    device = "bench-device"
    async with db.begin() as conn:
        for serial in serials[:CARDS_PER_DEVICE]:
            await passkit.register(
                conn,
                ctx,
                device,
                PASS_TYPE_ID,
                serial,
                f"ApplePass {ctx.vault.pass_token(serial)}",
                b'{"pushToken": "0123456789abcdef"}',
            )
        found = await passkit.updated_serials(conn, device, PASS_TYPE_ID, "0")
    assert found is not None and len(found.serial_numbers) == CARDS_PER_DEVICE
    body = {"serialNumbers": found.serial_numbers, "lastUpdated": found.last_updated}
    path = f"/passkit/v1/devices/{device}/registrations/{PASS_TYPE_ID}?passesUpdatedSince=1"

    async def canned(_: web.Request) -> web.Response:
        return web.json_response(body)

    bare = web.Application()
    bare.router.add_get(f"/passkit/v1/devices/{device}/registrations/{PASS_TYPE_ID}", canned)
    bare_runner, bare_url = await serve(bare)
    gateway_runner, gateway_url = await serve(create_web_app(ctx, wallet))
    try:
        await load(bare_url, path, 200, concurrency)  # warm up both
        await load(gateway_url, path, 200, concurrency)
        baseline = await load(bare_url, path, requests, concurrency)
        gateway = await load(gateway_url, path, requests, concurrency)
    finally:
        await bare_runner.cleanup()
        await gateway_runner.cleanup()
        await wallet.aclose()
        await db.dispose()
    return [("baseline (no database)", baseline), ("gateway", gateway)]


def table(title: str, rows: list[tuple[str, float]], unit: str, target: float) -> None:
    base = rows[0][1]
    print(f"\n{title}")
    for name, value in rows:
        print(f"  {name:<24} {value:>10,.0f} {unit}   ratio {value / base:5.2f}")
    print(f"  target {target:,.0f} {unit}: {'met' if rows[-1][1] >= target else 'MISSED'}")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url")
    parser.add_argument("--passes", type=int, default=600)
    parser.add_argument("--requests", type=int, default=4_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--json", type=Path, help="merge the figures into this JSON file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        passes = bench_passes(args.passes, directory)
        table("passes built and signed", passes, "passes/s", 300)
        url = args.database_url or f"sqlite:///{directory}/bench.db"
        rows = await bench_serials(url, args.requests, args.concurrency, directory)
        label = url.split(":")[0]
        table(f"updated serials ({label})", rows, "requests/s", 2_000)
    floor, gateway = passes[0][1], passes[-1][1]
    bare, served = rows[0][1], rows[-1][1]
    harness.write_json(
        args.json,
        "wallet",
        [
            Figure(
                "wallet",
                "passes built and signed/s",
                gateway,
                "passes/s",
                floor,
                "PKCS #7 signature alone",
                ">= 300/s",
                gateway >= 300,
            ),
            Figure(
                "wallet",
                f"{label}: PassKit list updated serials req/s (n={args.concurrency})",
                served,
                "req/s",
                bare,
                "bare aiohttp",
                ">= 2,000/s",
                served >= 2_000,
            ),
        ],
    )


if __name__ == "__main__":
    asyncio.run(main())
