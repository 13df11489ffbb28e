"""Real processes for the reliability tests, a TCP proxy that can take the database away, and
what the tests share around them: a seeded network, a client that retries one request with the
same request_id until it has an answer, and an audit of the ledger a run left behind.

    gateway = GatewayProcess(url, workdir)      # `coalition serve` on free ports
    await gateway.start()                       # returns once gRPC health says SERVING
    await gateway.kill()                        # SIGKILL: no drain, no cleanup, mid-write
    await gateway.start()                       # the same ports: clients reconnect by themselves

    proxy = TcpProxy("127.0.0.1", 5432)         # gateway -> proxy -> PostgreSQL
    await proxy.start()
    await proxy.cut("refuse")                   # drop every connection, refuse new ones
    await proxy.restore()

Every process is put in a `processes()` block, which stops it on the way out, so a failing test
leaves no gateway behind; each process writes stdout and stderr to a log file in the test's
directory, appended across restarts, and a failed start shows its tail.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import asyncpg
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from coalition.v1 import common_pb2, points_pb2
from gateway.adapters.db import Database, open_database
from gateway.adapters.migrate import upgrade
from gateway.adapters.models import IdempotencyKeyRow, table_of
from gateway.clock import SystemClock
from gateway.domain import ledger as dl
from gateway.domain.members import ContactDetails
from gateway.domain.partners import PartnerSettings, PartnerType
from gateway.domain.pii import PiiVault
from gateway.service import members as members_service
from gateway.service import partners as partner_service
from gateway.service.context import AppContext
from gateway.service.ledger import BALANCES, POSTINGS, TXNS
from partners.sdk import error_from_rpc

DATABASE_ENV = "COALITION_TEST_DATABASE_URL"  # as in tests/conftest.py
SECRET_KEY = "reliability-secret-key-0123456789abcdef0123"
"""COALITION_SECRET_KEY of every process a test starts (and of the test's own AppContext)."""
START_TIMEOUT_S = 60.0
"""A start that takes longer failed (a cold import of grpc takes a second or two)."""
STOP_TIMEOUT_S = 20.0
"""SIGTERM drains in-flight calls for up to 10 s (SHUTDOWN_GRACE_S); then SIGKILL."""
READY_POLL_S = 0.05
HEALTH_CALL_TIMEOUT_S = 1.0
CLI_TIMEOUT_S = 120.0
LOG_TAIL_CHARS = 4_000
PROXY_READ_BYTES = 64 * 1024
PROXY_REBIND_ATTEMPTS_MAX = 50
PROXY_REBIND_PAUSE_S = 0.05

# The reconnect backoff of client channels: gRPC's default starts at 1 s and grows to 120 s,
# which would measure the channel's patience, not the gateway's recovery.
CLIENT_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]

COALITION = Path(sys.executable).with_name("coalition")
"""The console script an operator runs (installed by `pip install -e .`)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def backend() -> str:
    return "postgresql" if os.environ.get(DATABASE_ENV, "").startswith("postgres") else "sqlite"


def process_env(url: str, **extra: str) -> dict[str, str]:
    """The environment of a `coalition` process: ours, minus any COALITION_ setting, plus the
    database, the secret key and no rate limit (these tests measure crashes, not quotas)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COALITION_")}
    return env | {
        "COALITION_DATABASE_URL": url,
        "COALITION_SECRET_KEY": SECRET_KEY,
        "COALITION_RATE_LIMIT_PER_S": "0",
        **extra,
    }


@contextlib.asynccontextmanager
async def scratch_database(tmp_path: Path, purpose: str) -> AsyncIterator[str]:
    """A database of its own for one test: a SQLite file, or on a PostgreSQL run a fresh
    database `h2_<purpose>_<random>` on the server COALITION_TEST_DATABASE_URL names (created
    here, dropped afterwards), so the processes the test starts share nothing with other runs.
    """
    if backend() != "postgresql":
        yield f"sqlite:///{tmp_path}/{purpose}.db"
        return
    base = make_url(os.environ[DATABASE_ENV])
    name = f"{base.database}_{purpose}_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(
        user=base.username,
        password=base.password,
        host=base.host,
        port=base.port or 5432,
        database=base.database,
    )
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield base.set(database=name).render_as_string(hide_password=False)
        finally:
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def run_cli(*args: str, url: str, cwd: Path) -> tuple[int, str]:
    """Run one `coalition` command to completion; (exit status, stdout + stderr)."""
    process = await asyncio.create_subprocess_exec(
        str(COALITION),
        *args,
        cwd=cwd,
        env=process_env(url),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), CLI_TIMEOUT_S)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, out.decode(errors="replace")


class ProcessFailed(AssertionError):
    pass


class CoalitionProcess(abc.ABC):
    """One long-running `coalition` command that a test can kill and start again."""

    def __init__(self, name: str, args: list[str], url: str, workdir: Path) -> None:
        self.name = name
        self.args = args
        self.url = url
        self.workdir = workdir
        self.log = workdir / f"{name}.log"
        self.process: asyncio.subprocess.Process | None = None
        self.starts = 0
        self.kills = 0
        self.start_times_s: list[float] = []
        """How long each start took, until ready."""

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    @abc.abstractmethod
    async def ready(self) -> bool:
        """Whether the started process serves yet (each kind knows how to ask it)."""

    async def start(self) -> None:
        assert not self.running, f"{self.name} is already running"
        began = time.monotonic()
        with self.log.open("ab") as log:
            log.write(f"\n=== start {self.starts + 1} ===\n".encode())
            log.flush()
            self.process = await asyncio.create_subprocess_exec(
                str(COALITION),
                *self.args,
                cwd=self.workdir,
                env=process_env(self.url),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
            )
        self.starts += 1
        deadline = began + START_TIMEOUT_S
        while not await self.ready():
            if self.process.returncode is not None:
                raise ProcessFailed(f"{self.name} exited with {self.process.returncode}:\n{self}")
            if time.monotonic() > deadline:
                await self.kill()
                raise ProcessFailed(f"{self.name} not ready in {START_TIMEOUT_S:.0f} s:\n{self}")
            await asyncio.sleep(READY_POLL_S)
        self.start_times_s.append(time.monotonic() - began)

    async def kill(self) -> None:
        """SIGKILL, the way a crash or the OOM killer ends a process."""
        if self.process is None:
            return
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
            self.kills += 1
        await self.process.wait()

    async def stop(self) -> int | None:
        """SIGTERM (a graceful stop), then SIGKILL if it does not end in time; the exit code."""
        if self.process is None:
            return None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                await self.kill()
        return self.process.returncode

    def __str__(self) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            text = ""
        return f"--- {self.log} (tail) ---\n{text[-LOG_TAIL_CHARS:]}"


class GatewayProcess(CoalitionProcess):
    """`coalition serve` on ports of its own, the same ports across restarts."""

    def __init__(self, url: str, workdir: Path, name: str = "gateway", worker: bool = False):
        self.port = free_port()
        self.web_port = free_port()
        args = ["serve", "--host", "127.0.0.1", "--port", str(self.port)]
        args += ["--web-port", str(self.web_port)]
        super().__init__(name, [*args, *([] if worker else ["--no-worker"])], url, workdir)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    async def ready(self) -> bool:
        try:
            async with grpc.aio.insecure_channel(self.target) as channel:
                reply = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=HEALTH_CALL_TIMEOUT_S
                )
        except grpc.aio.AioRpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


class WorkerProcess(CoalitionProcess):
    """`coalition worker`: ready once it has printed its banner (it serves no port)."""

    BANNER = b"coalition worker: delivering events"

    def __init__(self, url: str, workdir: Path, name: str = "worker") -> None:
        super().__init__(name, ["worker"], url, workdir)

    async def ready(self) -> bool:
        marker = f"=== start {self.starts} ===".encode()
        text = self.log.read_bytes()
        return self.BANNER in text[text.rfind(marker) :]


@contextlib.asynccontextmanager
async def processes() -> AsyncIterator[list[CoalitionProcess]]:
    """A list to put started processes in; every one is stopped when the block ends."""
    started: list[CoalitionProcess] = []
    try:
        yield started
    finally:
        await asyncio.gather(*(p.stop() for p in started), return_exceptions=True)
        for p in started:
            await p.kill()  # a no-op unless stop() itself failed


# -- the TCP proxy ---------------------------------------------------------------------------

CutMode = Literal["refuse", "blackhole"]


class TcpProxy:
    """Forwards 127.0.0.1:port to an upstream, and can cut the link on command.

    `cut("refuse")`: every open connection is dropped and the port stops listening, so a new
    connection is refused at once (a database server that went down). `cut("blackhole")`:
    open connections are dropped and new ones are accepted but never answered (a network
    partition; only the client's own connect timeout ends the wait). `restore()` forwards again.
    """

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self.mode: CutMode | None = None
        self.accepted = 0
        self.dropped = 0
        self.held = 0
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._restored = asyncio.Event()
        self._restored.set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port or 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def cut(self, mode: CutMode = "refuse") -> None:
        assert self.mode is None, "already cut"
        self.mode = mode
        self._restored.clear()
        if mode == "refuse":
            await self._stop_listening()
        self._drop_all()

    async def restore(self) -> None:
        if self.mode is None:
            return
        if self.mode == "refuse":
            for _ in range(PROXY_REBIND_ATTEMPTS_MAX):  # the port is ours, but may linger
                try:
                    await self.start()
                    break
                except OSError:
                    await asyncio.sleep(PROXY_REBIND_PAUSE_S)
            else:
                raise OSError(f"could not listen on 127.0.0.1:{self.port} again")
        self.mode = None
        self._drop_all()  # blackholed connections: their clients gave up or will now
        self._restored.set()

    async def close(self) -> None:
        self._restored.set()
        await self._stop_listening()
        self._drop_all()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def _drop_all(self) -> None:
        for writer in list(self._links):
            with contextlib.suppress(OSError):
                # SO_LINGER 0: close with a reset, as a dead server's kernel would answer
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                    )
            writer.transport.abort()
            self.dropped += 1
        self._links.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        finally:
            self._tasks.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._links.add(writer)
        if self.mode == "blackhole":
            self.held += 1
            await self._restored.wait()
            self._close(writer)
            return
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            self._close(writer)
            return
        self._links.add(up_writer)
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
        self._close(writer)
        self._close(up_writer)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(PROXY_READ_BYTES):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._close(writer)

    def _close(self, writer: asyncio.StreamWriter) -> None:
        self._links.discard(writer)
        if not writer.transport.is_closing():
            writer.transport.abort()


Predicate = Callable[[], Awaitable[bool]]


async def eventually(
    predicate: Predicate,
    timeout_s: float,
    what: str,
    watch: Sequence[asyncio.Task[Any]] = (),
) -> float:
    """Poll until the predicate holds; how long it took. Fails after timeout_s, or as soon as
    one of the `watch` tasks (the load) has ended: its exception is the failure then."""
    began = time.monotonic()
    while not await predicate():
        for task in watch:
            if task.done():
                task.result()  # raises what ended it
                raise AssertionError(f"{what}: a load task ended early")
        if time.monotonic() - began > timeout_s:
            raise AssertionError(f"{what}: not within {timeout_s:.0f} s")
        await asyncio.sleep(READY_POLL_S)
    return time.monotonic() - began


# -- a seeded network ------------------------------------------------------------------------


def app_context(url: str) -> AppContext:
    """The test's own view of a process's database (same secret key, system clock)."""
    return AppContext(
        database=open_database(url), vault=PiiVault(SECRET_KEY.encode()), clock=SystemClock()
    )


@dataclass
class Network:
    operator_key: str
    partner_keys: dict[str, str]
    members: list[str]
    """Member names, "members/{id}"."""


async def seed(url: str, partners: list[str], members: int, webhook_url: str = "") -> Network:
    """Migrate an empty database and add an operator key, hotels with a key each (and the
    webhook URL, if given) and members with no points, through the service layer."""
    ctx = app_context(url)
    try:
        await upgrade(ctx.database)
        async with ctx.database.begin() as conn:
            _, operator_key = await partner_service.create_api_key(conn, ctx, None, "reliability")
            keys = {}
            for partner_id in partners:
                settings = PartnerSettings(
                    partner_id.title(), base_earn_rate=Decimal(10), webhook_url=webhook_url
                )
                await partner_service.create(conn, ctx, partner_id, PartnerType.HOTEL, settings)
                _, keys[partner_id] = await partner_service.create_api_key(conn, ctx, partner_id)
            names = []
            for number in range(members):
                contact = ContactDetails(f"Member {number}", email=f"m{number}@example.com")
                names.append((await members_service.enroll(conn, ctx, contact)).name)
    finally:
        await ctx.database.dispose()
    return Network(operator_key, keys, names)


def bearer(key: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {key}")]


# -- a client that retries until it has an answer -----------------------------------------

RETRY_PAUSE_S_MIN = 0.02
RETRY_PAUSE_S_MAX = 0.1
"""Between two attempts of one request: short, so a restarted gateway is found at once."""
TRANSPORT_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
"""What a client sees while the gateway is down or dies mid-call: retry, same request_id."""
IN_PROGRESS = "REQUEST_IN_PROGRESS"
"""A duplicate that waited on its twin too long; the gateway says to retry."""


@dataclass(frozen=True)
class Failure:
    """One failed attempt."""

    code: str
    reason: str
    """The ErrorInfo reason; "" when the gateway sent none (it was down)."""
    took_s: float
    at: float
    """When it ended (time.monotonic())."""
    retry_after_s: float | None
    """The RetryInfo delay, if any."""


@dataclass
class Attempted:
    """One logical request and what became of it."""

    method: str
    request_id: str
    member: str = ""
    points: int = 0
    outcome: str = ""
    """"OK", a business refusal's reason (INSUFFICIENT_POINTS), "ABANDONED" (the client gave up
    after a failed attempt), or "CODE REASON" for anything unexpected."""
    transaction: str = ""
    """The transaction's name, when OK."""
    available_after: int | None = None
    attempts: int = 0
    failures: list[Failure] = field(default_factory=list)
    answered_at: float = 0.0
    """When the outcome came (time.monotonic())."""

    @property
    def transaction_id(self) -> str:
        return self.transaction.rpartition("/")[2]


EARN_SHARE = 0.6
"""Of the mixed load, the share that earns; the rest redeems."""
EARN_POINTS = (10, 100)
REDEEM_POINTS = (20, 200)


def earn_or_redeem(
    points: Any, members: list[str], rng: random.Random
) -> tuple[Attempted, Any, Any]:
    """The next request of a mixed load, on a PointsService stub: (its record, the stub
    method, the request). Earns are BONUS actions of exactly the recorded points."""
    member, request_id = rng.choice(members), uuid.uuid4().hex
    if rng.random() < EARN_SHARE:
        record = Attempted("EarnPoints", request_id, member, rng.randint(*EARN_POINTS))
        request: Any = points_pb2.EarnPointsRequest(
            request_id=request_id,
            member=common_pb2.MemberRef(member=member),
            action="BONUS",
            points=record.points,
            partner_reference=request_id,
        )
        return record, points.EarnPoints, request
    record = Attempted("RedeemPoints", request_id, member, rng.randint(*REDEEM_POINTS))
    request = points_pb2.RedeemPointsRequest(
        request_id=request_id,
        member=common_pb2.MemberRef(member=member),
        points=record.points,
        partner_reference=request_id,
    )
    return record, points.RedeemPoints, request


def never() -> bool:
    return False


async def until_answered(
    call: Callable[..., Any],
    request: Any,
    metadata: list[tuple[str, str]],
    record: Attempted,
    *,
    deadline_s: float,
    abandon: Callable[[], bool] = never,
    answers: frozenset[str] = frozenset({"INSUFFICIENT_POINTS"}),
) -> Attempted:
    """Send `request` (always the same, so the same request_id) until the gateway answers it:
    a transaction, or one of the business refusals in `answers`. Transport failures and
    UNAVAILABLE are retried; anything else ends the request with "CODE REASON"."""
    while True:
        record.attempts += 1
        began = time.monotonic()
        try:
            reply = await call(request, metadata=metadata, timeout=deadline_s)
        except grpc.aio.AioRpcError as rpc_err:
            err = error_from_rpc(rpc_err)
            now = time.monotonic()
            record.failures.append(
                Failure(err.code.name, err.reason, now - began, now, err.retry_after_s)
            )
            if err.reason in answers:
                record.outcome, record.answered_at = err.reason, now
                return record
            if err.code not in TRANSPORT_CODES and err.reason != IN_PROGRESS:
                record.outcome = f"{err.code.name} {err.reason}".strip()
                record.answered_at = now
                return record
            if abandon():
                record.outcome, record.answered_at = "ABANDONED", now
                return record
            await asyncio.sleep(random.uniform(RETRY_PAUSE_S_MIN, RETRY_PAUSE_S_MAX))
            continue
        record.outcome, record.answered_at = "OK", time.monotonic()
        record.transaction = reply.transaction.name
        record.available_after = reply.transaction.balance.available_points
        return record


# -- what a run left in the ledger -----------------------------------------------------------

_KEYS = table_of(IdempotencyKeyRow)
_RESPONSES: dict[str, Any] = {
    "EarnPoints": points_pb2.EarnPointsResponse,
    "RedeemPoints": points_pb2.RedeemPointsResponse,
    "AuthorizeRedemption": points_pb2.AuthorizeRedemptionResponse,
    "CaptureRedemption": points_pb2.CaptureRedemptionResponse,
    "VoidRedemption": points_pb2.VoidRedemptionResponse,
}
"""The idempotent methods these tests call, and the response each stores."""


@dataclass(frozen=True)
class Txn:
    id: str
    member_id: str
    type: str
    state: str
    points: int
    open_points: int
    related_id: str | None
    reference: str


@dataclass
class Audit:
    transactions: dict[int, Txn] = field(default_factory=dict)
    """By seq."""
    by_reference: dict[str, list[Txn]] = field(default_factory=lambda: defaultdict(list))
    keys: dict[str, str] = field(default_factory=dict)
    """request_id -> the transaction id its stored response names, or "!REASON" for a stored
    refusal."""
    available: dict[str, int] = field(default_factory=dict)
    """Member id -> materialized available balance."""
    problems: list[str] = field(default_factory=list)
    """Broken invariants: a transaction without postings or whose postings do not sum to zero,
    a balance that is not the sum of its postings, a key without an outcome or naming a
    transaction that is not there, a transaction no key names."""


async def audit(url: str) -> Audit:
    """Read the whole ledger and check, independently of `coalition ledger verify`, that every
    transaction is complete and every balance is the sum of its postings."""
    database = open_database(url)
    try:
        return await _audit(database)
    finally:
        await database.dispose()


async def _audit(database: Database) -> Audit:
    found = Audit()
    async with database.connect() as conn:
        for row in await conn.execute(select(TXNS)):
            txn = Txn(
                row.id,
                row.member_id,
                row.type,
                row.state,
                row.points,
                row.open_points,
                row.related_id,
                row.partner_reference,
            )
            found.transactions[row.seq] = txn
            if txn.reference:
                found.by_reference[txn.reference].append(txn)
        sums: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        accounts: dict[str, int] = defaultdict(int)
        for seq, account, asset, amount in await conn.execute(
            select(
                POSTINGS.c.transaction_seq,
                POSTINGS.c.account,
                POSTINGS.c.asset,
                func.sum(POSTINGS.c.amount),
            ).group_by(POSTINGS.c.transaction_seq, POSTINGS.c.account, POSTINGS.c.asset)
        ):
            sums[seq][asset] += int(amount)
            if asset == dl.POINTS:
                accounts[account] += int(amount)
        balances = (await conn.execute(select(BALANCES))).all()
        keys = (await conn.execute(select(_KEYS))).all()
    for seq, txn in found.transactions.items():
        if seq not in sums and txn.points:
            found.problems.append(f"transaction {txn.id} ({txn.type}) has no postings")
        for asset, total in sums.get(seq, {}).items():
            if total:
                found.problems.append(f"transaction {txn.id}: {asset} postings sum to {total}")
    for row in balances:
        found.available[row.member_id] = row.available
        for kind, materialized in (
            ("available", row.available),
            ("pending", row.pending),
            ("held", row.held),
        ):
            posted = accounts.get(f"member:{row.member_id}:{kind}", 0)
            if materialized != posted:
                found.problems.append(
                    f"members/{row.member_id}: {kind} is {materialized}, postings say {posted}"
                )
    ids = {txn.id for txn in found.transactions.values()}
    named: set[str] = set()
    for key in keys:
        if (key.response is None) == (key.error is None):
            found.problems.append(f"request {key.request_id}: stored without exactly one outcome")
            continue
        if key.error is not None:
            found.keys[key.request_id] = "!" + json.loads(key.error)["reason"]
            continue
        response = _RESPONSES[key.method].FromString(key.response)
        txn_id = response.transaction.name.rpartition("/")[2]
        found.keys[key.request_id] = txn_id
        if txn_id not in ids:
            found.problems.append(f"request {key.request_id}: names {txn_id}, not in the ledger")
        if txn_id in named:
            found.problems.append(f"transaction {txn_id} is the answer of two requests")
        named.add(txn_id)
    for txn in found.transactions.values():
        if txn.id not in named:
            found.problems.append(f"transaction {txn.id} ({txn.type}) answers no request")
    return found
