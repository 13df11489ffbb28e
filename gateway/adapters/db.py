"""The database: URL normalization, engines with the right settings, and schema checks.

A database that cannot be reached (refused, reset, timed out, restarting) surfaces from
`Database.begin()` and `Database.connect()` as `errors.Unavailable` (DATABASE_UNAVAILABLE), so
every caller (the gRPC servicers, the authentication interceptor, the wallet web service)
answers "retry" instead of an internal error; `database_unavailable` classifies the same errors
for code that meets them elsewhere. Every other database error is left as it is.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Table, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from gateway.domain import errors

DATABASE_URL_DEFAULT = "sqlite:///coalition.db"
SQLITE_BUSY_TIMEOUT_MS = 30_000
"""Waiting for another process (a CLI command beside the server) to finish writing."""
SQLITE_POOL_WAIT_S = 60
POSTGRES_POOL_SIZE = 10
POSTGRES_POOL_OVERFLOW = 20
POSTGRES_CONNECT_TIMEOUT_S = 5.0
"""asyncpg waits 60 s by default for a server that does not answer (a network partition): far
past any client's deadline (the SDK's is 10 s). Connecting takes milliseconds when all is well."""
POSTGRES_POOL_WAIT_S = 10.0
"""Waiting for a free pooled connection (SQLAlchemy's default is 30 s); no client waits longer
(the SDK's deadline), so waiting on is work for nobody: answer UNAVAILABLE instead."""
# No pool_pre_ping: it costs every checkout a round trip (three on asyncpg: BEGIN, ";",
# ROLLBACK). A connection found dead mid-use fails its request with UNAVAILABLE, and SQLAlchemy
# then invalidates the whole pool (every older connection is replaced at its next checkout), so
# after an outage the gateway recovers by itself within a request or two per process.

RETRY_AFTER_S_UNAVAILABLE = 1
"""What a client is told to wait before retrying when the database is unreachable."""
DATABASE_UNAVAILABLE = "DATABASE_UNAVAILABLE"
_LOST_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "53300"})
"""admin_shutdown, crash_shutdown, cannot_connect_now, too_many_connections; with every
connection_exception (class 08): the server went away or cannot take us now."""

log = logging.getLogger("coalition.db")

_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}


class DatabaseUrlError(ValueError):
    pass


def upsert(conn: AsyncConnection, table: Table) -> Any:
    """An INSERT of the connection's dialect, which has on_conflict_do_update/_do_nothing
    (PostgreSQL and SQLite spell ON CONFLICT the same; SQLAlchemy has a construct for each)."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


def async_url(raw: str) -> URL:
    """Accept plain sqlite:/// and postgresql:// URLs; pick the async driver ourselves."""
    try:
        url = make_url(raw)
    except Exception as exc:  # sqlalchemy raises ArgumentError for garbage
        raise DatabaseUrlError(f"not a database URL: {raw!r}") from exc
    backend = url.get_backend_name()
    if backend not in _ASYNC_DRIVERS:
        raise DatabaseUrlError(f"unsupported database {backend!r}: use sqlite:/// or postgresql://")
    return url.set(drivername=_ASYNC_DRIVERS[backend])


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver so BEGIN IMMEDIATE and SAVEPOINT work
        # (SQLAlchemy docs, "Serializable isolation / Savepoints / Transactional DDL").
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")  # safe with WAL: no corruption, fast
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def on_begin(connection: Any) -> None:
        # Writers queue for the lock at BEGIN instead of failing on a read-to-write upgrade.
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _lost_connection(exc: BaseException) -> bool:
    """A database error that says the connection (or the server) went away mid-use."""
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        if isinstance(sqlstate, str) and (sqlstate.startswith("08") or sqlstate in _LOST_SQLSTATES):
            return True
        # SQLite's busy timeout ran out: another process held the write lock all along.
        return isinstance(exc, sa_exc.OperationalError) and "database is locked" in str(exc.orig)
    return False


def _unavailable(exc: BaseException) -> errors.Unavailable:
    first_line = next(iter(str(exc).splitlines()), "")  # not the SQL and its parameters
    log.warning("database unavailable: %s: %s", type(exc).__name__, first_line)
    return errors.Unavailable(
        DATABASE_UNAVAILABLE,
        "the database cannot be reached right now; retry shortly (a mutation with the same "
        "request_id)",
        {"retry_after_s": str(RETRY_AFTER_S_UNAVAILABLE)},
    )


def database_unavailable(exc: BaseException) -> errors.Unavailable | None:
    """The Unavailable to answer for an error that means the database is out of reach (a lost
    or invalidated connection, no pooled connection in time), else None."""
    if _lost_connection(exc) or isinstance(exc, sa_exc.TimeoutError):
        return _unavailable(exc)
    return None


@dataclass
class Database:
    engine: AsyncEngine

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        """One transaction: committed when the block ends, rolled back if it raises.

        A commit that fails because the connection was lost raises Unavailable too: the outcome
        is unknown, and a retry with the same request_id finds out (idempotency)."""
        async with self.connect() as conn, conn.begin():
            yield conn

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        """A pooled connection; Unavailable when none can be had or it is lost mid-use."""
        async with contextlib.AsyncExitStack() as stack:
            try:
                conn = await stack.enter_async_context(self.engine.connect())
            except Exception as exc:
                # Nothing was sent: refused, reset, timed out (a blackholed server, a full
                # pool), or the server is starting up or refusing logins. All are "try later".
                raise _unavailable(exc) from exc
            try:
                yield conn
            except sa_exc.DBAPIError as exc:
                if _lost_connection(exc):
                    raise _unavailable(exc) from exc
                raise

    async def dispose(self) -> None:
        await self.engine.dispose()


def open_database(raw_url: str) -> Database:
    url = async_url(raw_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        # One connection: SQLite has one writer anyway, and queueing on the pool is fair and
        # immediate where SQLite's busy handler sleeps and retries (tail latency in seconds).
        engine = create_async_engine(
            url, pool_size=1, max_overflow=0, pool_timeout=SQLITE_POOL_WAIT_S
        )
        _configure_sqlite(engine)
    else:
        engine = create_async_engine(
            url,
            pool_size=POSTGRES_POOL_SIZE,
            max_overflow=POSTGRES_POOL_OVERFLOW,
            pool_timeout=POSTGRES_POOL_WAIT_S,
            connect_args={"timeout": POSTGRES_CONNECT_TIMEOUT_S},
        )
    return Database(engine)
