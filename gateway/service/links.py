"""Linked accounts: one-time codes, link and unlink, lookups by external id, parked earns.

Parking an agency earn and linking its number must not miss each other (an earn parked just
after the link's claim looked would wait forever). Both take a lock on the external id first:
a PostgreSQL advisory lock for the transaction; SQLite runs one writer at a time anyway.
"""

from __future__ import annotations

import hmac
import json
import secrets
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.adapters.models import LinkCodeRow, LinkedAccountRow, ParkedEarnRow, table_of
from gateway.domain import ledger as dl
from gateway.domain import links as dln
from gateway.domain import members as dm
from gateway.domain import paging
from gateway.domain.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from gateway.domain.notices import LINK_CODE
from gateway.domain.tiers import TierStatus
from gateway.service import ledger, outbox, tiers
from gateway.service.context import AppContext

LINKS = table_of(LinkedAccountRow)
CODES = table_of(LinkCodeRow)
PARKED = table_of(ParkedEarnRow)
LINK_ID_BYTES = 8
CODE_ID_BYTES = 8
PARKED_ID_BYTES = 12
_EXTERNAL_PURPOSE = b"linked account"


# -- keys and lookups ------------------------------------------------------------------------


def external_key(ctx: AppContext, partner_id: str, kind: dln.LinkKind, external_id: str) -> str:
    return ctx.vault.lookup_hash("link", partner_id, kind.value, external_id)


async def lock_external(conn: AsyncConnection, key: str) -> None:
    """Serialize every writer of one external id until this transaction ends."""
    if conn.dialect.name == "postgresql":
        await conn.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"), {"key": key}
        )


async def find_member_id(
    conn: AsyncConnection, ctx: AppContext, partner_id: str, kind: dln.LinkKind, external_id: str
) -> str | None:
    """The member the external id is linked to now, if any."""
    key = external_key(ctx, partner_id, kind, external_id)
    return await conn.scalar(
        select(LINKS.c.member_id).where(
            LINKS.c.partner_id == partner_id,
            LINKS.c.kind == kind.value,
            LINKS.c.external_hash == key,
            LINKS.c.unlink_time.is_(None),
        )
    )


async def program_number_of(
    conn: AsyncConnection, ctx: AppContext, member_id: str, airline_id: str
) -> str | None:
    """The member's number in the airline's program, if they linked one."""
    blob = await conn.scalar(
        select(LINKS.c.external_ciphertext).where(
            LINKS.c.member_id == member_id,
            LINKS.c.partner_id == airline_id,
            LINKS.c.kind == dln.LinkKind.PROGRAM.value,
            LINKS.c.unlink_time.is_(None),
        )
    )
    return ctx.vault.decrypt(blob, _EXTERNAL_PURPOSE) if blob is not None else None


def _link(row: Any, ctx: AppContext) -> dln.LinkedAccount:
    return dln.LinkedAccount(
        id=row.id,
        member_id=row.member_id,
        partner_id=row.partner_id,
        kind=dln.LinkKind(row.kind),
        external_id=ctx.vault.decrypt(row.external_ciphertext, _EXTERNAL_PURPOSE),
        create_time=row.create_time,
        unlink_time=row.unlink_time,
    )


# -- one-time codes --------------------------------------------------------------------------


def _code_hash(ctx: AppContext, code_id: str, code: str) -> str:
    return ctx.vault.lookup_hash("link code", code_id, code)


async def request_code(
    conn: AsyncConnection,
    ctx: AppContext,
    scope: str,
    member: dm.Member,
    partner_display_name: str,
    kind: dln.LinkKind,
    account_key: str,
) -> tuple[datetime, str]:
    """Send the member a one-time code for this link; (when it expires, where it went)."""
    if not member.contact.email:
        raise FailedPrecondition(
            "NO_EMAIL_ON_RECORD",
            "the member has no email address to send a code to; the operator can link instead",
            {"member": member.name},
        )
    now = ctx.clock.now()
    hour = now - timedelta(hours=1)
    recent = await conn.execute(
        select(
            func.count(),
            func.count().filter(CODES.c.account_key == account_key),
        ).where(CODES.c.member_id == member.id, CODES.c.create_time > hour)
    )
    for_member, for_account = recent.one()
    if (
        for_account >= dln.LINK_CODES_PER_HOUR_MAX
        or for_member >= dln.LINK_CODES_PER_MEMBER_HOUR_MAX
    ):
        raise FailedPrecondition(
            "TOO_MANY_CODES",
            f"at most {dln.LINK_CODES_PER_HOUR_MAX} codes an hour for one account and "
            f"{dln.LINK_CODES_PER_MEMBER_HOUR_MAX} for one member; use the last one sent",
        )
    code_id, code = secrets.token_hex(CODE_ID_BYTES), dln.new_code()
    expires = now + timedelta(seconds=dln.LINK_CODE_TTL_S)
    await conn.execute(
        insert(CODES).values(
            id=code_id,
            member_id=member.id,
            scope=scope,
            account_key=account_key,
            code_hash=_code_hash(ctx, code_id, code),
            attempts=0,
            expire_time=expires,
            create_time=now,
        )
    )
    what = "airline number" if kind is dln.LinkKind.PROGRAM else "account"
    await outbox.emit(
        conn,
        ctx,
        LINK_CODE,
        member.name,
        {
            "code": code,
            "partner_display_name": partner_display_name,
            "account_kind": what,
            "expire_time": expires.isoformat(),
        },
        member_id=member.id,
    )
    return expires, dln.mask_email(member.contact.email)


async def verify_code(
    conn: AsyncConnection, ctx: AppContext, scope: str, member_id: str, account_key: str, code: str
) -> str | FailedPrecondition:
    """The id of the caller's code for this member and account that matches `code`, or why not.

    Returns the refusal rather than raising it: the caller commits first, so a wrong try
    counts. Every try against the live code (the newest) takes one of its attempts with a
    guarded UPDATE before the comparison, so concurrent guesses are counted too. A used code
    still matches (a retried LinkAccount is answered from its first outcome); LinkAccount
    spends a code exactly once (use_code).
    """
    if not code:
        raise InvalidArgument.on_field(
            "verification_code",
            "MISSING_VERIFICATION_CODE",
            "a partner links with the one-time code RequestLinkCode sent the member",
        )
    now, code = ctx.clock.now(), code.strip()
    rows = (
        await conn.execute(
            select(CODES)
            .where(
                CODES.c.member_id == member_id,
                CODES.c.account_key == account_key,
                CODES.c.scope == scope,
            )
            .order_by(CODES.c.create_time.desc(), CODES.c.id)
            .limit(dln.LINK_CODES_PER_HOUR_MAX)
        )
    ).all()
    for row in rows:
        if row.use_time is not None and hmac.compare_digest(
            row.code_hash, _code_hash(ctx, row.id, code)
        ):
            return str(row.id)  # a replay: LinkAccount answers it or says it was used
    live = rows[0] if rows and rows[0].use_time is None and rows[0].expire_time > now else None
    if live is None:
        return dln.code_refused(
            "VERIFICATION_CODE_EXPIRED", "no live code for this link: request a new one", 0
        )
    tried = await conn.scalar(
        update(CODES)
        .where(CODES.c.id == live.id, CODES.c.attempts < dln.LINK_CODE_ATTEMPTS_MAX)
        .values(attempts=CODES.c.attempts + 1)
        .returning(CODES.c.attempts)
    )
    if tried is None:
        return dln.code_refused(
            "VERIFICATION_CODE_EXPIRED", "too many wrong codes: request a new one", 0
        )
    if hmac.compare_digest(live.code_hash, _code_hash(ctx, live.id, code)):
        return str(live.id)
    left = dln.LINK_CODE_ATTEMPTS_MAX - tried
    return dln.code_refused("INVALID_VERIFICATION_CODE", f"wrong code; {left} tries left", left)


async def use_code(conn: AsyncConnection, ctx: AppContext, code_id: str) -> None:
    used = await conn.execute(
        update(CODES)
        .where(CODES.c.id == code_id, CODES.c.use_time.is_(None))
        .values(use_time=ctx.clock.now())
    )
    if used.rowcount != 1:
        raise FailedPrecondition(
            "VERIFICATION_CODE_USED", "this code was used already: request a new one"
        )


# -- link, unlink, list ----------------------------------------------------------------------


async def link(
    conn: AsyncConnection,
    ctx: AppContext,
    member_id: str,
    partner_id: str,
    kind: dln.LinkKind,
    external_id: str,
) -> tuple[dln.LinkedAccount, list[dl.Transaction]]:
    """Link the account; for a program number, credit what agencies parked for it in time."""
    key = external_key(ctx, partner_id, kind, external_id)
    if kind is dln.LinkKind.PROGRAM:  # one number per airline: serialize the member's links
        await lock_external(conn, ctx.vault.lookup_hash("member program", member_id, partner_id))
    await lock_external(conn, key)
    owner = await find_member_id(conn, ctx, partner_id, kind, external_id)
    if owner is not None:
        raise AlreadyExists(
            "ACCOUNT_ALREADY_LINKED",
            "this account is linked to "
            + ("this member already" if owner == member_id else "another member"),
            {"partner": f"partners/{partner_id}"},
        )
    if kind is dln.LinkKind.PROGRAM and await program_number_of(conn, ctx, member_id, partner_id):
        raise AlreadyExists(
            "PROGRAM_ALREADY_LINKED",
            f"the member has a partners/{partner_id} number linked already; unlink it first",
            {"partner": f"partners/{partner_id}"},
        )
    live = await conn.scalar(
        select(func.count())
        .select_from(LINKS)
        .where(LINKS.c.member_id == member_id, LINKS.c.unlink_time.is_(None))
    )
    if (live or 0) >= dln.LINKS_PER_MEMBER_MAX:
        raise FailedPrecondition(
            "TOO_MANY_LINKS", f"a member has at most {dln.LINKS_PER_MEMBER_MAX} linked accounts"
        )
    account = dln.LinkedAccount(
        id=secrets.token_hex(LINK_ID_BYTES),
        member_id=member_id,
        partner_id=partner_id,
        kind=kind,
        external_id=external_id,
        create_time=ctx.clock.now(),
    )
    try:
        async with conn.begin_nested():
            await conn.execute(
                insert(LINKS).values(
                    id=account.id,
                    member_id=member_id,
                    partner_id=partner_id,
                    kind=kind.value,
                    external_hash=key,
                    external_ciphertext=ctx.vault.encrypt(external_id, _EXTERNAL_PURPOSE),
                    create_time=account.create_time,
                )
            )
    except IntegrityError:  # linked by a concurrent request (SQLite, or no lock taken)
        raise AlreadyExists(
            "ACCOUNT_ALREADY_LINKED", "this account was linked meanwhile", {}
        ) from None
    credited: list[dl.Transaction] = []
    if kind is dln.LinkKind.PROGRAM:
        credited = await claim_parked(conn, ctx, member_id, partner_id, key)
    return account, credited


def parse_link_name(name: str, field: str = "name") -> tuple[str, str]:
    parts = name.split("/")
    if len(parts) != 4 or parts[0] != "members" or parts[2] != "linkedAccounts" or not all(parts):
        raise InvalidArgument.on_field(
            field, "INVALID_LINK_NAME", 'expected "members/{member}/linkedAccounts/{link}"'
        )
    return parts[1], parts[3]


async def unlink(
    conn: AsyncConnection, ctx: AppContext, name: str, partner_id: str | None
) -> dln.LinkedAccount:
    """Unlink; partner_id (None for the operator) may unlink only its own accounts."""
    member_id, link_id = parse_link_name(name)
    query = select(LINKS).where(LINKS.c.id == link_id, LINKS.c.member_id == member_id)
    if partner_id is not None:
        query = query.where(LINKS.c.partner_id == partner_id)
    row = (await conn.execute(query)).first()
    if row is None:
        raise NotFound("LINK_NOT_FOUND", f"no linked account {name}", {"name": name})
    now = ctx.clock.now()
    done = await conn.execute(
        update(LINKS)
        .where(LINKS.c.id == link_id, LINKS.c.unlink_time.is_(None))
        .values(unlink_time=now)
    )
    if done.rowcount != 1:
        raise FailedPrecondition("ALREADY_UNLINKED", f"{name} was unlinked already", {"name": name})
    return _link(row, ctx)


async def list_page(
    conn: AsyncConnection,
    ctx: AppContext,
    member_id: str,
    partner_id: str | None,
    size: int,
    token: str,
    show_unlinked: bool,
) -> tuple[list[dln.LinkedAccount], str]:
    limit = paging.page_size(size)
    position = paging.decode_token(token, ("t", "id"))
    query = select(LINKS).where(LINKS.c.member_id == member_id)
    if partner_id is not None:
        query = query.where(LINKS.c.partner_id == partner_id)
    if not show_unlinked:
        query = query.where(LINKS.c.unlink_time.is_(None))
    if position is not None:
        after = paging.time_of(position, "t")
        if not isinstance(position["id"], str):
            raise paging.invalid_token()
        query = query.where(
            (LINKS.c.create_time > after)
            | ((LINKS.c.create_time == after) & (LINKS.c.id > position["id"]))
        )
    rows = (
        await conn.execute(query.order_by(LINKS.c.create_time, LINKS.c.id).limit(limit + 1))
    ).all()
    page = rows[:limit]
    next_token = (
        paging.encode_token({"t": page[-1].create_time.isoformat(), "id": page[-1].id})
        if len(rows) > limit
        else ""
    )
    return [_link(r, ctx) for r in page], next_token


# -- parked earns ----------------------------------------------------------------------------


def _parked(row: Any, ctx: AppContext) -> dln.ParkedEarn:
    return dln.ParkedEarn(
        id=row.id,
        airline_id=row.airline_id,
        agency_id=row.agency_id,
        number=ctx.vault.decrypt(row.number_ciphertext, _EXTERNAL_PURPOSE),
        points=row.points,
        breakdown=tuple(json.loads(row.breakdown)),
        partner_reference=row.partner_reference,
        occur_time=row.occur_time,
        vest_time=row.vest_time,
        claim_deadline=row.claim_deadline,
        state=dln.ParkedState(row.state),
        create_time=row.create_time,
        member_id=row.member_id,
        claim_transaction_id=row.claim_transaction_id,
    )


async def park(
    conn: AsyncConnection,
    ctx: AppContext,
    *,
    airline_id: str,
    agency_id: str,
    number: str,
    points: int,
    qualifying_points: int,
    breakdown: tuple[dict[str, object], ...],
    reference: str,
    vest_time: datetime | None,
    occur_time: datetime | None,
) -> dln.ParkedEarn:
    """Keep an agency earn for an unlinked number until a member links it."""
    now = ctx.clock.now()
    parked = dln.ParkedEarn(
        id=secrets.token_hex(PARKED_ID_BYTES),
        airline_id=airline_id,
        agency_id=agency_id,
        number=number,
        points=points,
        breakdown=breakdown,
        partner_reference=reference,
        occur_time=occur_time,
        vest_time=vest_time,
        claim_deadline=dln.claim_deadline(now, ctx.parked_claim_days),
        state=dln.ParkedState.PARKED,
        create_time=now,
    )
    await conn.execute(
        insert(PARKED).values(
            id=parked.id,
            airline_id=airline_id,
            agency_id=agency_id,
            number_hash=external_key(ctx, airline_id, dln.LinkKind.PROGRAM, number),
            number_ciphertext=ctx.vault.encrypt(number, _EXTERNAL_PURPOSE),
            points=points,
            qualifying_points=qualifying_points,
            breakdown=json.dumps(list(breakdown)),
            partner_reference=reference,
            occur_time=occur_time,
            vest_time=vest_time,
            claim_deadline=parked.claim_deadline,
            state=parked.state.value,
            create_time=now,
        )
    )
    return parked


async def claim_parked(
    conn: AsyncConnection, ctx: AppContext, member_id: str, airline_id: str, number_key: str
) -> list[dl.Transaction]:
    """Credit the member with every parked earn of this number still within its window.

    The caller holds the number's lock. Each becomes an EARN of the airline, through the
    agency, with the points and breakdown it was parked with.
    """
    now = ctx.clock.now()
    credited: list[dl.Transaction] = []
    while True:
        rows = (
            await conn.execute(
                select(PARKED)
                .where(
                    PARKED.c.airline_id == airline_id,
                    PARKED.c.number_hash == number_key,
                    PARKED.c.state == dln.ParkedState.PARKED.value,
                    PARKED.c.claim_deadline >= now,
                )
                .order_by(PARKED.c.create_time, PARKED.c.id)
                .limit(dln.PARKED_CLAIM_BATCH)
            )
        ).all()
        for row in rows:
            txn, _ = await credit_parked(conn, ctx, member_id, row)
            credited.append(txn)
        if len(rows) < dln.PARKED_CLAIM_BATCH:
            return credited


async def credit_parked(
    conn: AsyncConnection, ctx: AppContext, member_id: str, row: Any
) -> tuple[dl.Transaction, TierStatus]:
    held = await tiers.lock_standing(conn, ctx, member_id)
    held = await tiers.review_member(conn, ctx, member_id, held)
    vest = row.vest_time if row.vest_time and row.vest_time > ctx.clock.now() else None
    txn = await ledger.earn(
        conn,
        ctx,
        row.airline_id,
        member_id,
        row.points,
        tuple(json.loads(row.breakdown)),
        row.partner_reference,
        vest,
        row.occur_time,
        channel_partner_id=row.agency_id,
    )
    claimed = await conn.execute(
        update(PARKED)
        .where(PARKED.c.id == row.id, PARKED.c.state == dln.ParkedState.PARKED.value)
        .values(
            state=dln.ParkedState.CLAIMED.value,
            member_id=member_id,
            claim_transaction_id=txn.id,
            claim_time=ctx.clock.now(),
        )
    )
    assert claimed.rowcount == 1, "the number's lock keeps claims apart"
    standing = await tiers.record_earn(conn, ctx, txn, row.qualifying_points, held)
    return txn, standing


async def cancel_parked(
    conn: AsyncConnection, ctx: AppContext, name: str, partner_id: str | None
) -> dln.ParkedEarn:
    """Cancel a parked earn whole (the booking was cancelled): by its airline, its agency or
    the operator (partner_id None). A claimed one is reversed as the EARN it became."""
    parts = name.split("/")
    if len(parts) != 2 or parts[0] != "parkedEarns" or not parts[1]:
        raise InvalidArgument.on_field(
            "transaction", "INVALID_TRANSACTION_NAME", 'expected "parkedEarns/{id}"'
        )
    query = select(PARKED).where(PARKED.c.id == parts[1])
    if partner_id is not None:
        query = query.where(
            (PARKED.c.airline_id == partner_id) | (PARKED.c.agency_id == partner_id)
        )
    row = (await conn.execute(query)).first()
    if row is None:
        raise NotFound("TRANSACTION_NOT_FOUND", f"no transaction {name}", {"transaction": name})
    await lock_external(conn, row.number_hash)  # a claim of this number finishes first
    done = await conn.execute(
        update(PARKED)
        .where(PARKED.c.id == row.id, PARKED.c.state == dln.ParkedState.PARKED.value)
        .values(state=dln.ParkedState.CANCELLED.value)
    )
    if done.rowcount != 1:
        row = (await conn.execute(select(PARKED).where(PARKED.c.id == row.id))).one()
        state, claimed = row.state, row.claim_transaction_id
        earn = f"members/{row.member_id}/transactions/{claimed}" if claimed else ""
        raise FailedPrecondition(
            "PARKED_EARN_NOT_OPEN",
            f"the parked earn is {str(state).lower()}"
            + (f"; reverse the EARN it became, {earn}, instead" if earn else ""),
            {"transaction": name, "state": str(state), "claim_transaction": earn},
        )
    return replace(_parked(row, ctx), state=dln.ParkedState.CANCELLED)


async def parked_page(
    conn: AsyncConnection,
    ctx: AppContext,
    *,
    airline_id: str | None,
    overdue_only: bool,
    size: int,
    after_id: str = "",
) -> list[dln.ParkedEarn]:
    """Parked earns still waiting (overdue_only: past their claim deadline), by id."""
    query = select(PARKED).where(PARKED.c.state == dln.ParkedState.PARKED.value)
    if airline_id is not None:
        query = query.where(PARKED.c.airline_id == airline_id)
    if overdue_only:
        query = query.where(PARKED.c.claim_deadline < ctx.clock.now())
    if after_id:
        query = query.where(PARKED.c.id > after_id)
    rows = (await conn.execute(query.order_by(PARKED.c.id).limit(size))).all()
    return [_parked(r, ctx) for r in rows]
