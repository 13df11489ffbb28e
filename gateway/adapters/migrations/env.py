"""Alembic environment: runs migrations over the same async engine the gateway uses."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from gateway.adapters.db import open_database
from gateway.adapters.models import Base

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite ALTER needs batch mode
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _main() -> None:
    database = open_database(config.get_main_option("sqlalchemy.url") or "")
    try:
        async with database.engine.connect() as conn:
            await conn.run_sync(_run)
            await conn.commit()
    finally:
        await database.dispose()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run `coalition db upgrade`")
if (given := config.attributes.get("connection")) is not None:
    _run(given)  # called from gateway.adapters.migrate inside run_sync
else:
    asyncio.run(_main())
