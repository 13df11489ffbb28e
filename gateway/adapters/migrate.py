"""Schema migrations (Alembic) driven from the gateway's own async engine."""

from __future__ import annotations

import enum
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from gateway.adapters.db import Database

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


class SchemaState(enum.Enum):
    EMPTY = "empty"
    CURRENT = "current"
    OUTDATED = "outdated"
    UNKNOWN = "unknown"  # newer than this code, or not ours


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None, "no migrations shipped"
    return head


async def upgrade(database: Database) -> None:
    async with database.begin() as conn:
        await conn.run_sync(lambda sync: command.upgrade(_config(sync), "head"))


def _state(connection: Connection) -> tuple[SchemaState, str | None]:
    current = MigrationContext.configure(connection).get_current_revision()
    if current is None:
        tables = set(inspect(connection).get_table_names())
        return (SchemaState.EMPTY if not tables else SchemaState.UNKNOWN), None
    script = ScriptDirectory.from_config(_config())
    if current == script.get_current_head():
        return SchemaState.CURRENT, current
    known = {rev.revision for rev in script.walk_revisions()}
    return (SchemaState.OUTDATED if current in known else SchemaState.UNKNOWN), current


async def schema_state(database: Database) -> tuple[SchemaState, str | None]:
    async with database.connect() as conn:
        return await conn.run_sync(_state)
