"""Member use cases: enroll, read, update and find members."""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.adapters import repository as repo
from gateway.domain import members as dm
from gateway.domain.errors import AlreadyExists, InvalidArgument, NotFound, echo
from gateway.service import cards, ledger
from gateway.service.context import AppContext

LOYALTY_NUMBER_ATTEMPTS_MAX = 8
"""Draws of a fresh random number; 10^11 numbers make a second collision vanishingly rare."""
UPDATABLE_FIELDS = frozenset(
    {"display_name", "email", "phone_number", "locale", "marketing_consent"}
)


def member_not_found(hint: str) -> NotFound:
    return NotFound("MEMBER_NOT_FOUND", f"no member {hint}", {"member": hint})


async def _check_phone_free(
    conn: AsyncConnection, ctx: AppContext, contact: dm.ContactDetails, member_id: str = ""
) -> None:
    if contact.phone_number and await repo.phone_taken(
        conn, ctx.vault.phone_hash(contact.phone_number), member_id
    ):
        raise AlreadyExists(
            "PHONE_NUMBER_TAKEN",
            "another member already uses this phone number",
            {"field": "member.phone_number"},
        )


async def enroll(
    conn: AsyncConnection, ctx: AppContext, contact: dm.ContactDetails, region: str = ""
) -> dm.Member:
    contact = dm.validate_contact(contact, region)
    await _check_phone_free(conn, ctx, contact)
    for _ in range(LOYALTY_NUMBER_ATTEMPTS_MAX):
        number = dm.new_loyalty_number()
        if not await repo.loyalty_number_taken(conn, number):
            break
    else:
        raise RuntimeError("could not draw a free loyalty number")
    now = ctx.clock.now()
    member = dm.Member(dm.new_member_id(), number, contact, ctx.ladder.base.code, now, now)
    await repo.insert_member(conn, member, ctx.vault)
    await ledger.create_balance(conn, member.id)
    return member


async def get(
    conn: AsyncConnection, ctx: AppContext, name: str, field_path: str = "name"
) -> dm.Member:
    member = await repo.find_member(conn, ctx.vault, id=dm.parse_member_name(name, field_path))
    if member is None:
        raise member_not_found(name)
    return member


async def update(
    conn: AsyncConnection,
    ctx: AppContext,
    name: str,
    changes: dm.ContactDetails,
    mask: list[str],
    region: str = "",
) -> dm.Member:
    unknown = sorted(set(mask) - UPDATABLE_FIELDS)
    if not mask or unknown:
        raise InvalidArgument.on_field(
            "update_mask",
            "INVALID_UPDATE_MASK",
            "name at least one of "
            + ", ".join(sorted(UPDATABLE_FIELDS))
            + (f"; unknown: {echo(unknown)}" if unknown else ""),
        )
    member = await get(conn, ctx, name)
    merged = replace(member.contact, **{f: getattr(changes, f) for f in mask})
    contact = dm.validate_contact(merged, region)
    await _check_phone_free(conn, ctx, contact, member.id)
    updated = replace(member, contact=contact, update_time=ctx.clock.now())
    await repo.update_member(conn, updated, ctx.vault)
    if updated.contact.display_name != member.contact.display_name or (
        updated.contact.locale != member.contact.locale
    ):
        await cards.mark_if_carded(conn, member.id)  # the card shows the name, in the language
    return updated


async def lookup(
    conn: AsyncConnection,
    ctx: AppContext,
    kind: str,
    value: str,
    region: str = "",
    field_prefix: str = "",
) -> dm.Member:
    """Find by "member" (resource name), "loyalty_number" or "phone_number".

    field_prefix names where the identifier sits in the request ("member.") for errors.
    """
    if kind == "member":
        return await get(conn, ctx, value, field_prefix + kind)
    if kind == "loyalty_number":
        number = dm.parse_loyalty_number(value, field_prefix + kind)
        found = await repo.find_member(conn, ctx.vault, loyalty_number=number)
        hint = f"with loyalty number {number}"
    elif kind == "phone_number":
        phone = dm.parse_phone_number(value, field_prefix + kind, region)
        found = await repo.find_member(conn, ctx.vault, phone_hash=ctx.vault.phone_hash(phone))
        hint = "with this phone number"
    else:
        raise InvalidArgument.on_field(
            field_prefix.rstrip(".") or "member",
            "MISSING_MEMBER_REF",
            "set one of member, loyalty_number, phone_number",
        )
    if found is None:
        raise member_not_found(hint)
    return found
