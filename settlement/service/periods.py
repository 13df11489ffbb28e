"""Closing a period: settle every transaction once, price it, freeze one statement per partner.

A close is one database transaction, and the heavy part runs inside the database: the lines
are an INSERT ... SELECT over the period's postings, the statements come from a GROUP BY over
the lines, and only those sums (a few per partner) reach Python, where the exact decimal
pricing happens. Memory stays flat however many transactions the month had.

Which transactions a close settles: every one recorded before the period's end that no close
settled before (the unique index on settlement_lines makes "before" airtight). The first close
settles all history up to its end; after it, periods close in order, each one month later, and
look back to the previous period's start for stragglers (a transaction stamped before a close
that committed after it). Those, and transactions dated (occur_time) before the period, are
LATE_TRANSACTION lines: they are settled here, at the prices of when they were recorded.
"""

from __future__ import annotations

import json
import secrets
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    ColumnElement,
    and_,
    case,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.adapters.models import (
    AdjustmentRow,
    LedgerTransactionRow,
    PartnerRow,
    PostingRow,
    PriceListRow,
    SettlementLineRow,
    StatementRow,
    table_of,
)
from gateway.domain import ledger as dl
from gateway.domain import paging
from gateway.domain.errors import FailedPrecondition, InvalidArgument, NotFound
from gateway.service import partners as partner_service
from gateway.service.context import AppContext
from gateway.service.earning import currency_exponent
from settlement.domain import netting as dn
from settlement.domain import pricing
from settlement.domain.periods import Period
from settlement.domain.pricing import Bucket, Component
from settlement.service import prices as price_service
from settlement.service.state import (
    PERIODS,
    ClosedPeriod,
    get_period,
    last_closed,
    require_closed,
    require_open,
)

STATEMENTS = table_of(StatementRow)
LINES = table_of(SettlementLineRow)
ADJUSTMENTS = table_of(AdjustmentRow)
PRICES = table_of(PriceListRow)
PARTNERS = table_of(PartnerRow)
TXNS = table_of(LedgerTransactionRow)
POSTINGS = table_of(PostingRow)

LINES_PAGE_SIZE_DEFAULT = 100
LINES_PAGE_SIZE_MAX = 1_000
ADJUSTMENT_ID_BYTES = 8
ADJUSTMENT_REASON_CHARS_MAX = 1_000
ADJUSTMENT_REFERENCE_CHARS_MAX = 200
ADJUSTMENT_AMOUNT_MINOR_MAX = 10**13
ERROR_PARTNERS_LISTED_MAX = 10
"""An error naming partners (missing prices) names at most this many."""

Progress = Callable[[str], None]


class CloseBlocked(FailedPrecondition):
    """What keeps a period from closing (a missing price list or FX rate, too early, out of
    order). Not a business outcome to replay: retrying the same request after fixing the cause
    closes the period."""

    stored = False


@dataclass(frozen=True)
class Line:
    id: int
    period: str
    partner_id: str
    kind: str
    component: str
    transaction_id: str
    member_id: str
    txn_type: str
    points: int
    units: int
    amount_minor: int
    """Rounded half to even (adjustments: exact)."""
    exact_minor: Decimal
    currency: str
    exponent: int
    price_list: str
    partner_reference: str
    reason: str
    create_time: datetime
    occur_time: datetime | None

    @property
    def transaction_name(self) -> str:
        if self.kind == "ADJUSTMENT":
            return ""
        return f"members/{self.member_id}/transactions/{self.transaction_id}"

    @property
    def adjustment_name(self) -> str:
        if self.kind != "ADJUSTMENT":
            return ""
        return f"settlementPeriods/{self.period}/adjustments/{self.transaction_id}"


@dataclass(frozen=True)
class Adjustment:
    id: str
    period: Period
    partner_id: str
    points: int
    amount_minor: int
    currency: str
    reason: str
    reference: str
    create_time: datetime

    @property
    def name(self) -> str:
        return f"{self.period.name}/adjustments/{self.id}"


# -- the close -------------------------------------------------------------------------------


def _owner(conn: AsyncConnection, account: Any) -> ColumnElement[str]:
    """The partner id in an account "kind:{id}:..." (partner ids have no colon)."""
    if conn.dialect.name == "postgresql":
        return func.split_part(account, ":", 2)
    rest = func.substr(account, func.instr(account, ":") + 1)
    return func.substr(rest, 1, func.instr(rest, ":") - 1)


_COMPONENT_OF_ACCOUNT = (
    ("partner:%:issued", Component.ISSUED),
    ("partner:%:redeemed", Component.REDEEMED),
    ("partner:%:converted", Component.CONVERTED),
    ("program:%:issued", Component.CONVERTED),  # the miles the airline credits
    ("partner:%:matched", Component.MATCHED),
    ("partner:%:expired", Component.EXPIRED),
    ("charity:%:donated", Component.DONATED),
)
LATE_RECORDED = "recorded for a closed period (committed after its close): settled late"
LATE_DATED = "dated in a closed period (occur_time) and reported after its close"


async def _settle_transactions(
    conn: AsyncConnection, period: Period, previous: Period | None
) -> None:
    """INSERT ... SELECT the period's lines: one per transaction, partner and component."""
    account = POSTINGS.c.account
    component = case(
        *((account.like(pattern), literal(c.value)) for pattern, c in _COMPONENT_OF_ACCOUNT),
        else_=None,
    )
    owner = _owner(conn, account)
    is_points = POSTINGS.c.asset == dl.POINTS
    recorded_late = TXNS.c.create_time < period.start
    dated_late = and_(TXNS.c.occur_time.is_not(None), TXNS.c.occur_time < period.start)
    late = previous is not None
    kind = (
        case((or_(recorded_late, dated_late), literal("LATE_TRANSACTION")), else_="TRANSACTION")
        if late
        else literal("TRANSACTION")
    )
    reason = (
        case((recorded_late, literal(LATE_RECORDED)), (dated_late, literal(LATE_DATED)), else_="")
        if late
        else literal("")
    )
    settled = exists().where(LINES.c.transaction_seq == TXNS.c.seq)
    original = TXNS.alias("original")
    price_time = func.max(func.coalesce(original.c.create_time, TXNS.c.create_time))
    window = [TXNS.c.create_time < period.end, ~settled]
    if previous is not None:
        window.append(TXNS.c.create_time >= previous.start)
    columns = [
        "period",
        "partner_id",
        "kind",
        "component",
        "transaction_seq",
        "transaction_id",
        "member_id",
        "txn_type",
        "txn_partner_id",
        "points",
        "units",
        "amount_minor",
        "partner_reference",
        "reason",
        "create_time",
        "occur_time",
        "price_time",
    ]
    values = [
        literal(period.id),
        owner,
        kind,
        component,
        TXNS.c.seq,
        TXNS.c.id,
        TXNS.c.member_id,
        TXNS.c.type,
        TXNS.c.partner_id,
        -func.sum(case((is_points, POSTINGS.c.amount), else_=0)),
        -func.sum(case((is_points, 0), else_=POSTINGS.c.amount)),
        literal(0),
        TXNS.c.partner_reference,
        reason,
        TXNS.c.create_time,
        TXNS.c.occur_time,
        price_time,
    ]
    lines = (
        select(*(v.label(c) for v, c in zip(values, columns, strict=True)))
        .select_from(
            POSTINGS.join(TXNS, TXNS.c.seq == POSTINGS.c.transaction_seq).outerjoin(
                original,
                and_(TXNS.c.type == dl.TxnType.REVERSAL.value, original.c.id == TXNS.c.related_id),
            )
        )
        .where(*window, or_(*(account.like(p) for p, _ in _COMPONENT_OF_ACCOUNT)))
        .group_by(TXNS.c.seq, owner, component)
        .subquery("settled_line")
    )
    # Each line is priced as it is written: the owner's price list version valid at its
    # price_time. (An UPDATE afterwards rewrote every line a second time: half the close.)
    version = (
        select(PRICES.c.id)
        .where(PRICES.c.partner_id == lines.c.partner_id, PRICES.c.valid_from <= lines.c.price_time)
        .order_by(PRICES.c.valid_from.desc())
        .limit(1)
        .scalar_subquery()
    )
    priced = select(*(lines.c[c] for c in columns), version)
    await conn.execute(insert(LINES).from_select([*columns, "price_list_id"], priced))


async def _settle_adjustments(conn: AsyncConnection, period: Period) -> None:
    a = ADJUSTMENTS.c
    settled = exists().where(LINES.c.kind == "ADJUSTMENT", LINES.c.transaction_id == a.id)
    adjustments = select(
        literal(period.id),
        a.partner_id,
        literal("ADJUSTMENT"),
        literal("ADJUSTMENT"),
        a.id,
        literal(""),
        literal("ADJUSTMENT"),
        a.partner_id,
        a.points,
        literal(0),
        a.amount_minor,
        a.reference,
        a.reason,
        a.create_time,
        a.create_time,
    ).where(a.period <= period.id, ~settled)
    columns = [
        "period",
        "partner_id",
        "kind",
        "component",
        "transaction_id",
        "member_id",
        "txn_type",
        "txn_partner_id",
        "points",
        "units",
        "amount_minor",
        "partner_reference",
        "reason",
        "create_time",
        "price_time",
    ]
    await conn.execute(insert(LINES).from_select(columns, adjustments))


async def _price_lines(conn: AsyncConnection, period: Period) -> None:
    """Every transaction line was priced as it was written; refuse if a partner had no price
    list version valid at some line's price_time."""
    missing = (
        await conn.execute(
            select(LINES.c.partner_id)
            .where(
                LINES.c.period == period.id,
                LINES.c.kind != "ADJUSTMENT",
                LINES.c.price_list_id.is_(None),
            )
            .group_by(LINES.c.partner_id)
            .order_by(LINES.c.partner_id)
            .limit(ERROR_PARTNERS_LISTED_MAX)
        )
    ).scalars()
    names = [f"partners/{p}" for p in missing]
    if names:
        raise CloseBlocked(
            "PRICE_LIST_MISSING",
            f"no price list covers some of {period.name}'s transactions of "
            f"{', '.join(names)}: add a version valid from their date (CreatePriceList)",
            {"partners": ",".join(names), "period": period.name},
        )


async def _buckets(conn: AsyncConnection, period: Period) -> dict[str, list[Bucket]]:
    fee_bearing = and_(
        LINES.c.txn_partner_id == LINES.c.partner_id,
        LINES.c.txn_type.in_(sorted(pricing.FEE_TYPES)),
        LINES.c.component.in_([Component.ISSUED.value, Component.REDEEMED.value]),
    )
    late = case((LINES.c.kind == "LATE_TRANSACTION", 1), else_=0)
    rows = await conn.execute(
        select(
            LINES.c.partner_id,
            LINES.c.component,
            LINES.c.price_list_id,
            late.label("late"),
            func.sum(LINES.c.points).label("points"),
            func.sum(LINES.c.units).label("units"),
            func.sum(case((fee_bearing, 1), else_=0)).label("fee_lines"),
        )
        .where(LINES.c.period == period.id, LINES.c.kind != "ADJUSTMENT")
        .group_by(LINES.c.partner_id, LINES.c.component, LINES.c.price_list_id, late)
    )
    out: dict[str, list[Bucket]] = defaultdict(list)
    for r in rows:
        out[r.partner_id].append(
            Bucket(
                component=Component(r.component),
                price_list_id=r.price_list_id,
                late=bool(r.late),
                points=int(r.points),
                units=int(r.units),
                fee_lines=int(r.fee_lines),
            )
        )
    return out


async def _outstanding(conn: AsyncConnection, end: datetime) -> dict[str, int]:
    """Points members hold at `end` (available, pending, held), from the postings."""
    account = POSTINGS.c.account
    kinds = {k: f"member:%:{k}" for k in ("available", "pending", "held")}
    columns = [
        func.coalesce(func.sum(case((account.like(p), POSTINGS.c.amount), else_=0)), 0).label(k)
        for k, p in kinds.items()
    ]
    row = (
        await conn.execute(
            select(*columns)
            .select_from(POSTINGS.join(TXNS, TXNS.c.seq == POSTINGS.c.transaction_seq))
            .where(
                TXNS.c.create_time < end,
                account.like("member:%"),
                POSTINGS.c.asset == dl.POINTS,
            )
        )
    ).one()
    return {k: int(getattr(row, k)) for k in kinds}


async def close(
    conn: AsyncConnection, ctx: AppContext, period: Period, progress: Progress | None = None
) -> ClosedPeriod:
    """Close a period (idempotent); one transaction, so a failure leaves nothing behind."""
    say = progress or (lambda _: None)
    now = ctx.clock.now()
    existing = await get_period(conn, period)
    if existing.closed:
        return existing
    if period.end > now:
        raise CloseBlocked(
            "PERIOD_NOT_ENDED",
            f"{period.name} ends at {period.end.isoformat()}: close it after that",
            {"period": period.name, "end_time": period.end.isoformat()},
        )
    previous = await last_closed(conn)
    if previous is not None and period != previous.next():
        if period < previous:
            raise FailedPrecondition(
                "PERIOD_CLOSED",
                f"{period.name} was settled by the close of {previous.name}",
                {"period": period.name},
            )
        raise CloseBlocked(
            "PREVIOUS_PERIOD_OPEN",
            f"periods close in order: close {previous.next().name} first",
            {"period": previous.next().name},
        )
    try:
        # Claims the period first: a concurrent close of it waits here, then finds it closed.
        async with conn.begin_nested():
            await conn.execute(
                insert(PERIODS).values(
                    period=period.id,
                    base_currency=ctx.base_currency,
                    close_time=now,
                    statement_count=0,
                    totals="{}",
                )
            )
    except IntegrityError:
        return await get_period(conn, period)
    say("settling transactions")
    await _settle_transactions(conn, period, previous)
    await _settle_adjustments(conn, period)
    say("pricing lines")
    await _price_lines(conn, period)
    say("computing statements")
    statements = await _statements(conn, ctx, period, now)
    say("netting")
    base_exponent = currency_exponent(ctx.base_currency, "base_currency")
    netted = dn.netting(period.id, statements, ctx.base_currency, base_exponent, now)
    outstanding = await _outstanding(conn, period.end)
    totals = {"margin": netted.margin.__dict__, "outstanding_points": outstanding}
    await conn.execute(
        update(PERIODS)
        .where(PERIODS.c.period == period.id)
        .values(statement_count=len(statements), totals=json.dumps(totals))
    )
    return ClosedPeriod(period, now, len(statements), ctx.base_currency, totals)


async def _statements(
    conn: AsyncConnection, ctx: AppContext, period: Period, now: datetime
) -> list[dn.Statement]:
    buckets = await _buckets(conn, period)
    adjustments: dict[str, list[tuple[int, str]]] = defaultdict(list)
    counts: dict[str, int] = {}
    rows = await conn.execute(
        select(LINES.c.partner_id, LINES.c.amount_minor, ADJUSTMENTS.c.currency)
        .join(ADJUSTMENTS, ADJUSTMENTS.c.id == LINES.c.transaction_id)
        .where(LINES.c.period == period.id, LINES.c.kind == "ADJUSTMENT")
    )
    for r in rows:
        adjustments[r.partner_id].append((r.amount_minor, r.currency))
    for r in await conn.execute(
        select(LINES.c.partner_id, func.count().label("n"))
        .where(LINES.c.period == period.id)
        .group_by(LINES.c.partner_id)
    ):
        counts[r.partner_id] = int(r.n)
    prices = await price_service.by_id(
        conn, [b.price_list_id for bs in buckets.values() for b in bs]
    )
    currencies: dict[str, str] = {
        r.id: r.settlement_currency_code
        for r in await conn.execute(
            select(PARTNERS.c.id, PARTNERS.c.settlement_currency_code).where(
                PARTNERS.c.id.in_(sorted(counts))
            )
        )
    }
    rates = await price_service.fx_rates(conn, ctx, period)
    rates[ctx.base_currency] = Decimal(1)
    missing = sorted({c for c in currencies.values() if c not in rates})
    if missing:
        raise CloseBlocked(
            "FX_RATE_MISSING",
            f"set the {period.name} rate of {', '.join(missing)} against {ctx.base_currency} "
            "first (SetFxRate)",
            {"currencies": ",".join(missing), "period": period.name},
        )
    base_exponent = currency_exponent(ctx.base_currency, "base_currency")
    out: list[dn.Statement] = []
    for partner_id in sorted(counts):
        currency = currencies[partner_id]
        for b in buckets.get(partner_id, []):
            _same_currency(prices[b.price_list_id].currency, currency, partner_id)
        for _, adjustment_currency in adjustments.get(partner_id, []):
            _same_currency(adjustment_currency, currency, partner_id)
        exponent = currency_exponent(currency, "currency")
        f = pricing.figures(
            buckets.get(partner_id, []),
            prices,
            exponent,
            [amount for amount, _ in adjustments.get(partner_id, [])],
        )
        rate = rates[currency]
        statement = dn.Statement(
            period=period.id,
            partner_id=partner_id,
            currency=currency,
            exponent=exponent,
            points_issued=f.points_issued,
            points_redeemed=f.points_redeemed,
            points_converted=f.points_converted,
            units_converted=f.units_converted,
            points_donated=f.points_donated,
            points_matched=f.points_matched,
            points_expired=f.points_expired,
            issue_minor=f.issue_minor,
            redemption_minor=f.redemption_minor,
            conversion_minor=f.conversion_minor,
            donation_minor=f.donation_minor,
            fee_minor=f.fee_minor,
            adjustment_minor=f.adjustment_minor,
            late_minor=f.late_minor,
            owed_minor=f.owed_minor,
            due_minor=f.due_minor,
            net_minor=f.net_minor,
            fx_rate=rate,
            net_base_minor=pricing.to_base(f.net_minor, rate, exponent, base_exponent),
            breakage_base_minor=pricing.to_base(f.breakage_minor, rate, exponent, base_exponent),
            line_count=counts[partner_id],
            create_time=now,
        )
        out.append(statement)
    if out:
        await conn.execute(insert(STATEMENTS), [_statement_values(s) for s in out])
    return out


def _same_currency(found: str, currency: str, partner_id: str) -> None:
    if found != currency:
        raise CloseBlocked(
            "CURRENCY_MISMATCH",
            f"partners/{partner_id} settles in {currency}, but a price list or an adjustment "
            f"of the period is in {found}: add a {currency} price list version",
            {"partner": f"partners/{partner_id}"},
        )


_STATEMENT_FIELDS = [
    "period",
    "partner_id",
    "currency",
    "points_issued",
    "points_redeemed",
    "points_converted",
    "units_converted",
    "points_donated",
    "points_matched",
    "points_expired",
    "issue_minor",
    "redemption_minor",
    "conversion_minor",
    "donation_minor",
    "fee_minor",
    "adjustment_minor",
    "late_minor",
    "owed_minor",
    "due_minor",
    "net_minor",
    "net_base_minor",
    "breakage_base_minor",
    "line_count",
    "create_time",
]


def _statement_values(s: dn.Statement) -> dict[str, Any]:
    values = {f: getattr(s, f) for f in _STATEMENT_FIELDS}
    values["fx_rate"] = str(s.fx_rate)
    return values


def _statement(row: Any) -> dn.Statement:
    values = {f: getattr(row, f) for f in _STATEMENT_FIELDS}
    return dn.Statement(
        **values,
        exponent=currency_exponent(row.currency, "currency"),
        fx_rate=Decimal(row.fx_rate),
    )


# -- reading statements ----------------------------------------------------------------------


async def get_statement(conn: AsyncConnection, period: Period, partner_id: str) -> dn.Statement:
    await require_closed(conn, period)
    row = (
        await conn.execute(
            select(STATEMENTS).where(
                STATEMENTS.c.period == period.id, STATEMENTS.c.partner_id == partner_id
            )
        )
    ).first()
    if row is None:
        raise NotFound(
            "STATEMENT_NOT_FOUND",
            f"partners/{partner_id} has no statement for {period.name} (no activity, or no such "
            "partner)",
            {"statement": f"{period.name}/statements/{partner_id}"},
        )
    return _statement(row)


async def list_statements(
    conn: AsyncConnection, period: Period, partner_id: str | None, size: int, token: str
) -> tuple[list[dn.Statement], str]:
    """A period's statements by partner; partner_id: only that partner's."""
    await require_closed(conn, period)
    limit = paging.page_size(size)
    position = paging.decode_token(token, ("p",))
    query = select(STATEMENTS).where(STATEMENTS.c.period == period.id)
    if partner_id is not None:
        query = query.where(STATEMENTS.c.partner_id == partner_id)
    if position is not None:
        if not isinstance(position["p"], str):
            raise paging.invalid_token()
        query = query.where(STATEMENTS.c.partner_id > position["p"])
    rows = (await conn.execute(query.order_by(STATEMENTS.c.partner_id).limit(limit + 1))).all()
    page = [_statement(r) for r in rows[:limit]]
    return page, paging.encode_token({"p": page[-1].partner_id}) if len(rows) > limit else ""


async def all_statements(conn: AsyncConnection, period: Period) -> list[dn.Statement]:
    """Every statement of a closed period (one per active partner: a bounded number)."""
    await require_closed(conn, period)
    return await statements_of(conn, period)


async def statements_of(conn: AsyncConnection, period: Period) -> list[dn.Statement]:
    """all_statements, for a caller that knows the period is closed."""
    rows = await conn.execute(
        select(STATEMENTS).where(STATEMENTS.c.period == period.id).order_by(STATEMENTS.c.partner_id)
    )
    return [_statement(r) for r in rows]


def _line(row: Any, prices: dict[str, pricing.PriceList], currency: str, exponent: int) -> Line:
    if row.kind == "ADJUSTMENT":
        exact = Decimal(row.amount_minor)
        price_list = ""
    else:
        p = prices[row.price_list_id]
        fee_bearing = (
            row.txn_partner_id == row.partner_id
            and row.txn_type in pricing.FEE_TYPES
            and row.component in (Component.ISSUED.value, Component.REDEEMED.value)
        )
        exact = pricing.line_exact(
            Component(row.component), row.points, row.units, p, exponent, fee_bearing
        )
        price_list = p.name
    return Line(
        id=row.id,
        period=row.period,
        partner_id=row.partner_id,
        kind=row.kind,
        component=row.component,
        transaction_id=row.transaction_id,
        member_id=row.member_id,
        txn_type=row.txn_type,
        points=row.points,
        units=row.units,
        amount_minor=pricing.round_minor(exact),
        exact_minor=exact,
        currency=currency,
        exponent=exponent,
        price_list=price_list,
        partner_reference=row.partner_reference,
        reason=row.reason,
        create_time=row.create_time,
        occur_time=row.occur_time,
    )


async def list_lines(
    conn: AsyncConnection, period: Period, partner_id: str, size: int, token: str
) -> tuple[list[Line], str]:
    statement = await get_statement(conn, period, partner_id)
    if size < 0:
        raise InvalidArgument.on_field("page_size", "INVALID_PAGE_SIZE", "must not be negative")
    limit = min(size or LINES_PAGE_SIZE_DEFAULT, LINES_PAGE_SIZE_MAX)
    position = paging.decode_token(token, ("t", "l"))
    after = None
    if position is not None:
        if not isinstance(position["l"], int):
            raise paging.invalid_token()
        after = (paging.time_of(position, "t"), position["l"])
    page = [
        line
        async for line in stream_lines(
            conn, period, partner_id, statement.currency, after, limit + 1
        )
    ]
    more = len(page) > limit
    page = page[:limit]
    if not more:
        return page, ""
    return page, paging.encode_token({"t": page[-1].create_time.isoformat(), "l": page[-1].id})


LINE_BATCH = 2_000
"""Lines read per query while streaming: memory is this many lines, whatever the statement."""


async def stream_lines(
    conn: AsyncConnection,
    period: Period,
    partner_id: str,
    currency: str,
    after: tuple[datetime, int] | None = None,
    limit: int | None = None,
) -> Any:
    """A statement's lines in create_time order, after the (create_time, id) `after`: keyset
    batches, never the whole statement in memory."""
    prices: dict[str, pricing.PriceList] = {}
    exponent = currency_exponent(currency, "currency")  # once, not per line of an export
    left = limit
    while left is None or left > 0:
        batch = LINE_BATCH if left is None else min(LINE_BATCH, left)
        rows = (
            await conn.execute(
                select(LINES)
                .where(
                    LINES.c.period == period.id,
                    LINES.c.partner_id == partner_id,
                    *(
                        ()
                        if after is None
                        else (tuple_(LINES.c.create_time, LINES.c.id) > tuple_(*after),)
                    ),
                )
                .order_by(LINES.c.create_time, LINES.c.id)
                .limit(batch)
            )
        ).all()
        wanted = {
            r.price_list_id for r in rows if r.price_list_id and r.price_list_id not in prices
        }
        if wanted:
            prices.update(await price_service.by_id(conn, sorted(wanted)))
        for r in rows:
            yield _line(r, prices, currency, exponent)
        if len(rows) < batch:
            return
        after = (rows[-1].create_time, rows[-1].id)
        if left is not None:
            left -= len(rows)


# -- adjustments -----------------------------------------------------------------------------


async def create_adjustment(
    conn: AsyncConnection,
    ctx: AppContext,
    partner_id: str,
    period: Period | None,
    points: int,
    amount_minor: int,
    currency: str,
    reason: str,
    reference: str,
) -> Adjustment:
    reason = reason.strip()
    if not reason:
        raise InvalidArgument.on_field("reason", "MISSING_REASON", "say why, for the audit trail")
    if not all(c.isprintable() or c in "\r\n\t" for c in reason):
        raise InvalidArgument.on_field(
            "reason", "INVALID_CHARACTERS", "text without control characters (newlines are fine)"
        )
    if len(reason) > ADJUSTMENT_REASON_CHARS_MAX:
        raise InvalidArgument.on_field(
            "reason", "FIELD_TOO_LONG", f"at most {ADJUSTMENT_REASON_CHARS_MAX:,} characters"
        )
    if len(reference) > ADJUSTMENT_REFERENCE_CHARS_MAX or not reference.isprintable():
        raise InvalidArgument.on_field(
            "reference",
            "INVALID_REFERENCE",
            f"at most {ADJUSTMENT_REFERENCE_CHARS_MAX} printable characters",
        )
    if abs(points) > dl.POINTS_PER_TRANSACTION_MAX:
        raise InvalidArgument.on_field(
            "points", "INVALID_POINTS", f"at most {dl.POINTS_PER_TRANSACTION_MAX:,} either way"
        )
    if abs(amount_minor) > ADJUSTMENT_AMOUNT_MINOR_MAX:
        raise InvalidArgument.on_field(
            "amount.amount_minor", "INVALID_AMOUNT", "at most 10^13 minor units either way"
        )
    if points == 0 and amount_minor == 0:
        raise InvalidArgument.on_field(
            "amount", "EMPTY_ADJUSTMENT", "an adjustment moves points, money or both"
        )
    partner = await partner_service.get(conn, partner_id)
    settles_in = partner.settings.settlement_currency_code
    if currency and currency != settles_in:
        currency_exponent(currency, "amount.currency_code")
        raise InvalidArgument.on_field(
            "amount.currency_code", "CURRENCY_MISMATCH", f"{partner.name} settles in {settles_in}"
        )
    if amount_minor and not currency:
        raise InvalidArgument.on_field(
            "amount.currency_code", "INVALID_CURRENCY_CODE", f"the currency ({settles_in})"
        )
    now = ctx.clock.now()
    target = period or Period.of(now)
    await require_open(conn, target)
    adjustment = Adjustment(
        id=secrets.token_hex(ADJUSTMENT_ID_BYTES),
        period=target,
        partner_id=partner_id,
        points=points,
        amount_minor=amount_minor,
        currency=settles_in,
        reason=reason,
        reference=reference,
        create_time=now,
    )
    await conn.execute(
        insert(ADJUSTMENTS).values(
            id=adjustment.id,
            period=target.id,
            partner_id=partner_id,
            points=points,
            amount_minor=amount_minor,
            currency=settles_in,
            reason=reason,
            reference=reference,
            create_time=now,
        )
    )
    return adjustment


async def netting_report(conn: AsyncConnection, period: Period) -> dn.Netting:
    closed = await require_closed(conn, period)
    statements = await all_statements(conn, period)
    assert closed.close_time is not None
    base = closed.base_currency
    return dn.netting(
        period.id, statements, base, currency_exponent(base, "base_currency"), closed.close_time
    )
