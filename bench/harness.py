"""What every benchmark shares: databases, seeding, gateway processes, load loops, tables, JSON.

The gateway under test always runs as its own process (`coalition serve`), as in production, so
its CPU and memory are its own and the load generator's are not counted against it; baselines
run the same way. Figures are single runs on whatever machine this is: compare the ratios.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import insert, text  # noqa: E402

from gateway.adapters.db import Database, open_database  # noqa: E402
from gateway.adapters.migrate import upgrade  # noqa: E402
from gateway.adapters.models import MemberBalanceRow, MemberRow, table_of  # noqa: E402
from gateway.clock import SystemClock  # noqa: E402
from gateway.domain import members as dm  # noqa: E402
from gateway.domain.partners import PartnerSettings, PartnerType  # noqa: E402
from gateway.domain.pii import PiiVault  # noqa: E402
from gateway.service import partners as partner_service  # noqa: E402
from gateway.service.context import AppContext  # noqa: E402

SECRET_KEY = "bench-secret-key-0123456789abcdef-0123"
"""The gateway process and the seeding code must share it (phone hashes, API key hashes)."""
SEED_BATCH_ROWS = 20_000
GATEWAY_START_S_MAX = 60.0
PROCESS_OUTPUT_LINES_KEPT = 200


# -- databases -------------------------------------------------------------------------------


def database_urls(postgres_url: str | None, tmp: Path) -> list[tuple[str, str]]:
    """(label, url) for every backend to measure: SQLite always, PostgreSQL when given."""
    urls = [("sqlite", f"sqlite:///{tmp}/bench.db")]
    if postgres_url:
        urls.append(("postgresql", postgres_url))
    return urls


async def fresh_database(url: str) -> Database:
    """An empty, migrated database: a PostgreSQL schema is dropped and recreated."""
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    database = open_database(url)
    if database.dialect == "postgresql":
        async with database.begin() as conn:
            await conn.execute(text("DROP SCHEMA public CASCADE"))
            await conn.execute(text("CREATE SCHEMA public"))
    await upgrade(database)
    return database


def context(database: Database) -> AppContext:
    return AppContext(database, PiiVault(SECRET_KEY.encode()), SystemClock())


# -- seeding ---------------------------------------------------------------------------------


@dataclass
class Network:
    keys: dict[str, str] = field(default_factory=dict)
    """partner id -> API key"""
    numbers: list[str] = field(default_factory=list)
    """loyalty numbers of the seeded members"""


async def seed_partners(ctx: AppContext, count: int, network: Network) -> None:
    async with ctx.database.begin() as conn:
        for i in range(count):
            partner_id = f"bench-hotel-{i:03d}"
            await partner_service.create(
                conn,
                ctx,
                partner_id,
                PartnerType.HOTEL,
                PartnerSettings(f"Bench Hotel {i}", base_earn_rate=Decimal(10)),
            )
            _, network.keys[partner_id] = await partner_service.create_api_key(
                conn, ctx, partner_id
            )


async def seed_members(ctx: AppContext, count: int, network: Network, keep: int = 10_000) -> None:
    """`count` members straight into their tables, in batches (enrolling a million one by one
    through the service would take longer than the benchmark). Keeps `keep` numbers, spread
    over the whole range, for the load to use."""
    members, balances = table_of(MemberRow), table_of(MemberBalanceRow)
    now = datetime.now(UTC)
    stride = max(1, count // keep)
    taken: set[str] = set()
    done = 0
    while done < count:
        rows, balance_rows = [], []
        for i in range(done, min(count, done + SEED_BATCH_ROWS)):
            number = dm.new_loyalty_number()
            while number in taken:
                number = dm.new_loyalty_number()
            taken.add(number)
            member_id = dm.new_member_id()
            rows.append(
                {
                    "id": member_id,
                    "loyalty_number": number,
                    "display_name": f"Member {i}",
                    "email": "",
                    "phone_hash": None,
                    "phone_ciphertext": None,
                    "locale": "en",
                    "marketing_consent": False,
                    "tier": ctx.ladder.base.code,
                    "create_time": now,
                    "update_time": now,
                }
            )
            balance_rows.append({"member_id": member_id, "available": 0, "pending": 0, "held": 0})
            if i % stride == 0 and len(network.numbers) < keep:
                network.numbers.append(number)
        async with ctx.database.begin() as conn:
            await conn.execute(insert(members), rows)
            await conn.execute(insert(balances), balance_rows)
        done += len(rows)
    if ctx.database.dialect == "postgresql":
        async with ctx.database.connect() as conn:
            await conn.execute(text("ANALYZE"))


# -- processes -------------------------------------------------------------------------------


def rss_kib(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "COALITION_SECRET_KEY": SECRET_KEY,
            "COALITION_RATE_LIMIT_PER_S": "0",  # a benchmark is not a partner to throttle
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra or {})
    return env


@dataclass
class Process:
    proc: subprocess.Popen[str]
    port: int
    output: collections.deque[str] = field(
        default_factory=lambda: collections.deque(maxlen=PROCESS_OUTPUT_LINES_KEPT)
    )
    """The last lines the process printed (its log), shown when a benchmark fails."""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_kib(self) -> int:
        return rss_kib(self.proc.pid)


def _start(argv: list[str], pattern: str, env: dict[str, str]) -> Process:
    proc = subprocess.Popen(
        argv,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + GATEWAY_START_S_MAX
    seen = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        found = re.search(pattern, line)
        if found:
            process = Process(proc, int(found.group(1)))
            # Keep draining its output so a chatty process never blocks on a full pipe.
            threading.Thread(target=process.output.extend, args=(proc.stdout,), daemon=True).start()
            return process
    proc.kill()
    raise RuntimeError(f"{argv[0]} did not start:\n{''.join(seen[-30:])}")


def _tail_on_failure(process: Process) -> None:
    print(f"--- last output of {process.proc.args[2:4]}:", file=sys.stderr)
    print("".join(process.output), file=sys.stderr)


@contextmanager
def gateway_process(url: str, extra_env: dict[str, str] | None = None) -> Iterator[Process]:
    """`coalition serve` on free ports, without the background worker (deliveries are not the
    request path being measured)."""
    argv = [
        sys.executable,
        "-m",
        "gateway.entrypoints.cli",
        "serve",
        "--database-url",
        url,
        "--port",
        "0",
        "--web-port",
        "0",
        "--no-worker",
    ]
    process = _start(argv, r"gRPC [\d.]+:(\d+)", _env(extra_env))
    try:
        yield process
    except BaseException:
        _tail_on_failure(process)
        raise
    finally:
        _stop(process)


@contextmanager
def echo_process(response: bytes) -> Iterator[Process]:
    """bench/echo_server.py: the bare gRPC stack answering `response` to every call."""
    with tempfile.NamedTemporaryFile(suffix=".bin") as canned:
        canned.write(response)
        canned.flush()
        argv = [sys.executable, str(ROOT / "bench" / "echo_server.py"), canned.name]
        process = _start(argv, r"listening on (\d+)", _env())
        try:
            yield process
        finally:
            _stop(process)


def _stop(process: Process) -> None:
    if process.proc.poll() is None:
        process.proc.send_signal(signal.SIGTERM)
        try:
            process.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.proc.kill()
            process.proc.wait()


# -- load ------------------------------------------------------------------------------------


@dataclass
class Stats:
    name: str
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    errors: int
    error_codes: dict[str, int] = field(default_factory=dict)


async def load(
    name: str,
    call: Callable[[int], Awaitable[object]],
    seconds: float,
    concurrency: int,
    warmup_s: float = 0.5,
) -> Stats:
    """`concurrency` workers calling `call(i)` back to back for `seconds` (after a warm-up)."""
    counter = iter(range(10**12))
    latencies: list[float] = []
    codes: dict[str, int] = {}
    recording = False
    stop_at = 0.0

    async def worker() -> None:
        while not recording or time.perf_counter() < stop_at:
            started = time.perf_counter()
            try:
                await call(next(counter))
            except Exception as exc:  # counted and shown: a benchmark must not hide failures
                code = getattr(exc, "code", None)
                label = code().name if callable(code) else type(exc).__name__
                codes[label] = codes.get(label, 0) + 1
            if recording:
                latencies.append(time.perf_counter() - started)

    async def clock() -> tuple[float, float]:
        nonlocal recording, stop_at
        await asyncio.sleep(warmup_s)
        began = time.perf_counter()
        stop_at = began + seconds
        recording = True
        await asyncio.sleep(seconds)
        return began, time.perf_counter()

    timer = asyncio.create_task(clock())
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    began, _ = await timer
    elapsed = max(time.perf_counter() - began, 1e-9)
    latencies.sort()

    def pct(p: float) -> float:
        if not latencies:
            return float("nan")
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1e3

    return Stats(
        name,
        len(latencies),
        round(elapsed, 3),
        len(latencies) / elapsed,
        pct(0.50),
        pct(0.95),
        pct(0.99),
        sum(codes.values()),
        codes,
    )


def run_id() -> str:
    return secrets.token_hex(4)


# -- output ----------------------------------------------------------------------------------


@dataclass
class Figure:
    """One measured figure beside its baseline from the same run, and the target it answers."""

    benchmark: str
    name: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    target: str = ""
    met: bool | None = None
    notes: str = ""

    @property
    def ratio(self) -> float | None:
        if self.baseline in (None, 0):
            return None
        return self.value / self.baseline  # type: ignore[operator]


def _number(value: float) -> str:
    if abs(value) < 10:
        return f"{value:.3f}"
    return f"{value:,.1f}" if abs(value) < 1000 else f"{value:,.0f}"


def print_table(title: str, figures: list[Figure]) -> None:
    print(f"\n{title}")
    header = f"{'figure':<62}{'value':>12} {'unit':<9}{'baseline':>12}{'ratio':>8}  target"
    print(header)
    print("-" * len(header))
    for f in figures:
        base = _number(f.baseline) if f.baseline is not None else "-"
        ratio = f"{f.ratio:.3f}" if f.ratio is not None else "-"
        verdict = {True: "met", False: "MISSED", None: ""}[f.met]
        target = f"{f.target} {verdict}".strip()
        print(f"{f.name:<62}{_number(f.value):>12} {f.unit:<9}{base:>12}{ratio:>8}  {target}")


def write_json(path: Path | None, benchmark: str, figures: list[Figure], **extra: Any) -> None:
    """Merge this benchmark's figures into the JSON results file (one key per benchmark)."""
    if path is None:
        return
    data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    data[benchmark] = {
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "figures": [{**asdict(f), "ratio": f.ratio} for f in figures],
        **extra,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


@asynccontextmanager
async def opened(url: str) -> AsyncIterator[AppContext]:
    database = await fresh_database(url)
    try:
        yield context(database)
    finally:
        await database.dispose()
