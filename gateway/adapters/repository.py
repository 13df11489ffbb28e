"""Row <-> domain mapping and the queries the services need (SQLAlchemy Core)."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.adapters.models import (
    ApiKeyRow,
    MemberBalanceRow,
    MemberRow,
    PartnerAirlineRow,
    PartnerRow,
    table_of,
)
from gateway.domain import donations, programs
from gateway.domain.members import ContactDetails, Member
from gateway.domain.partners import Partner, PartnerSettings, PartnerType
from gateway.domain.pii import PiiVault
from gateway.domain.rules import Rounding

MEMBERS = table_of(MemberRow)
PARTNERS = table_of(PartnerRow)
AIRLINES = table_of(PartnerAirlineRow)
API_KEYS = table_of(ApiKeyRow)
BALANCES = table_of(MemberBalanceRow)


# -- members ---------------------------------------------------------------------------------


def _member(row: Any, vault: PiiVault) -> Member:
    phone = vault.decrypt(row.phone_ciphertext) if row.phone_ciphertext else ""
    return Member(
        id=row.id,
        loyalty_number=row.loyalty_number,
        contact=ContactDetails(
            display_name=row.display_name,
            email=row.email,
            phone_number=phone,
            locale=row.locale,
            marketing_consent=row.marketing_consent,
        ),
        tier=row.tier,
        create_time=row.create_time,
        update_time=row.update_time,
        tier_review_time=row.tier_review_time,
    )


def _contact_values(contact: ContactDetails, vault: PiiVault) -> dict[str, Any]:
    phone = contact.phone_number
    return {
        "display_name": contact.display_name,
        "email": contact.email,
        "phone_hash": vault.phone_hash(phone) if phone else None,
        "phone_ciphertext": vault.encrypt(phone) if phone else None,
        "locale": contact.locale,
        "marketing_consent": contact.marketing_consent,
    }


async def insert_member(conn: AsyncConnection, member: Member, vault: PiiVault) -> None:
    await conn.execute(
        insert(MEMBERS).values(
            id=member.id,
            loyalty_number=member.loyalty_number,
            tier=member.tier,
            create_time=member.create_time,
            update_time=member.update_time,
            **_contact_values(member.contact, vault),
        )
    )


async def update_member(conn: AsyncConnection, member: Member, vault: PiiVault) -> None:
    await conn.execute(
        update(MEMBERS)
        .where(MEMBERS.c.id == member.id)
        .values(update_time=member.update_time, **_contact_values(member.contact, vault))
    )


async def phone_taken(conn: AsyncConnection, phone_hash: str, except_id: str = "") -> bool:
    found = await conn.scalar(
        select(MEMBERS.c.id).where(MEMBERS.c.phone_hash == phone_hash, MEMBERS.c.id != except_id)
    )
    return found is not None


async def loyalty_number_taken(conn: AsyncConnection, number: str) -> bool:
    return (
        await conn.scalar(select(MEMBERS.c.id).where(MEMBERS.c.loyalty_number == number))
        is not None
    )


async def find_member(conn: AsyncConnection, vault: PiiVault, **by: str) -> Member | None:
    """By exactly one of id, loyalty_number or phone_hash."""
    ((column, value),) = by.items()
    row = (await conn.execute(select(MEMBERS).where(MEMBERS.c[column] == value))).first()
    return _member(row, vault) if row else None


# -- partners --------------------------------------------------------------------------------


def _partner(row: Any, airlines: tuple[str, ...]) -> Partner:
    return Partner(
        id=row.id,
        type=PartnerType(row.type),
        settings=PartnerSettings(
            display_name=row.display_name,
            base_earn_rate=Decimal(row.base_earn_rate),
            earn_currency_code=row.earn_currency_code,
            settlement_currency_code=row.settlement_currency_code,
            webhook_url=row.webhook_url,
            authorized_airlines=airlines,
            time_zone=row.time_zone,
            category_rates=tuple(
                (category, Decimal(rate))
                for category, rate in json.loads(row.category_rates).items()
            ),
            earn_rounding=Rounding(row.earn_rounding),
            minimum_spend_minor=row.minimum_spend_minor,
            transaction_cap_points=row.transaction_cap_points,
            # Airlines created before programs existed run the default one.
            program=program_from_json(row.program)
            or (programs.Program() if row.type == PartnerType.AIRLINE.value else None),
            charity=charity_from_json(row.charity)
            or (donations.CharityProfile() if row.type == PartnerType.CHARITY.value else None),
        ),
        create_time=row.create_time,
        update_time=row.update_time,
    )


def partner_from_row(row: Any) -> Partner:
    """A partner read by the caller, for what needs no travel agency's airlines."""
    return _partner(row, ())


def _settings_values(settings: PartnerSettings) -> dict[str, Any]:
    return {
        "display_name": settings.display_name,
        "base_earn_rate": str(settings.base_earn_rate),
        "earn_currency_code": settings.earn_currency_code,
        "settlement_currency_code": settings.settlement_currency_code,
        "webhook_url": settings.webhook_url,
        "time_zone": settings.time_zone,
        "category_rates": json.dumps({c: str(r) for c, r in settings.category_rates}),
        "earn_rounding": settings.earn_rounding.value,
        "minimum_spend_minor": settings.minimum_spend_minor,
        "transaction_cap_points": settings.transaction_cap_points,
        "program": program_to_json(settings.program),
        "charity": charity_to_json(settings.charity),
    }


def charity_to_json(profile: donations.CharityProfile | None) -> str:
    if profile is None:
        return "{}"
    return json.dumps({**asdict(profile), "causes": list(profile.causes)})


def charity_from_json(raw: str) -> donations.CharityProfile | None:
    data = json.loads(raw)
    if not data:
        return None
    return donations.CharityProfile(**{**data, "causes": tuple(data["causes"])})


def program_to_json(program: programs.Program | None) -> str:
    if program is None:
        return "{}"
    fmt = program.number_format
    return json.dumps(
        {
            "unit": program.unit,
            "number_format": {
                "min_length": fmt.min_length,
                "max_length": fmt.max_length,
                "charset": fmt.charset.value,
                "check_digit": fmt.check_digit.value,
                "prefix": fmt.prefix,
            },
            "conversion_rate": str(program.conversion_rate),
            "conversion_minimum_points": program.conversion_minimum_points,
        }
    )


def program_from_json(raw: str) -> programs.Program | None:
    data = json.loads(raw)
    if not data:
        return None
    fmt = data["number_format"]
    return programs.Program(
        unit=data["unit"],
        number_format=programs.NumberFormat(
            fmt["min_length"],
            fmt["max_length"],
            programs.Charset(fmt["charset"]),
            programs.CheckDigit(fmt["check_digit"]),
            fmt["prefix"],
        ),
        conversion_rate=Decimal(data["conversion_rate"]),
        conversion_minimum_points=data["conversion_minimum_points"],
    )


async def _airlines_of(conn: AsyncConnection, agency_ids: list[str]) -> dict[str, tuple[str, ...]]:
    if not agency_ids:
        return {}
    rows = await conn.execute(
        select(AIRLINES.c.agency_id, AIRLINES.c.airline_id)
        .where(AIRLINES.c.agency_id.in_(agency_ids))
        .order_by(AIRLINES.c.airline_id)
    )
    found: dict[str, list[str]] = {}
    for agency, airline in rows:
        found.setdefault(agency, []).append(airline)
    return {k: tuple(v) for k, v in found.items()}


async def _set_airlines(conn: AsyncConnection, agency_id: str, airlines: tuple[str, ...]) -> None:
    await conn.execute(delete(AIRLINES).where(AIRLINES.c.agency_id == agency_id))
    if airlines:
        await conn.execute(
            insert(AIRLINES), [{"agency_id": agency_id, "airline_id": a} for a in airlines]
        )


async def insert_partner(conn: AsyncConnection, partner: Partner) -> bool:
    """False if the id is taken."""
    try:
        async with conn.begin_nested():
            await conn.execute(
                insert(PARTNERS).values(
                    id=partner.id,
                    type=partner.type.value,
                    create_time=partner.create_time,
                    update_time=partner.update_time,
                    **_settings_values(partner.settings),
                )
            )
    except IntegrityError:
        return False
    await _set_airlines(conn, partner.id, partner.settings.authorized_airlines)
    return True


async def update_partner(conn: AsyncConnection, partner: Partner) -> None:
    await conn.execute(
        update(PARTNERS)
        .where(PARTNERS.c.id == partner.id)
        .values(update_time=partner.update_time, **_settings_values(partner.settings))
    )
    await _set_airlines(conn, partner.id, partner.settings.authorized_airlines)


async def get_partner(conn: AsyncConnection, partner_id: str) -> Partner | None:
    row = (await conn.execute(select(PARTNERS).where(PARTNERS.c.id == partner_id))).first()
    if row is None:
        return None
    return _partner(row, (await _airlines_of(conn, [partner_id])).get(partner_id, ()))


async def partner_types(conn: AsyncConnection, ids: list[str]) -> dict[str, PartnerType]:
    rows = await conn.execute(select(PARTNERS.c.id, PARTNERS.c.type).where(PARTNERS.c.id.in_(ids)))
    return {pid: PartnerType(kind) for pid, kind in rows}


async def list_partners(
    conn: AsyncConnection,
    limit: int,
    after: tuple[datetime, str] | None,
    kind: PartnerType | None,
) -> list[Partner]:
    """Ordered by (create_time, id); after is the last (create_time, id) seen."""
    query = select(PARTNERS).order_by(PARTNERS.c.create_time, PARTNERS.c.id).limit(limit)
    if kind is not None:
        query = query.where(PARTNERS.c.type == kind.value)
    if after is not None:
        when = after[0]
        query = query.where(
            or_(
                PARTNERS.c.create_time > when,
                and_(PARTNERS.c.create_time == when, PARTNERS.c.id > after[1]),
            )
        )
    rows = (await conn.execute(query)).all()
    airlines = await _airlines_of(conn, [r.id for r in rows])
    return [_partner(r, airlines.get(r.id, ())) for r in rows]
