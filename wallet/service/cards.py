"""Wallet cards: issuing them, reading them, and rebuilding their content from the ledger.

A card's stored content is what its pass shows and what its Last-Modified and update tag refer
to. It changes only here (`store`), which takes the next update tag and moves update_time to a
later whole second than before, because HTTP dates (If-Modified-Since) have one-second
resolution: two versions in one second would otherwise look unchanged to a device.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.adapters import repository as repo
from gateway.adapters.db import upsert
from gateway.adapters.models import (
    PartnerRow,
    WalletRegistrationRow,
    WalletTagRow,
    table_of,
)
from gateway.domain import members as dm
from gateway.domain.errors import FailedPrecondition, NotFound
from gateway.domain.partners import PartnerType
from gateway.service import cards as marks
from gateway.service import ledger, lots, tiers
from gateway.service.context import AppContext
from wallet.adapters.pkpass import build_pass
from wallet.config import Wallet
from wallet.domain import card as dc

CARDS = marks.CARDS
TAGS = table_of(WalletTagRow)
REGISTRATIONS = table_of(WalletRegistrationRow)
PARTNERS = table_of(PartnerRow)
TAG_ROW_ID = 1


@dataclass(frozen=True)
class CardView:
    member_id: str
    serial_number: str
    pass_type_id: str
    content: dc.CardContent
    update_tag: int
    pushed_tag: int
    create_time: datetime
    update_time: datetime
    registered_devices: int = 0


@dataclass(frozen=True)
class IssuedCard:
    card: CardView
    pkpass: bytes
    """Empty when Apple Wallet is not set up."""
    google_save_url: str
    """Empty when Google Wallet is not set up."""
    page_url: str


def not_configured() -> FailedPrecondition:
    return FailedPrecondition(
        "WALLET_NOT_CONFIGURED",
        "this gateway has neither an Apple pass certificate nor a Google Wallet issuer set up",
    )


async def current_content(
    conn: AsyncConnection, ctx: AppContext, member: dm.Member
) -> dc.CardContent:
    """What the member's card should show now, from the ledger."""
    balance = await ledger.balance_of(conn, member.id)
    standing = await tiers.status(conn, ctx, member.id)
    expiring = await lots.next_expiry(conn, ctx.expiry, member.id, balance.available)
    partners = await conn.scalars(
        select(PARTNERS.c.display_name)
        .where(PARTNERS.c.type != PartnerType.CHARITY.value)
        .order_by(PARTNERS.c.display_name)
        .limit(dc.PARTNERS_SHOWN_MAX)
    )
    return dc.CardContent(
        member_name=member.contact.display_name,
        loyalty_number=member.loyalty_number,
        locale=member.contact.locale,
        balance_points=balance.available,
        tier_code=standing.tier.code,
        tier_name=standing.tier.display_name,
        next_tier_name=standing.next_tier.display_name if standing.next_tier else "",
        points_to_next_tier=standing.points_to_next_tier,
        expiring_points=expiring.points if expiring else 0,
        expiring_time=expiring.time if expiring else None,
        partners=tuple(partners),
    )


async def next_tag(conn: AsyncConnection) -> int:
    """The next update tag. The counter row stays locked until commit, so tags commit in order."""
    stmt = upsert(conn, TAGS).values(id=TAG_ROW_ID, value=1)
    tag = await conn.scalar(
        stmt.on_conflict_do_update(
            index_elements=[TAGS.c.id], set_={"value": TAGS.c.value + 1}
        ).returning(TAGS.c.value)
    )
    assert tag is not None
    return int(tag)


def later_second(previous: datetime, now: datetime) -> datetime:
    """now, or the start of the second after `previous` if now is not in a later second."""
    floor = previous.replace(microsecond=0)
    return now if now >= floor + timedelta(seconds=1) else floor + timedelta(seconds=1)


def _view(r: Any) -> CardView:
    return CardView(
        member_id=r.member_id,
        serial_number=r.serial_number,
        pass_type_id=r.pass_type_id,
        content=dc.CardContent.from_json(r.content),
        update_tag=r.update_tag,
        pushed_tag=r.pushed_tag,
        create_time=r.create_time,
        update_time=r.update_time,
    )


async def store(
    conn: AsyncConnection,
    ctx: AppContext,
    card: CardView,
    content: dc.CardContent,
    tag: int | None = None,
) -> CardView:
    """Save new content under a new tag (or the batch's, taken in this transaction) and
    Last-Modified; pushed_tag stays behind until the devices have been told."""
    if tag is None:
        tag = await next_tag(conn)
    when = later_second(card.update_time, ctx.clock.now())
    await conn.execute(
        update(CARDS)
        .where(CARDS.c.member_id == card.member_id)
        .values(content=content.to_json(), update_tag=tag, update_time=when)
    )
    return replace(card, content=content, update_tag=tag, update_time=when)


async def issue(
    conn: AsyncConnection, ctx: AppContext, wallet: Wallet, member: dm.Member
) -> CardView:
    """Create the member's card, or bring it up to date; devices holding it are pushed.
    The pass and links are `rendered` after the transaction: signing holds no lock."""
    if not wallet.configured:
        raise not_configured()
    # Flag the balance row first: it serializes this with the member's earns and burns (which
    # read the flag back to mark the card) and with a concurrent first issue.
    await conn.execute(
        update(repo.BALANCES).where(repo.BALANCES.c.member_id == member.id).values(wallet_card=True)
    )
    content = await current_content(conn, ctx, member)
    card = await find(conn, member_id=member.id)
    if card is None:
        now = ctx.clock.now()
        tag = await next_tag(conn)
        serial = secrets.token_hex(dc.SERIAL_BYTES)
        await conn.execute(
            CARDS.insert().values(
                member_id=member.id,
                serial_number=serial,
                pass_type_id=wallet.program.pass_type_id,
                content=content.to_json(),
                update_tag=tag,
                pushed_tag=0,  # told nobody yet: the updater creates the Google object
                create_time=now,
                update_time=now,
            )
        )
        await marks.mark(conn, member.id)
        card = CardView(member.id, serial, wallet.program.pass_type_id, content, tag, 0, now, now)
    else:
        if card.content != content:
            card = await store(conn, ctx, card, content)
            await marks.mark(conn, member.id)  # the updater pushes the devices holding it
        card = replace(card, registered_devices=await registered_devices(conn, card))
    return card


def page_url(ctx: AppContext, wallet: Wallet, card: CardView) -> str:
    return wallet.program.card_page_url(
        card.serial_number, ctx.vault.pass_token(card.serial_number)
    )


def rendered(ctx: AppContext, wallet: Wallet, card: CardView) -> IssuedCard:
    """The card's pass, Google link and page link, from its stored content (CPU work: signing;
    call it off the event loop)."""
    return IssuedCard(
        card,
        build_pkpass(ctx, wallet, card) if wallet.apple else b"",
        google_save_url(ctx, wallet, card) if wallet.google else "",
        page_url(ctx, wallet, card),
    )


def build_pkpass(ctx: AppContext, wallet: Wallet, card: CardView) -> bytes:
    if wallet.apple is None:
        raise not_configured()
    strings = dc.strings_for(card.content.locale)
    return build_pass(
        dc.pass_layout(card.content, wallet.program),
        wallet.program,
        card.serial_number,
        ctx.vault.pass_token(card.serial_number),
        f"{wallet.program.program_name} — {strings['DESCRIPTION']}",
        wallet.apple.credentials,
        wallet.images,
    )


def logo_url(wallet: Wallet) -> str:
    return f"{wallet.program.web_url.rstrip('/')}/cards/assets/logo@3x.png"


def google_save_url(ctx: AppContext, wallet: Wallet, card: CardView) -> str:
    if wallet.google is None:
        raise not_configured()
    claims = dc.save_claims(
        wallet.google.client.account.client_email,
        wallet.google.origins,
        dc.loyalty_object(wallet.program, card.serial_number, card.content),
        ctx.clock.now(),
    )
    return wallet.google.client.save_url(claims)


async def member_of(conn: AsyncConnection, ctx: AppContext, card: CardView) -> dm.Member:
    member = await repo.find_member(conn, ctx.vault, id=card.member_id)
    if member is None:
        raise NotFound("CARD_NOT_FOUND", "the card's member is gone")
    return member


async def find(
    conn: AsyncConnection, *, member_id: str | None = None, serial_number: str | None = None
) -> CardView | None:
    query = select(CARDS)
    if member_id is not None:
        query = query.where(CARDS.c.member_id == member_id)
    if serial_number is not None:
        query = query.where(CARDS.c.serial_number == serial_number)
    row = (await conn.execute(query)).first()
    return _view(row) if row else None


async def get(conn: AsyncConnection, member_id: str) -> CardView:
    """The member's card with its registered device count, or WALLET_CARD_NOT_FOUND."""
    card = await find(conn, member_id=member_id)
    if card is None:
        raise NotFound(
            "WALLET_CARD_NOT_FOUND",
            "this member has no wallet card yet: IssueWalletCard creates it",
            {"member": f"members/{member_id}"},
        )
    return replace(card, registered_devices=await registered_devices(conn, card))


async def registered_devices(conn: AsyncConnection, card: CardView) -> int:
    registered = await conn.scalar(
        select(func.count())
        .select_from(REGISTRATIONS)
        .where(REGISTRATIONS.c.serial_number == card.serial_number)
    )
    return int(registered or 0)
