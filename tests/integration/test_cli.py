"""The `coalition` command as an operator runs it: real processes, real databases.

Each test gets its own database: a SQLite file, or on a PostgreSQL run a fresh database on the
same server (created and dropped here), so the CLI migrates from nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy.engine import make_url

from coalition.v1 import members_pb2, members_pb2_grpc

COMMAND_TIMEOUT_S = 60
SERVE_START_TIMEOUT_S = 30
SECRET = "cli-test-secret-key-0123456789abcdef0123"
DATABASE_ENV = "COALITION_TEST_DATABASE_URL"  # as in tests/conftest.py


@pytest.fixture
async def cli_db(tmp_path: Path) -> AsyncIterator[str]:
    if not os.environ.get(DATABASE_ENV, "").startswith("postgres"):
        yield f"sqlite:///{tmp_path}/cli.db"
        return
    base = make_url(os.environ[DATABASE_ENV])
    name = f"coalition_cli_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(
        user=base.username, host=base.host, port=base.port or 5432, database=base.database
    )
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield base.set(database=name).render_as_string(hide_password=False)
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def env_for(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COALITION_")}
    return env | {"COALITION_DATABASE_URL": url, "COALITION_SECRET_KEY": SECRET}


async def coalition(
    *args: str, url: str, cwd: Path, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway.entrypoints.cli",
        *args,
        cwd=cwd,
        env=env or env_for(url),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), COMMAND_TIMEOUT_S)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_serve_demo_answers_health_and_stops_gracefully(cli_db: str, tmp_path: Path) -> None:
    port, web_port = free_port(), free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway.entrypoints.cli",
        "serve",
        "--demo",
        "--port",
        str(port),
        "--web-port",
        str(web_port),
        "--demo-json",
        "net.json",
        cwd=tmp_path,
        env=env_for(cli_db),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        banner = ""
        async with asyncio.timeout(SERVE_START_TIMEOUT_S):
            while "listening" not in banner:
                line = (await process.stdout.readline()).decode()
                assert line, "serve exited before listening"
                banner += line
        assert "operator" in banner and "grpcurl" in banner
        network = json.loads((tmp_path / "net.json").read_text())
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            hotel_key = network["partners"][0]["api_key"]
            member = network["members"][0]
            found = await members_pb2_grpc.MemberServiceStub(channel).LookupMember(
                members_pb2.LookupMemberRequest(phone_number=member["phone_number"]),
                metadata=[("authorization", f"Bearer {hotel_key}")],
                timeout=5,
            )
            assert found.member.loyalty_number == member["loyalty_number"]
    finally:
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), COMMAND_TIMEOUT_S)
    assert code == 0


async def test_demo_is_idempotent_and_rotates_its_keys(cli_db: str, tmp_path: Path) -> None:
    code, _, err = await coalition("demo", "--json", "first.json", url=cli_db, cwd=tmp_path)
    assert code == 0, err
    code, _, err = await coalition("demo", "--json", "second.json", url=cli_db, cwd=tmp_path)
    assert code == 0, err
    first = json.loads((tmp_path / "first.json").read_text())
    second = json.loads((tmp_path / "second.json").read_text())
    assert set(first) == {"grpc_target", "operator_api_key", "partners", "members"}
    types = {p["type"] for p in second["partners"]}
    assert types == {"HOTEL", "RIDE_SHARE", "AIRLINE", "TRAVEL_AGENCY", "RETAIL", "CHARITY"}
    assert sum(p["type"] == "CHARITY" for p in second["partners"]) == 2
    assert len(second["members"]) >= 20
    # The same network, not a second copy of it...
    assert [m["loyalty_number"] for m in first["members"]] == [
        m["loyalty_number"] for m in second["members"]
    ]
    assert [p["name"] for p in first["partners"]] == [p["name"] for p in second["partners"]]
    # ...with fresh keys each time.
    assert first["operator_api_key"] != second["operator_api_key"]


async def test_ledger_verify_passes_then_catches_corruption(cli_db: str, tmp_path: Path) -> None:
    assert (await coalition("demo", url=cli_db, cwd=tmp_path))[0] == 0
    code, out, _ = await coalition("ledger", "verify", url=cli_db, cwd=tmp_path)
    assert code == 0 and out.startswith("OK"), out

    wrong_key = env_for(cli_db) | {"COALITION_SECRET_KEY": "another-secret-key-0123456789abcdef"}
    code, out, _ = await coalition("ledger", "verify", url=cli_db, cwd=tmp_path, env=wrong_key)
    assert code == 1 and "wrong secret key" in out

    await _execute(
        cli_db,
        "UPDATE members SET loyalty_number = '123456789012' "
        "WHERE id = (SELECT MIN(id) FROM members)",
    )
    code, out, _ = await coalition("ledger", "verify", url=cli_db, cwd=tmp_path)
    assert code == 1 and "fails its check digit" in out


async def test_serve_refuses_a_schema_it_does_not_know(cli_db: str, tmp_path: Path) -> None:
    assert (await coalition("db", "upgrade", url=cli_db, cwd=tmp_path))[0] == 0
    await _execute(cli_db, "UPDATE alembic_version SET version_num = 'from-the-future'")
    code, _, err = await coalition("serve", "--port", "0", url=cli_db, cwd=tmp_path)
    assert code == 2 and "unknown schema" in err and "Traceback" not in err


async def test_bad_database_url_is_a_clear_error(tmp_path: Path) -> None:
    code, _, err = await coalition("db", "upgrade", url="mysql://x@y/z", cwd=tmp_path)
    assert code == 2 and "unsupported database" in err and "Traceback" not in err


async def test_postgres_needs_an_explicit_secret_key(tmp_path: Path) -> None:
    env = env_for("postgresql://postgres@127.0.0.1:5432/test")
    del env["COALITION_SECRET_KEY"]
    code, _, err = await coalition("ledger", "verify", url="", cwd=tmp_path, env=env)
    assert code == 2 and "COALITION_SECRET_KEY" in err


async def _execute(url: str, statement: str) -> None:
    from sqlalchemy import text

    from gateway.adapters.db import open_database

    database = open_database(url)
    try:
        async with database.begin() as conn:
            await conn.execute(text(statement))
    finally:
        await database.dispose()


async def test_ca_init_then_issue_cert_for_a_partner(cli_db: str, tmp_path: Path) -> None:
    from partners.ca import partner_id_from_certificate

    code, _, err = await coalition("ca", "init", "--dir", "ca", url=cli_db, cwd=tmp_path)
    assert code == 0, err
    assert (tmp_path / "ca" / "ca-key.pem").stat().st_mode & 0o777 == 0o600
    again = await coalition("ca", "init", "--dir", "ca", url=cli_db, cwd=tmp_path)
    assert again[0] == 2 and "refusing to replace a CA" in again[2]

    assert (await coalition("demo", url=cli_db, cwd=tmp_path))[0] == 0
    code, _, err = await coalition(
        "partners",
        "issue-cert",
        "swiftride",
        "--ca-dir",
        "ca",
        "--out",
        "certs",
        url=cli_db,
        cwd=tmp_path,
    )
    assert code == 0, err
    certificate = (tmp_path / "certs" / "swiftride.pem").read_bytes()
    assert partner_id_from_certificate(certificate) == "swiftride"
    assert (tmp_path / "certs" / "swiftride-key.pem").stat().st_mode & 0o777 == 0o600

    unknown = await coalition(
        "partners", "issue-cert", "nobody-here", "--ca-dir", "ca", url=cli_db, cwd=tmp_path
    )
    assert unknown[0] != 0 and "Traceback" not in unknown[2]


async def test_serve_refuses_an_outdated_schema_until_upgraded(cli_db: str, tmp_path: Path) -> None:
    from alembic import command

    from gateway.adapters.db import open_database
    from gateway.adapters.migrate import _config

    database = open_database(cli_db)
    try:
        async with database.begin() as conn:
            await conn.run_sync(lambda sync: command.upgrade(_config(sync), "0001"))
    finally:
        await database.dispose()
    code, _, err = await coalition("serve", "--port", "0", url=cli_db, cwd=tmp_path)
    assert code == 2 and "run `coalition db upgrade` first" in err and "Traceback" not in err
    assert (await coalition("db", "upgrade", url=cli_db, cwd=tmp_path))[0] == 0
    code, out, _ = await coalition("ledger", "verify", url=cli_db, cwd=tmp_path)
    assert code == 0, out
