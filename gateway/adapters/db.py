"""The database: URL normalization, engines with the right settings, and schema checks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Table, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

DATABASE_URL_DEFAULT = "sqlite:///coalition.db"
SQLITE_BUSY_TIMEOUT_MS = 30_000
"""Waiting for another process (a CLI command beside the server) to finish writing."""
SQLITE_POOL_WAIT_S = 60
POSTGRES_POOL_SIZE = 10
POSTGRES_POOL_OVERFLOW = 20

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


@dataclass
class Database:
    engine: AsyncEngine

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        async with self.engine.begin() as conn:
            yield conn

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as conn:
            yield conn

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
            url, pool_size=POSTGRES_POOL_SIZE, max_overflow=POSTGRES_POOL_OVERFLOW
        )
    return Database(engine)
