"""Partner use cases: the registry, API keys and client certificates."""

from __future__ import annotations

import secrets
from dataclasses import replace
from datetime import UTC

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.adapters import repository as repo
from gateway.adapters.models import ClientCertificateRow, table_of
from gateway.domain import credentials as dc
from gateway.domain import donations, paging, programs
from gateway.domain import partners as dp
from gateway.domain.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    echo,
)
from gateway.service.context import AppContext
from partners import ca as ca_lib

API_KEY_ID_BYTES = 8
UPDATABLE_FIELDS = frozenset(
    {
        "display_name",
        "base_earn_rate",
        "earn_currency_code",
        "settlement_currency_code",
        "webhook_url",
        "authorized_airlines",
        "time_zone",
        "category_rates",
        "earn_rounding",
        "minimum_spend_minor",
        "transaction_cap_points",
        "program",
        "charity",
    }
)
_KEYS = repo.API_KEYS
_CERTS = table_of(ClientCertificateRow)


def partner_not_found(partner_id: str) -> NotFound:
    return NotFound(
        "PARTNER_NOT_FOUND", f"no partner partners/{partner_id}", {"partner": partner_id}
    )


async def _check_airlines(
    conn: AsyncConnection, kind: dp.PartnerType, settings: dp.PartnerSettings
) -> None:
    airlines = list(settings.authorized_airlines)
    if not airlines:
        return
    field = "partner.authorized_airlines"
    if kind is not dp.PartnerType.TRAVEL_AGENCY:
        raise InvalidArgument.on_field(
            field, "AIRLINES_ONLY_FOR_AGENCIES", "only travel agencies act for airlines"
        )
    found = await repo.partner_types(conn, airlines)
    for airline in airlines:
        if found.get(airline) is not dp.PartnerType.AIRLINE:
            raise InvalidArgument.on_field(
                field, "AIRLINE_NOT_FOUND", f"partners/{airline} is not an airline partner"
            )


def _with_program(kind: dp.PartnerType, settings: dp.PartnerSettings) -> dp.PartnerSettings:
    """Airlines always run a program (the default if none is given); nobody else has one."""
    if kind is not dp.PartnerType.AIRLINE:
        if settings.program is not None:
            raise InvalidArgument.on_field(
                "partner.program", "PROGRAM_ONLY_FOR_AIRLINES", "only airlines run a program"
            )
        return settings
    return replace(
        settings, program=programs.validate_program(settings.program or programs.Program())
    )


def _with_charity(kind: dp.PartnerType, settings: dp.PartnerSettings) -> dp.PartnerSettings:
    """Charities always have a profile (an empty one if none is given); nobody else has one."""
    if kind is not dp.PartnerType.CHARITY:
        if settings.charity is not None:
            raise InvalidArgument.on_field(
                "partner.charity", "PROFILE_ONLY_FOR_CHARITIES", "only charities have a profile"
            )
        return settings
    profile = donations.validate_profile(settings.charity or donations.CharityProfile())
    return replace(settings, charity=profile)


def _typed(kind: dp.PartnerType, settings: dp.PartnerSettings) -> dp.PartnerSettings:
    """The settings with the parts only some partner types have checked."""
    return _with_charity(kind, _with_program(kind, dp.validate_settings(settings)))


async def create(
    conn: AsyncConnection,
    ctx: AppContext,
    partner_id: str,
    kind: dp.PartnerType,
    settings: dp.PartnerSettings,
) -> dp.Partner:
    partner_id = dp.parse_partner_id(partner_id)
    settings = _typed(kind, settings)
    await _check_airlines(conn, kind, settings)
    now = ctx.clock.now()
    partner = dp.Partner(partner_id, kind, settings, now, now)
    if not await repo.insert_partner(conn, partner):
        raise AlreadyExists(
            "PARTNER_ALREADY_EXISTS", f"partners/{partner_id} exists", {"partner": partner_id}
        )
    return partner


async def get(conn: AsyncConnection, partner_id: str) -> dp.Partner:
    partner = await repo.get_partner(conn, partner_id)
    if partner is None:
        raise partner_not_found(partner_id)
    return partner


async def update_settings(
    conn: AsyncConnection,
    ctx: AppContext,
    partner_id: str,
    changes: dp.PartnerSettings,
    mask: list[str],
) -> dp.Partner:
    unknown = sorted(set(mask) - UPDATABLE_FIELDS)
    if not mask or unknown:
        raise InvalidArgument.on_field(
            "update_mask",
            "INVALID_UPDATE_MASK",
            "name at least one of "
            + ", ".join(sorted(UPDATABLE_FIELDS))
            + (f"; unknown or immutable: {echo(unknown)}" if unknown else ""),
        )
    partner = await get(conn, partner_id)
    settings = _typed(
        partner.type, replace(partner.settings, **{f: getattr(changes, f) for f in mask})
    )
    await _check_airlines(conn, partner.type, settings)
    updated = replace(partner, settings=settings, update_time=ctx.clock.now())
    await repo.update_partner(conn, updated)
    return updated


async def list_page(
    conn: AsyncConnection, size: int, token: str, kind: dp.PartnerType | None
) -> tuple[list[dp.Partner], str]:
    limit = paging.page_size(size)
    position = paging.decode_token(token, ("t", "id"))
    after = None
    if position:
        after = (paging.time_of(position, "t"), str(position["id"]))
    rows = await repo.list_partners(conn, limit + 1, after, kind)
    page, more = rows[:limit], len(rows) > limit
    last = page[-1] if page else None
    next_token = (
        paging.encode_token({"t": last.create_time.isoformat(), "id": last.id})
        if more and last
        else ""
    )
    return page, next_token


# -- API keys --------------------------------------------------------------------------------


def _api_key(row: object) -> dc.ApiKey:
    return dc.ApiKey(
        id=row.id,  # type: ignore[attr-defined]
        partner_id=row.partner_id,  # type: ignore[attr-defined]
        prefix=row.prefix,  # type: ignore[attr-defined]
        display_name=row.display_name,  # type: ignore[attr-defined]
        create_time=row.create_time,  # type: ignore[attr-defined]
        revoke_time=row.revoke_time,  # type: ignore[attr-defined]
    )


async def create_api_key(
    conn: AsyncConnection, ctx: AppContext, partner_id: str | None, display_name: str = ""
) -> tuple[dc.ApiKey, str]:
    """A new key for a partner (or the operator when partner_id is None) and its secret."""
    if partner_id is not None:
        await get(conn, partner_id)
    if len(display_name) > dp.DISPLAY_NAME_CHARS_MAX:
        raise InvalidArgument.on_field(
            "display_name", "FIELD_TOO_LONG", f"at most {dp.DISPLAY_NAME_CHARS_MAX} characters"
        )
    secret = dc.new_api_key()
    key = dc.ApiKey(
        id=secrets.token_hex(API_KEY_ID_BYTES),
        partner_id=partner_id,
        prefix=dc.display_prefix(secret),
        display_name=display_name,
        create_time=ctx.clock.now(),
    )
    await conn.execute(
        insert(_KEYS).values(
            id=key.id,
            partner_id=partner_id,
            role=(dc.Role.PARTNER if partner_id else dc.Role.OPERATOR).value,
            key_hash=dc.hash_api_key(secret),
            prefix=key.prefix,
            display_name=display_name,
            create_time=key.create_time,
        )
    )
    return key, secret


def parse_api_key_name(name: str) -> tuple[str | None, str]:
    parts = name.split("/")
    if len(parts) == 4 and parts[0] == "partners" and parts[2] == "apiKeys" and parts[3]:
        return parts[1], parts[3]
    if len(parts) == 3 and parts[0] == "operator" and parts[1] == "apiKeys" and parts[2]:
        return None, parts[2]
    raise InvalidArgument.on_field(
        "name", "INVALID_API_KEY_NAME", 'expected "partners/{partner}/apiKeys/{key}"'
    )


async def revoke_api_key(conn: AsyncConnection, ctx: AppContext, name: str) -> dc.ApiKey:
    partner_id, key_id = parse_api_key_name(name)
    owner = _KEYS.c.partner_id.is_(None) if partner_id is None else _KEYS.c.partner_id == partner_id
    row = (await conn.execute(select(_KEYS).where(_KEYS.c.id == key_id, owner))).first()
    if row is None:
        raise NotFound("API_KEY_NOT_FOUND", f"no API key {name}", {"api_key": name})
    key = _api_key(row)
    if key.revoke_time is None:
        key = replace(key, revoke_time=ctx.clock.now())
        await conn.execute(
            update(_KEYS).where(_KEYS.c.id == key_id).values(revoke_time=key.revoke_time)
        )
    return key


async def list_api_keys(
    conn: AsyncConnection, partner_id: str, size: int, token: str
) -> tuple[list[dc.ApiKey], str]:
    await get(conn, partner_id)
    limit = paging.page_size(size)
    position = paging.decode_token(token, ("id",))
    query = (
        select(_KEYS).where(_KEYS.c.partner_id == partner_id).order_by(_KEYS.c.id).limit(limit + 1)
    )
    if position:
        query = query.where(_KEYS.c.id > str(position["id"]))
    keys = [_api_key(r) for r in (await conn.execute(query)).all()]
    page = keys[:limit]
    return page, (paging.encode_token({"id": page[-1].id}) if len(keys) > limit else "")


async def authenticate(conn: AsyncConnection, secret: str) -> dc.Caller | None:
    """The caller an API key stands for, or None if unknown or revoked."""
    if not secret.startswith(dc.API_KEY_PREFIX) or len(secret) > dc.API_KEY_CHARS_MAX:
        return None
    partners_t = repo.PARTNERS
    row = (
        await conn.execute(
            select(_KEYS.c.partner_id, _KEYS.c.role, _KEYS.c.revoke_time, partners_t.c.type)
            .select_from(_KEYS.outerjoin(partners_t, partners_t.c.id == _KEYS.c.partner_id))
            .where(_KEYS.c.key_hash == dc.hash_api_key(secret))
        )
    ).first()
    if row is None or row.revoke_time is not None:
        return None
    return dc.Caller(dc.Role(row.role), row.partner_id, row.type)


async def caller_for_partner(conn: AsyncConnection, partner_id: str) -> dc.Caller | None:
    """The caller a verified client certificate stands for."""
    kind = (await repo.partner_types(conn, [partner_id])).get(partner_id)
    return dc.Caller(dc.Role.PARTNER, partner_id, kind.value) if kind else None


# -- client certificates ---------------------------------------------------------------------


async def issue_certificate(
    conn: AsyncConnection,
    ctx: AppContext,
    partner_id: str,
    csr_pem: bytes | None,
    validity_days: int,
) -> tuple[ca_lib.IssuedCertificate, bytes]:
    """A client certificate for the partner, and the CA certificate (PEM) to trust."""
    await get(conn, partner_id)
    if ctx.ca is None:
        raise FailedPrecondition(
            "CA_NOT_CONFIGURED", "this gateway has no CA: run `coalition ca init` and restart"
        )
    try:
        issued = ca_lib.issue_partner_certificate(
            ctx.ca, partner_id, csr_pem=csr_pem, now=ctx.clock.now(), validity_days=validity_days
        )
    except ca_lib.InvalidCsr as exc:
        raise InvalidArgument.on_field("csr_pem", "INVALID_CSR", str(exc)) from None
    except ca_lib.InvalidValidity as exc:
        raise InvalidArgument.on_field("validity", "INVALID_VALIDITY", str(exc)) from None
    await conn.execute(
        insert(_CERTS).values(
            serial_number=issued.serial_number,
            partner_id=partner_id,
            not_after=issued.not_after.astimezone(UTC),
            create_time=ctx.clock.now(),
        )
    )
    return issued, ctx.ca.to_pem()[0]
