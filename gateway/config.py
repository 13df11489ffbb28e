"""Configuration: flags override environment variables, which override defaults."""

from __future__ import annotations

import math
import os
import secrets
import tomllib
from dataclasses import dataclass
from pathlib import Path

from babel.numbers import is_currency
from sqlalchemy.engine import make_url

from gateway.adapters.db import DATABASE_URL_DEFAULT
from gateway.adapters.notify import Channel, channel_from_url
from gateway.domain.expiry import ExpiryPolicy, ExpiryPolicyError, parse_policy
from gateway.domain.links import PARKED_CLAIM_DAYS_DEFAULT, check_claim_days
from gateway.domain.ratelimit import RATE_LIMIT_PER_S_DEFAULT, RATE_LIMIT_PER_S_MAX
from gateway.domain.tiers import DEFAULT_LADDER, Ladder, LadderError, ladder_from_config
from partners.ca import write_private_file

GRPC_PORT_DEFAULT = 50051
WEB_PORT_DEFAULT = 8080
SECRET_KEY_FILE_SUFFIX = ".secret-key"


class ConfigError(Exception):
    pass


def env(name: str, default: str = "") -> str:
    return os.environ.get(f"COALITION_{name}", default)


def database_url(flag: str | None) -> str:
    return flag or env("DATABASE_URL", DATABASE_URL_DEFAULT)


def secret_key(url: str) -> bytes:
    """COALITION_SECRET_KEY, or for an embedded SQLite database a key file created beside it."""
    configured = env("SECRET_KEY")
    if configured:
        if len(configured) < 32:
            raise ConfigError("COALITION_SECRET_KEY must be at least 32 characters")
        return configured.encode()
    parsed = make_url(url)
    if (
        parsed.get_backend_name() != "sqlite"
        or not parsed.database
        or parsed.database == ":memory:"
    ):
        raise ConfigError(
            "set COALITION_SECRET_KEY (32+ random characters, e.g. `openssl rand -hex 32`): "
            "it protects members' phone numbers and must never change"
        )
    path = Path(parsed.database + SECRET_KEY_FILE_SUFFIX)
    if not path.exists():
        write_private_file(path, secrets.token_hex(32).encode())
    return path.read_bytes().strip()


def tier_ladder() -> Ladder:
    """COALITION_TIERS_FILE (TOML, [[tier]] tables), or the default Blue/Silver/Gold/Platinum.

    Every gateway of a deployment must use the same file: the ladder decides upgrades.
    """
    path = env("TIERS_FILE")
    if not path:
        return DEFAULT_LADDER
    try:
        data = tomllib.loads(Path(path).read_text())
        entries = data.get("tier")
        if not isinstance(entries, list):
            raise LadderError("expected [[tier]] tables")
        return ladder_from_config(entries)
    except (OSError, tomllib.TOMLDecodeError, LadderError) as exc:
        raise ConfigError(f"COALITION_TIERS_FILE {path}: {exc}") from None


def expiry_policy() -> ExpiryPolicy:
    """COALITION_EXPIRY_POLICY ("none", "fixed:MONTHS", "inactivity:MONTHS") and
    COALITION_EXPIRY_REMINDER_DAYS (days before expiry for the reminder; 0 for none)."""
    days = env("EXPIRY_REMINDER_DAYS", "30")
    try:
        if not days.isascii() or not days.isdigit():
            raise ExpiryPolicyError(f"COALITION_EXPIRY_REMINDER_DAYS {days!r} is not a number")
        return parse_policy(env("EXPIRY_POLICY", "none"), int(days))
    except ExpiryPolicyError as exc:
        raise ConfigError(f"expiry settings: {exc}") from None


def parked_claim_days() -> int:
    """COALITION_PARKED_CLAIM_DAYS: days an agency earn for an unlinked airline number waits
    for a member to link it (default 90, at most 365)."""
    raw = env("PARKED_CLAIM_DAYS", str(PARKED_CLAIM_DAYS_DEFAULT))
    try:
        if not raw.isascii() or not raw.isdigit():
            raise ValueError(f"{raw!r} is not a number of days")
        return check_claim_days(int(raw))
    except ValueError as exc:
        raise ConfigError(f"COALITION_PARKED_CLAIM_DAYS: {exc}") from None


def rate_limit_per_s() -> float:
    """COALITION_RATE_LIMIT_PER_S: requests per second each partner may make to one gateway
    process (default 1000, bursts of two seconds' worth); 0 switches the limit off. The
    operator is never limited. N gateways admit up to N times this."""
    raw = env("RATE_LIMIT_PER_S", f"{RATE_LIMIT_PER_S_DEFAULT:g}").strip()
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0 <= value <= RATE_LIMIT_PER_S_MAX:  # NaN and inf fail too
        raise ConfigError(
            f"COALITION_RATE_LIMIT_PER_S={raw!r}: expected a number of requests per second "
            f"from 0 (no limit) to {RATE_LIMIT_PER_S_MAX:g}"
        )
    return value


def settlement_currency() -> str:
    """COALITION_SETTLEMENT_CURRENCY: the netting's base currency (default USD)."""
    code = env("SETTLEMENT_CURRENCY", "USD")
    if not is_currency(code):
        raise ConfigError(
            f"COALITION_SETTLEMENT_CURRENCY={code!r}: expected an ISO 4217 code like USD"
        )
    return code


def notify_channel() -> Channel:
    """COALITION_NOTIFY_URL: where member notifications go ("log:" by default, "file:PATH",
    "smtp://user:password@host:587?from=points@example.com&starttls=true", "smtps://...")."""
    url = env("NOTIFY_URL", "log:")
    try:
        return channel_from_url(url)
    except ValueError as exc:
        raise ConfigError(f"COALITION_NOTIFY_URL: {exc}") from None


@dataclass(frozen=True)
class ServeConfig:
    database_url: str
    host: str
    grpc_port: int
    web_port: int
    log_format: str
    tls_cert: str
    tls_key: str
    client_ca: str
    ca_dir: str
