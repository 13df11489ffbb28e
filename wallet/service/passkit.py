"""Apple's PassKit web service, as use cases (the aiohttp edge is wallet.entrypoints.web).

Apple, "Adding a Web Service to Update Passes": a device registers a pass with its push token
(authenticated by the pass's authenticationToken), asks which of its passes changed since a tag
(authenticated by its own device library id, a secret only the device and we know), fetches
each changed pass, and unregisters when the pass is deleted.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, delete, select
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.adapters.db import upsert
from gateway.domain.errors import InvalidArgument, NotFound, Unauthenticated
from gateway.service.context import AppContext
from wallet.domain import card as dc
from wallet.service import cards
from wallet.service.cards import CARDS, REGISTRATIONS
from wallet.service.updates import DEVICES, drop_unregistered_devices

DEVICE_ID_CHARS_MAX = 128
PUSH_TOKEN_CHARS_MAX = 200
LOG_ENTRIES_MAX = 50
LOG_ENTRY_CHARS_MAX = 1000
UPDATED_SERIALS_MAX = 1000
"""Serials returned by one "updated since" request (a device holds a handful of passes)."""
AUTH_SCHEME = "ApplePass "

_DEVICE_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_PUSH_TOKEN = re.compile(r"^[A-Za-z0-9]{1,200}$")

log = logging.getLogger("coalition.passkit")


def unauthorized() -> Unauthenticated:
    return Unauthenticated("PASS_NOT_AUTHORIZED", "wrong or missing ApplePass authorization")


def check_device_id(device_id: str) -> str:
    if not _DEVICE_ID.fullmatch(device_id):
        raise InvalidArgument.on_field(
            "deviceLibraryIdentifier",
            "INVALID_DEVICE_ID",
            f"1 to {DEVICE_ID_CHARS_MAX} letters, digits, '.', '_' or '-'",
        )
    return device_id


def check_push_token(token: object) -> str:
    if not isinstance(token, str) or not _PUSH_TOKEN.fullmatch(token):
        raise InvalidArgument.on_field(
            "pushToken", "INVALID_PUSH_TOKEN", f"1 to {PUSH_TOKEN_CHARS_MAX} letters or digits"
        )
    return token


def same_secret(supplied: str, expected: str) -> bool:
    """Constant-time comparison; anything not ASCII (even undecodable header bytes) is wrong."""
    return supplied.isascii() and hmac.compare_digest(supplied.encode(), expected.encode())


def check_pass_type(pass_type_id: str) -> str:
    if not dc.is_pass_type_id(pass_type_id):
        raise InvalidArgument.on_field(
            "passTypeIdentifier", "INVALID_PASS_TYPE", "expected pass.{reverse DNS name}"
        )
    return pass_type_id


def body_field(body: bytes, field: str) -> Any:
    """A field of a JSON object body (a push token, log lines)."""
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested past the stack
        raise InvalidArgument.on_field(field, "INVALID_JSON", "the body is not JSON") from None
    if not isinstance(parsed, dict):
        raise InvalidArgument.on_field(field, "INVALID_JSON", "expected a JSON object")
    return parsed.get(field)


async def authorized_card(
    conn: AsyncConnection,
    ctx: AppContext,
    pass_type_id: str,
    serial_number: str,
    authorization: str | None,
) -> cards.CardView:
    """The card a request names, if its ApplePass token is right (401 otherwise)."""
    if not dc.is_serial_number(serial_number):
        raise unauthorized()
    header = authorization or ""
    if not header.startswith(AUTH_SCHEME) or not same_secret(
        header.removeprefix(AUTH_SCHEME), ctx.vault.pass_token(serial_number)
    ):
        raise unauthorized()
    check_pass_type(pass_type_id)
    card = await cards.find(conn, serial_number=serial_number)
    if card is None or card.pass_type_id != pass_type_id:
        raise NotFound("PASS_NOT_FOUND", "no such pass")
    return card


async def register(
    conn: AsyncConnection,
    ctx: AppContext,
    device_id: str,
    pass_type_id: str,
    serial_number: str,
    authorization: str | None,
    body: bytes,
) -> bool:
    """True if the registration is new (201), False if it existed (200). The body (JSON with
    pushToken) is read only once the caller proved it holds the pass."""
    card = await authorized_card(conn, ctx, pass_type_id, serial_number, authorization)
    check_device_id(device_id)
    token = check_push_token(body_field(body, "pushToken"))
    now = ctx.clock.now()
    device = upsert(conn, DEVICES).values(
        device_library_id=device_id, push_token=token, create_time=now, update_time=now
    )
    # APNs tokens change (a restore, a reinstall): the latest registration's token wins.
    await conn.execute(
        device.on_conflict_do_update(
            index_elements=[DEVICES.c.device_library_id],
            set_={"push_token": token, "update_time": now},
        )
    )
    added = await conn.execute(
        upsert(conn, REGISTRATIONS)
        .values(device_library_id=device_id, serial_number=card.serial_number, create_time=now)
        .on_conflict_do_nothing()
    )
    return added.rowcount == 1


async def unregister(
    conn: AsyncConnection,
    ctx: AppContext,
    device_id: str,
    pass_type_id: str,
    serial_number: str,
    authorization: str | None,
) -> None:
    card = await authorized_card(conn, ctx, pass_type_id, serial_number, authorization)
    check_device_id(device_id)
    # The device row first, as register takes it (its upsert) before the registration: the
    # opposite order deadlocked a register and an unregister of the same device on PostgreSQL.
    await conn.execute(
        select(DEVICES.c.device_library_id)
        .where(DEVICES.c.device_library_id == device_id)
        .with_for_update()
    )
    await conn.execute(
        delete(REGISTRATIONS).where(
            REGISTRATIONS.c.device_library_id == device_id,
            REGISTRATIONS.c.serial_number == card.serial_number,
        )
    )
    await drop_unregistered_devices(conn, [device_id])


def parse_tag(raw: str | None) -> int:
    """passesUpdatedSince: the lastUpdated we gave the device. Absent, or not one of ours (a
    device that knew an older server), means "everything": resending is harmless."""
    if raw is None or not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        return 0
    return int(raw)


@dataclass(frozen=True)
class Updated:
    serial_numbers: list[str]
    last_updated: str


# Built once: this is the request every registered device makes after every push.
_UPDATED_SINCE = (
    select(CARDS.c.serial_number, CARDS.c.update_tag)
    .join(REGISTRATIONS, REGISTRATIONS.c.serial_number == CARDS.c.serial_number)
    .where(
        REGISTRATIONS.c.device_library_id == bindparam("device"),
        CARDS.c.pass_type_id == bindparam("pass_type"),
        CARDS.c.update_tag > bindparam("since"),
    )
    .order_by(CARDS.c.update_tag)
    .limit(UPDATED_SERIALS_MAX)
)


async def updated_serials(
    conn: AsyncConnection, device_id: str, pass_type_id: str, since: str | None
) -> Updated | None:
    """The device's passes of this type changed after `since`; None when there are none."""
    check_device_id(device_id)
    check_pass_type(pass_type_id)
    rows = (
        await conn.execute(
            _UPDATED_SINCE,
            {"device": device_id, "pass_type": pass_type_id, "since": parse_tag(since)},
        )
    ).all()
    if not rows:
        return None
    # With more than the cap, the device asks again from the last tag it got.
    return Updated([r.serial_number for r in rows], str(max(r.update_tag for r in rows)))


def log_messages(entries: object) -> int:
    """Devices report problems with our passes here; we log them, bounded."""
    if not isinstance(entries, list):
        raise InvalidArgument.on_field("logs", "INVALID_LOGS", "expected a list of strings")
    shown = 0
    for entry in entries[:LOG_ENTRIES_MAX]:
        if isinstance(entry, str):
            text = "".join(c if c.isprintable() else " " for c in entry[:LOG_ENTRY_CHARS_MAX])
            log.warning("device log: %s", text)
            shown += 1
    return shown
