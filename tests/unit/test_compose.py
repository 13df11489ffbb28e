"""Static checks of docker-compose.yml and the Dockerfile (no Docker needed)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"


def _compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _service(name: str) -> dict[str, Any]:
    services = _compose().get("services") or {}
    assert name in services, f"service {name!r} missing from docker-compose.yml"
    service = services[name]
    assert isinstance(service, dict)
    return service


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env if "=" in item)
    return {str(key): str(value) for key, value in env.items()}


def _command(service: dict[str, Any]) -> list[str]:
    command = service.get("command") or []
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def _container_ports(service: dict[str, Any]) -> set[int]:
    ports: set[int] = set()
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            ports.add(int(entry["target"]))
        else:
            ports.add(int(str(entry).split("/")[0].rsplit(":", 1)[-1]))
    return ports


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    return instructions


def test_compose_has_no_version_key() -> None:
    assert "version" not in _compose()


@pytest.mark.parametrize("name", ["postgres", "migrate", "gateway"])
def test_service_exists(name: str) -> None:
    _service(name)


@pytest.mark.parametrize(
    ("dependency", "condition"),
    [("postgres", "service_healthy"), ("migrate", "service_completed_successfully")],
)
def test_gateway_depends_on(dependency: str, condition: str) -> None:
    depends_on = _service("gateway").get("depends_on")
    assert isinstance(depends_on, dict), "gateway.depends_on must use the long form"
    assert depends_on[dependency]["condition"] == condition


@pytest.mark.parametrize("port", [50051, 8080])
def test_gateway_publishes_port(port: int) -> None:
    assert port in _container_ports(_service("gateway"))


@pytest.mark.parametrize("name", ["postgres", "gateway"])
def test_service_has_healthcheck(name: str) -> None:
    healthcheck = _service(name).get("healthcheck")
    assert isinstance(healthcheck, dict)
    assert not healthcheck.get("disable", False)
    assert healthcheck.get("test")


def test_gateway_healthcheck_uses_coalition_health() -> None:
    test = _service("gateway")["healthcheck"]["test"]
    text = test if isinstance(test, str) else " ".join(str(part) for part in test)
    assert "coalition health" in text


def test_gateway_database_url_points_at_postgres_service() -> None:
    url = _environment(_service("gateway"))["COALITION_DATABASE_URL"]
    parts = urlsplit(url)
    assert parts.scheme.startswith("postgresql")
    assert parts.hostname == "postgres"


def test_gateway_requires_phone_hash_key() -> None:
    value = _environment(_service("gateway"))["COALITION_SECRET_KEY"]
    assert value.startswith("${COALITION_SECRET_KEY:?")


def test_migrate_runs_db_upgrade() -> None:
    migrate = _service("migrate")
    assert _command(migrate)[:3] == ["coalition", "db", "upgrade"]
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert str(migrate.get("restart")) == "no"


def test_dockerfile_has_healthcheck() -> None:
    healthchecks = [
        args for keyword, args in _dockerfile_instructions() if keyword == "HEALTHCHECK"
    ]
    assert healthchecks, "Dockerfile has no HEALTHCHECK"
    assert healthchecks[-1].upper() != "NONE"
    assert "coalition health" in healthchecks[-1]


def test_dockerfile_runs_as_non_root_user() -> None:
    users = [args for keyword, args in _dockerfile_instructions() if keyword == "USER"]
    assert users, "Dockerfile has no USER"
    user = users[-1].split(":", 1)[0]
    assert user not in {"root", "0"}
