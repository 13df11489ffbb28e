"""The `coalition` command."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.adapters.db import Database, DatabaseUrlError, open_database
from gateway.adapters.migrate import SchemaState, head_revision, schema_state, upgrade
from gateway.adapters.notify import Channel
from gateway.clock import SystemClock
from gateway.config import (
    GRPC_PORT_DEFAULT,
    WEB_PORT_DEFAULT,
    ConfigError,
    database_url,
    env,
    expiry_policy,
    notify_channel,
    parked_claim_days,
    rate_limit_per_s,
    secret_key,
    settlement_currency,
    tier_ladder,
)
from gateway.domain.errors import CoalitionError
from gateway.domain.pii import PiiVault
from gateway.entrypoints import (
    demo,
    donations_cli,
    logs,
    ops_cli,
    program_cli,
    submit_cli,
    wallet_cli,
    worker,
)
from gateway.entrypoints.grpc.server import SHUTDOWN_GRACE_S, TlsConfig, add_port, create_server
from gateway.entrypoints.web import create_web_app
from gateway.service.context import AppContext
from gateway.service.verify import verify
from partners import ca as ca_lib
from settlement.entrypoints import cli as settlement_cli
from wallet.config import Wallet

CA_DIR_DEFAULT = "coalition-ca"
CA_CERT_FILE = "ca.pem"
CA_KEY_FILE = "ca-key.pem"
HEALTH_TIMEOUT_S_DEFAULT = 5.0

log = logging.getLogger("coalition")


class CliError(Exception):
    """A message for the operator; printed without a traceback, exit status 2."""


# -- shared ----------------------------------------------------------------------------------


def _open(url: str) -> Database:
    try:
        return open_database(url)
    except DatabaseUrlError as exc:
        raise CliError(str(exc)) from None


async def _ready_database(url: str, migrate_empty: bool) -> Database:
    database = _open(url)
    try:
        state, revision = await schema_state(database)
    except Exception as exc:
        await database.dispose()
        raise CliError(f"cannot reach the database {url}: {exc}") from None
    if state is SchemaState.EMPTY and migrate_empty:
        log.info("empty database: creating the schema (revision %s)", head_revision())
        await upgrade(database)
    elif state is SchemaState.EMPTY:
        await database.dispose()
        raise CliError("the database has no schema yet: run `coalition db upgrade`")
    elif state is SchemaState.OUTDATED:
        await database.dispose()
        raise CliError(
            f"the database schema is at revision {revision} but this gateway needs "
            f"{head_revision()}: run `coalition db upgrade` first"
        )
    elif state is SchemaState.UNKNOWN:
        await database.dispose()
        raise CliError(
            f"the database has an unknown schema (revision {revision}): it is newer than this "
            "gateway, or not a Coalition database"
        )
    return database


def _load_ca(ca_dir: str) -> ca_lib.CertificateAuthority | None:
    directory = Path(ca_dir)
    cert, key = directory / CA_CERT_FILE, directory / CA_KEY_FILE
    if not (cert.exists() and key.exists()):
        return None
    return ca_lib.CertificateAuthority.load(cert.read_bytes(), key.read_bytes())


async def _context(url: str, migrate_empty: bool, ca_dir: str = "") -> AppContext:
    try:
        vault = PiiVault(secret_key(url))
        ladder = tier_ladder()
        expiry = expiry_policy()
        claim_days = parked_claim_days()
        base_currency = settlement_currency()
        rate_limit = rate_limit_per_s()
    except (ConfigError, ValueError) as exc:
        raise CliError(str(exc)) from None
    database = await _ready_database(url, migrate_empty)
    ca = _load_ca(ca_dir or env("CA_DIR", CA_DIR_DEFAULT))
    return AppContext(
        database=database,
        vault=vault,
        clock=SystemClock(),
        ca=ca,
        ladder=ladder,
        expiry=expiry,
        parked_claim_days=claim_days,
        base_currency=base_currency,
        rate_limit_per_s=rate_limit,
    )


def _with_context(
    command: Callable[[AppContext, argparse.Namespace], Awaitable[int]],
) -> Callable[[argparse.Namespace], Awaitable[int]]:
    """A command that needs a migrated database, with usage errors printed plainly."""

    async def run(args: argparse.Namespace) -> int:
        ctx = await _context(database_url(args.database_url), migrate_empty=False)
        try:
            return await command(ctx, args)
        except (program_cli.UsageError, ops_cli.UsageError) as exc:
            raise CliError(str(exc)) from None
        finally:
            await ctx.database.dispose()

    return run


def _tls(args: argparse.Namespace) -> TlsConfig | None:
    cert = args.tls_cert or env("TLS_CERT")
    key = args.tls_key or env("TLS_KEY")
    client_ca = args.client_ca or env("CLIENT_CA")
    if not cert and not key:
        if client_ca:
            raise CliError("a client CA needs TLS: set --tls-cert and --tls-key too")
        return None
    if not (cert and key):
        raise CliError("TLS needs both --tls-cert and --tls-key")
    try:
        return TlsConfig(
            Path(cert).read_bytes(),
            Path(key).read_bytes(),
            Path(client_ca).read_bytes() if client_ca else None,
        )
    except OSError as exc:
        raise CliError(f"cannot read a TLS file: {exc}") from None


# -- serve -----------------------------------------------------------------------------------


async def _serve(args: argparse.Namespace) -> int:
    tls = _tls(args)
    channel = None if args.no_worker else _channel()  # checked before anything starts
    ctx = await _context(database_url(args.database_url), migrate_empty=True)
    host = args.host or env("HOST", "127.0.0.1")
    grpc_port = (
        args.port if args.port is not None else int(env("GRPC_PORT", str(GRPC_PORT_DEFAULT)))
    )
    web_port = (
        args.web_port if args.web_port is not None else int(env("WEB_PORT", str(WEB_PORT_DEFAULT)))
    )
    wallet = _wallet(f"http://{host}:{web_port}", args.demo)
    server, port = await create_server(f"{host}:{grpc_port}", ctx, tls, wallet)
    mtls_port = args.mtls_port if args.mtls_port is not None else int(env("MTLS_PORT") or 0)
    if mtls_port:
        if tls is None or tls.client_ca_pem is None:
            raise CliError("--mtls-port needs --tls-cert, --tls-key and --client-ca")
        mtls_port = add_port(
            server, f"{host}:{mtls_port}", replace(tls, require_client_certificate=True)
        )
    if args.demo:
        network = await demo.seed(ctx, f"{host}:{port}")
        if wallet.configured:
            network["card_page_url"] = await demo.issue_card(ctx, wallet, network)
        _print_demo(network, args.demo_json)
    for note in wallet.notes:
        log.info("%s", note)
    runner = web.AppRunner(create_web_app(ctx, wallet), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, web_port).start()
    await server.start()
    log.info(
        "gRPC on %s:%d (%s), HTTP on %s:%d",
        host,
        port,
        "TLS" if tls else "plaintext",
        host,
        web_port,
    )
    mtls = f", mTLS {host}:{mtls_port}" if mtls_port else ""
    print(
        f"coalition gateway listening: gRPC {host}:{port}{mtls}, HTTP {host}:{web_port}", flush=True
    )

    stop = _stop_on_signals()
    background = (
        None
        if channel is None
        else asyncio.create_task(worker.run(ctx, channel, stop, wallet=wallet))
    )
    await stop.wait()
    log.info("shutting down: draining in-flight calls for up to %.0f s", SHUTDOWN_GRACE_S)
    await server.stop(SHUTDOWN_GRACE_S)
    if background is not None:
        await background
    await runner.cleanup()
    await wallet.aclose()
    await ctx.database.dispose()
    return 0


def _wallet(web_url_default: str, demo: bool) -> Wallet:
    try:
        return wallet_cli.open_wallet(web_url_default, make_dev_certs_if_missing=demo)
    except wallet_cli.WalletSetupError as exc:
        raise CliError(str(exc)) from None


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def _channel() -> Channel:
    try:
        return notify_channel()
    except ConfigError as exc:
        raise CliError(str(exc)) from None


async def _worker(args: argparse.Namespace) -> int:
    channel = _channel()
    ctx = await _context(database_url(args.database_url), migrate_empty=False)
    print(f"coalition worker: delivering events (member notifications: {channel.name})", flush=True)
    wallet = _wallet(env("WALLET_URL", f"http://127.0.0.1:{WEB_PORT_DEFAULT}"), demo=False)
    try:
        await worker.run(ctx, channel, _stop_on_signals(), wallet=wallet)
    finally:
        await wallet.aclose()
        await ctx.database.dispose()
    return 0


def _print_demo(network: dict[str, Any], json_path: str | None) -> None:
    print("Demo network ready. Keys (shown once; rerun `coalition demo` for fresh ones):")
    print(f"  operator            {network['operator_api_key']}")
    for p in network["partners"]:
        print(f"  {p['name']:<30} {p['type']:<14} {p['api_key']}")
    print(
        f"{len(network['members'])} members, e.g. {network['members'][0]['display_name']} "
        f"(loyalty number {network['members'][0]['loyalty_number']})."
    )
    print("Try:\n" + demo.example_call(network), flush=True)
    if network.get("card_page_url"):
        print(f"Their wallet card: {network['card_page_url']}")
    if json_path:
        Path(json_path).write_text(json.dumps(network, indent=2))
        print(f"wrote {json_path}")


async def _demo(args: argparse.Namespace) -> int:
    ctx = await _context(database_url(args.database_url), migrate_empty=True)
    try:
        target = args.grpc_target or f"127.0.0.1:{env('GRPC_PORT', str(GRPC_PORT_DEFAULT))}"
        _print_demo(await demo.seed(ctx, target), args.json)
    finally:
        await ctx.database.dispose()
    return 0


# -- operations ------------------------------------------------------------------------------


async def _db_upgrade(args: argparse.Namespace) -> int:
    logging.getLogger("alembic.runtime.migration").setLevel(logging.INFO)  # show each step
    database = _open(database_url(args.database_url))
    try:
        await upgrade(database)
        state, revision = await schema_state(database)
    finally:
        await database.dispose()
    print(f"database schema at revision {revision} ({state.value})")
    return 0


async def _ledger_verify(args: argparse.Namespace) -> int:
    ctx = await _context(database_url(args.database_url), migrate_empty=False)
    try:
        report = await verify(ctx)
    finally:
        await ctx.database.dispose()
    for problem in report.problems:
        print(f"FAIL {problem}")
    checked = ", ".join(f"{n} {what}" for what, n in report.checked.items())
    print(("OK " if report.ok else "FAILED ") + (f"checked {checked}" if checked else ""))
    return 0 if report.ok else 1


async def _ledger_vest(args: argparse.Namespace) -> int:
    """Vest due pending earns and release expired holds, in bounded batches."""
    from gateway.service import ledger

    ctx = await _context(database_url(args.database_url), migrate_empty=False)
    total = 0
    try:
        while True:
            async with ctx.database.begin() as conn:
                settled = await ledger.settle_due(conn, ctx)
            total += settled
            if settled < ledger.SETTLE_BATCH_ROWS:
                break
    finally:
        await ctx.database.dispose()
    print(f"settled {total} due transactions (vested earns and expired holds)")
    return 0


def _ca_init(args: argparse.Namespace) -> int:
    directory = Path(args.dir or env("CA_DIR", CA_DIR_DEFAULT))
    if (directory / CA_KEY_FILE).exists():
        raise CliError(f"{directory / CA_KEY_FILE} exists; refusing to replace a CA")
    directory.mkdir(parents=True, exist_ok=True)
    now = SystemClock().now()
    authority = ca_lib.create_ca(now=now)
    cert_pem, key_pem = authority.to_pem()
    (directory / CA_CERT_FILE).write_bytes(cert_pem)
    ca_lib.write_private_file(directory / CA_KEY_FILE, key_pem)
    server = ca_lib.issue_server_certificate(authority, args.hostname, now=now)
    (directory / "server.pem").write_bytes(server.certificate_pem)
    assert server.private_key_pem is not None
    ca_lib.write_private_file(directory / "server-key.pem", server.private_key_pem)
    print(f"CA and a server certificate for {', '.join(args.hostname)} written to {directory}/")
    print(
        f"serve with: --tls-cert {directory}/server.pem --tls-key {directory}/server-key.pem "
        f"--client-ca {directory}/{CA_CERT_FILE}"
    )
    return 0


async def _issue_cert(args: argparse.Namespace) -> int:
    from gateway.service import partners as partner_service

    ctx = await _context(database_url(args.database_url), migrate_empty=False, ca_dir=args.ca_dir)
    out = Path(args.out)
    try:
        key_pem, csr_pem = ca_lib.make_csr(f"partners/{args.partner}")
        async with ctx.database.begin() as conn:
            issued, ca_pem = await partner_service.issue_certificate(
                conn, ctx, args.partner, csr_pem, args.days
            )
    finally:
        await ctx.database.dispose()
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.partner}.pem").write_bytes(issued.certificate_pem)
    ca_lib.write_private_file(out / f"{args.partner}-key.pem", key_pem)
    (out / "coalition-ca.pem").write_bytes(ca_pem)
    print(
        f"certificate {issued.serial_number} for partners/{args.partner}, valid until "
        f"{issued.not_after:%Y-%m-%d}, written to {out}/"
    )
    return 0


async def _operator_key(args: argparse.Namespace) -> int:
    from gateway.service import partners as partner_service

    ctx = await _context(database_url(args.database_url), migrate_empty=False)
    try:
        async with ctx.database.begin() as conn:
            key, secret = await partner_service.create_api_key(conn, ctx, None, args.label)
    finally:
        await ctx.database.dispose()
    print(f"{key.name}: {secret}\n(shown once; stored only as a hash)")
    return 0


async def _health(args: argparse.Namespace) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    target = args.target or f"127.0.0.1:{env('GRPC_PORT', str(GRPC_PORT_DEFAULT))}"
    async with grpc.aio.insecure_channel(target) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout
            )
        except grpc.aio.AioRpcError as exc:
            print(f"{target}: {exc.code().name} {exc.details()}")
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{target}: {status}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


# -- parser ----------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="coalition", description="Coalition loyalty gateway")
    parser.add_argument("--log-format", choices=("text", "json"), default=None)
    sub = parser.add_subparsers(dest="command", required=True)

    def with_db(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--database-url", help="default: $COALITION_DATABASE_URL or sqlite")
        return p

    serve = with_db(sub.add_parser("serve", help="run the gateway"))
    serve.add_argument("--host")
    serve.add_argument("--port", type=int, help=f"gRPC port (default {GRPC_PORT_DEFAULT})")
    serve.add_argument("--web-port", type=int, help=f"HTTP port (default {WEB_PORT_DEFAULT})")
    serve.add_argument("--demo", action="store_true", help="seed the demo network first")
    serve.add_argument("--demo-json", help="with --demo: write the seeded network here")
    serve.add_argument("--tls-cert")
    serve.add_argument("--tls-key")
    serve.add_argument("--client-ca", help="the CA whose partner certificates --mtls-port accepts")
    serve.add_argument("--mtls-port", type=int, help="a port that requires client certificates")
    serve.add_argument("--log-format", choices=("text", "json"), default=None)
    serve.add_argument(
        "--no-worker", action="store_true", help="leave deliveries and sweeps to `coalition worker`"
    )
    serve.set_defaults(run=_serve)

    demo_p = with_db(sub.add_parser("demo", help="seed the demo network (idempotent)"))
    demo_p.add_argument("--json", help="write the seeded network to this file")
    demo_p.add_argument("--grpc-target", help="address printed in the example call")
    demo_p.set_defaults(run=_demo)

    db = sub.add_parser("db", help="database schema").add_subparsers(dest="db", required=True)
    with_db(db.add_parser("upgrade", help="apply migrations")).set_defaults(run=_db_upgrade)

    ledger = sub.add_parser("ledger", help="ledger tools").add_subparsers(
        dest="ledger", required=True
    )
    with_db(ledger.add_parser("verify", help="check every invariant")).set_defaults(
        run=_ledger_verify
    )

    with_db(
        ledger.add_parser("vest", help="vest due earns and release expired holds")
    ).set_defaults(run=_ledger_vest)

    ca = sub.add_parser("ca", help="the coalition CA").add_subparsers(dest="ca", required=True)
    init = ca.add_parser("init", help="create the CA and a gateway server certificate")
    init.add_argument("--dir", help=f"default: $COALITION_CA_DIR or {CA_DIR_DEFAULT}")
    init.add_argument(
        "--hostname",
        action="append",
        default=None,
        help="server certificate name (repeatable; default localhost, 127.0.0.1)",
    )
    init.set_defaults(run=_ca_init)

    partners = sub.add_parser("partners", help="partner tools").add_subparsers(
        dest="partners", required=True
    )
    cert = with_db(partners.add_parser("issue-cert", help="issue a client certificate"))
    cert.add_argument("partner", help="partner id")
    cert.add_argument("--ca-dir", default="")
    cert.add_argument("--out", default=".")
    cert.add_argument("--days", type=int, default=ca_lib.CLIENT_CERT_VALIDITY_DAYS_DEFAULT)
    cert.set_defaults(run=_issue_cert)

    operator = sub.add_parser("operator", help="operator credentials").add_subparsers(
        dest="operator", required=True
    )
    key = with_db(operator.add_parser("create-key", help="create an operator API key"))
    key.add_argument("--label", default="")
    key.set_defaults(run=_operator_key)

    program_cli.add_commands(sub, with_db, _with_context)
    ops_cli.add_commands(sub, {"ledger": ledger, "partners": partners}, with_db, _with_context)
    submit_cli.add_command(partners)
    donations_cli.add_commands(sub, with_db, _with_context)
    wallet_cli.add_commands(sub, with_db, _with_context)
    settlement_cli.add_commands(sub, with_db, _with_context)

    worker = with_db(
        sub.add_parser("worker", help="deliver events and run the sweeps, without serving")
    )
    worker.set_defaults(run=_worker)

    health = sub.add_parser("health", help="ask a gateway's gRPC health service")
    health.add_argument("--target")
    health.add_argument("--service", default="")
    health.add_argument("--timeout", type=float, default=HEALTH_TIMEOUT_S_DEFAULT)
    health.set_defaults(run=_health)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logs.configure(args.log_format or env("LOG_FORMAT", "text"))
    if getattr(args, "hostname", "unset") is None:
        args.hostname = ["localhost", "127.0.0.1"]
    try:
        result = args.run(args)
        return int(asyncio.run(result) if asyncio.iscoroutine(result) else result)
    except (CliError, CoalitionError, submit_cli.SubmitError) as exc:
        print(f"coalition: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
