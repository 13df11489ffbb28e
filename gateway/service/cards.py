"""Marking wallet cards for an update, in the transaction of the change that alters them.

A card shows state (balance, tier, expiring points), so what matters is its latest content, not
each event: a burst of earns is one mark per member, bumped, not one row per earn. The wallet
updater (wallet.service.updates) rebuilds the card from the database, pushes it if its content
changed, and removes the mark only if nobody bumped it meanwhile.

Members without a card pay nothing: the balance UPDATE reads `member_balances.wallet_card` back
in the row it already returns, and only a carded member's change writes a mark.
"""

from __future__ import annotations

import secrets

from sqlalchemy import exists, literal, select
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.adapters.db import upsert
from gateway.adapters.models import WalletCardRow, WalletChangeRow, table_of

CARDS = table_of(WalletCardRow)
CHANGES = table_of(WalletChangeRow)
VERSION_BITS = 62


def _first_version() -> int:
    """A new mark starts at a random version, never at a value an updater might still hold from
    an earlier mark of the same member (it deletes only the version it read)."""
    return secrets.randbits(VERSION_BITS)


async def mark(conn: AsyncConnection, member_id: str) -> None:
    """The member's card (the caller knows there is one) needs an update."""
    stmt = upsert(conn, CHANGES).values(member_id=member_id, version=_first_version(), attempts=0)
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[CHANGES.c.member_id], set_={"version": CHANGES.c.version + 1}
        )
    )


async def mark_if_carded(conn: AsyncConnection, member_id: str) -> None:
    """The member's card, if they have one, needs an update (a tier or name change)."""
    carded = select(literal(member_id), literal(_first_version()), literal(0)).where(
        exists().where(CARDS.c.member_id == member_id)
    )
    stmt = upsert(conn, CHANGES).from_select(["member_id", "version", "attempts"], carded)
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[CHANGES.c.member_id], set_={"version": CHANGES.c.version + 1}
        )
    )
