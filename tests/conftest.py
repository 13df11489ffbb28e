"""Shared fixtures: one database per run (SQLite by default, PostgreSQL when asked) and a real
gRPC server on port 0.

    COALITION_TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test pytest

runs every integration and e2e test against PostgreSQL. Tests marked `postgres` need it; on a
SQLite run they are reported as skipped with the reason, and under CI=true a PostgreSQL run that
cannot reach its database fails instead of skipping.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import text

from coalition.v1 import partners_pb2, partners_pb2_grpc
from gateway.adapters.db import Database, open_database
from gateway.adapters.migrate import upgrade
from gateway.adapters.models import Base
from gateway.clock import FixedClock
from gateway.domain.pii import PiiVault
from gateway.entrypoints.grpc.server import TlsConfig, add_port, create_server
from gateway.service import partners as partner_service
from gateway.service.context import AppContext
from gateway.service.verify import verify

TEST_SECRET_KEY = b"test-secret-key-for-coalition-0123456789abcdef"
DATABASE_ENV = "COALITION_TEST_DATABASE_URL"


def backend() -> str:
    return "postgresql" if os.environ.get(DATABASE_ENV, "").startswith("postgres") else "sqlite"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if backend() == "postgresql":
        return
    skip = pytest.mark.skip(
        reason=f"needs PostgreSQL: run again with {DATABASE_ENV}=postgresql://…"
    )
    for item in items:
        if item.get_closest_marker("postgres"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
async def database(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Database]:
    url = os.environ.get(DATABASE_ENV) or f"sqlite:///{tmp_path_factory.mktemp('db')}/test.db"
    db = open_database(url)
    try:
        if db.dialect == "postgresql":
            async with db.begin() as conn:
                await conn.execute(text("DROP SCHEMA public CASCADE"))
                await conn.execute(text("CREATE SCHEMA public"))
        await upgrade(db)
    except Exception as exc:
        await db.dispose()
        pytest.fail(f"the test database {url} is unreachable: {exc}", pytrace=False)
    yield db
    await db.dispose()


async def _truncate(db: Database) -> None:
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    async with db.begin() as conn:
        if db.dialect == "postgresql":
            await conn.execute(text(f"TRUNCATE {', '.join(tables)} CASCADE"))
        else:
            for table in tables:
                await conn.execute(text(f"DELETE FROM {table}"))


@pytest.fixture
async def ctx(database: Database) -> AsyncIterator[AppContext]:
    """A clean database, a fixed clock and the test secret key; the CA when a test adds it."""
    await _truncate(database)
    # No per-partner rate limit: load and stress tests measure other things; the limiter is
    # proven in tests/reliability/test_limits.py on gateways started with a limit.
    context = AppContext(
        database=database,
        vault=PiiVault(TEST_SECRET_KEY),
        clock=FixedClock(),
        rate_limit_per_s=0,
    )
    yield context
    # Every test leaves a ledger whose invariants hold (what `coalition ledger verify` checks).
    report = await verify(context)
    assert report.ok, report.problems


@pytest.fixture
async def operator_key(ctx: AppContext) -> str:
    async with ctx.database.begin() as conn:
        _, secret = await partner_service.create_api_key(conn, ctx, None, "tests")
    return secret


class Gateway:
    """A started server and what tests need to call it."""

    def __init__(self, ctx: AppContext, target: str, operator_key: str) -> None:
        self.ctx = ctx
        self.target = target
        self.operator_key = operator_key
        self.channel = grpc.aio.insecure_channel(target)
        self.mtls_target = ""

    @staticmethod
    def auth(key: str) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {key}")]

    @property
    def as_operator(self) -> list[tuple[str, str]]:
        return self.auth(self.operator_key)

    async def create_partner(
        self, partner_id: str, kind: str = "HOTEL", **fields: Any
    ) -> tuple[partners_pb2.Partner, str]:
        """Create a partner through the API and return it with a fresh API key."""
        stub = partners_pb2_grpc.PartnerServiceStub(self.channel)
        partner = partners_pb2.Partner(
            display_name=fields.pop("display_name", partner_id.title()),
            type=partners_pb2.PartnerType.Value(f"PARTNER_TYPE_{kind}"),
            base_earn_rate=fields.pop("base_earn_rate", "10"),
            **fields,
        )
        created = await stub.CreatePartner(
            partners_pb2.CreatePartnerRequest(
                request_id=f"create-{partner_id}", partner_id=partner_id, partner=partner
            ),
            metadata=self.as_operator,
        )
        key = await stub.CreateApiKey(
            partners_pb2.CreateApiKeyRequest(
                request_id=f"key-{partner_id}", parent=created.partner.name
            ),
            metadata=self.as_operator,
        )
        return created.partner, key.secret


ServerFactory = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def start_gateway(ctx: AppContext, operator_key: str) -> AsyncIterator[ServerFactory]:
    servers: list[tuple[grpc.aio.Server, Gateway]] = []

    async def start(tls: TlsConfig | None = None, wallet: Any = None) -> Gateway:
        server, port = await create_server("127.0.0.1:0", ctx, tls, wallet)
        mtls_port = None
        if tls is not None and tls.client_ca_pem is not None:
            mtls = replace(tls, require_client_certificate=True)
            mtls_port = add_port(server, "127.0.0.1:0", mtls)
        await server.start()
        gateway = Gateway(ctx, f"127.0.0.1:{port}", operator_key)
        gateway.mtls_target = f"127.0.0.1:{mtls_port}" if mtls_port else ""
        servers.append((server, gateway))
        return gateway

    yield start
    for server, gateway in servers:
        await gateway.channel.close()
        await server.stop(None)


@pytest.fixture
async def gateway(start_gateway: ServerFactory) -> Gateway:
    return await start_gateway()


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]
