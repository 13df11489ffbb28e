"""ReconcilePartnerFile: a partner's file against its ledger transactions of a period."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, insert, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.adapters.models import LedgerTransactionRow, ReconciliationRow, table_of
from gateway.service import partners as partner_service
from gateway.service.context import AppContext
from settlement.domain import reconcile as dr
from settlement.domain.periods import Period

TXNS = table_of(LedgerTransactionRow)
RECONCILIATIONS = table_of(ReconciliationRow)
RECONCILIATION_ID_BYTES = 8
REFERENCE_BATCH = 2_000
"""References read per query: memory is this many, however many the partner has."""
RECONCILED_TYPES = ("EARN", "REDEEM", "CAPTURE", "REWARD", "REVERSAL")
"""What a partner's own system records: its earns, burns and their refunds. Holds, releases,
expiries, donations and conversions are not the partner's sales."""


ORIGINAL = TXNS.alias("original")
"""What a reversal reverses: a refund is the partner's record of the same sale, so it is
matched under the sale's reference and belongs to whoever made the sale (the agency that
booked it, for an agency's earn), whatever reason the refund was given."""


def _reference() -> ColumnElement[str]:
    """The reference a transaction is matched under, without surrounding spaces (a file's cells
    are trimmed too: spreadsheets pad them)."""
    return func.trim(
        case(
            (ORIGINAL.c.id.is_not(None), ORIGINAL.c.partner_reference),
            else_=TXNS.c.partner_reference,
        )
    )


def _made_by(partner_id: str) -> ColumnElement[bool]:
    """The partner's own transactions: made at it, or submitted by it as a travel agency."""
    channel = func.coalesce(TXNS.c.channel_partner_id, ORIGINAL.c.channel_partner_id)
    return or_(
        and_(TXNS.c.partner_id == partner_id, channel.is_(None)),
        channel == partner_id,
    )


async def ledger_side(
    conn: AsyncConnection, partner_id: str, period: Period
) -> AsyncIterator[dr.LedgerEntry]:
    """Per-reference sums of the partner's transactions recorded in the period, by reference."""
    reference: Any = _reference()
    ordered: Any = reference
    if conn.dialect.name == "postgresql":
        ordered = reference.collate("C")  # byte order, as Python compares them
    source = TXNS.outerjoin(
        ORIGINAL, and_(TXNS.c.type == "REVERSAL", ORIGINAL.c.id == TXNS.c.related_id)
    )
    where: list[ColumnElement[bool]] = [
        _made_by(partner_id),
        TXNS.c.type.in_(RECONCILED_TYPES),
        # Conversions are not the partner's sales, and neither is undoing one.
        or_(ORIGINAL.c.type.is_(None), ORIGINAL.c.type != "CONVERSION"),
        TXNS.c.create_time >= period.start,
        TXNS.c.create_time < period.end,
    ]
    after: str | None = None
    while True:
        query = (
            select(reference.label("reference"), func.sum(TXNS.c.points).label("points"))
            .select_from(source)
            .where(*where)
            .group_by(reference)
            .order_by(ordered)
            .limit(REFERENCE_BATCH)
        )
        if after is not None:
            query = query.having(ordered > after)
        sums = (await conn.execute(query)).all()
        if not sums:
            return
        names: dict[str, list[str]] = defaultdict(list)
        rows = await conn.execute(
            select(reference.label("reference"), TXNS.c.member_id, TXNS.c.id)
            .select_from(source)
            .where(*where, reference.in_([r.reference for r in sums]))
            .order_by(TXNS.c.seq)
        )
        for t in rows:
            kept = names[t.reference]
            if len(kept) < dr.TRANSACTIONS_PER_DISCREPANCY_MAX:
                kept.append(f"members/{t.member_id}/transactions/{t.id}")
        for r in sums:
            yield dr.LedgerEntry(r.reference, int(r.points), tuple(names[r.reference]))
        if len(sums) < REFERENCE_BATCH:
            return
        after = sums[-1].reference


async def reconcile(
    conn: AsyncConnection,
    ctx: AppContext,
    partner_id: str,
    period: Period,
    content: bytes,
    keep_all: bool = False,
) -> tuple[str, dr.Result]:
    """(reconciliation name, result); the result is stored for audit (at most
    DISCREPANCIES_KEPT_MAX discrepancies of it). keep_all: return every discrepancy (the CLI)."""
    await partner_service.get(conn, partner_id)
    file = dr.parse_file(content)
    keep = None if keep_all else dr.DISCREPANCIES_KEPT_MAX
    result = await dr.match(file, ledger_side(conn, partner_id, period), keep)
    result.create_time = ctx.clock.now()
    reconciliation_id = secrets.token_hex(RECONCILIATION_ID_BYTES)
    summary = {k: v for k, v in asdict(result).items() if k not in ("discrepancies",)}
    summary["create_time"] = result.create_time.isoformat()
    await conn.execute(
        insert(RECONCILIATIONS).values(
            id=reconciliation_id,
            partner_id=partner_id,
            period=period.id,
            file_sha256=hashlib.sha256(content).hexdigest(),
            summary=json.dumps(summary),
            discrepancies=json.dumps(
                [asdict(d) for d in result.discrepancies[: dr.DISCREPANCIES_KEPT_MAX]]
            ),
            create_time=result.create_time,
        )
    )
    return f"partners/{partner_id}/reconciliations/{reconciliation_id}", result
