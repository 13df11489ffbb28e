"""Finance commands: `coalition settlement ...` (docs/settlement.md).

coalition settlement prices set --partner P --valid-from DATE [--issue X --redeem X ...]
coalition settlement prices list --partner P
coalition settlement fx set --period YYYY-MM --currency EUR --rate 0.92
coalition settlement close --period YYYY-MM
coalition settlement statement --period YYYY-MM [--partner P] [--csv F] [--lines-csv F] [--json F]
coalition settlement netting --period YYYY-MM [--json F] [--html F] [--pdf F]
coalition settlement liability --period YYYY-MM [--breakage-percent 20] [--json F]
coalition settlement reconcile --partner P --period YYYY-MM FILE.csv [--out F]
coalition settlement adjust --partner P --reason TEXT [--points N] [--amount-minor N] ...

Long work shows a progress bar on a terminal (stderr); results go to stdout and files.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn
from rich.table import Table

from gateway.adapters import documents as gateway_documents
from gateway.config import env
from gateway.domain.errors import InvalidArgument
from gateway.domain.partners import parse_partner_id
from gateway.domain.rules import money
from gateway.service import partners as partner_service
from gateway.service.context import AppContext
from gateway.service.earning import currency_exponent
from settlement.adapters import documents
from settlement.domain import netting as dn
from settlement.domain import pricing
from settlement.domain import reconcile as drc
from settlement.domain import reports as dr
from settlement.domain.periods import parse_period
from settlement.service import periods, prices, reconcile, reports, state

Command = Callable[[AppContext, argparse.Namespace], Awaitable[int]]
_err = Console(stderr=True)


def _progress(total: int | None = None) -> Progress:
    columns: list[Any] = [SpinnerColumn(), TextColumn("{task.description}")]
    if total is not None:
        columns += [BarColumn(), MofNCompleteColumn()]
    return Progress(*columns, console=_err, disable=not _err.is_terminal, transient=True)


# A CLI process: nothing else waits on its event loop while it reads or writes a file.


def _read(path: str) -> bytes:
    return Path(path).read_bytes()


def _open_csv(path: str) -> TextIO:
    return Path(path).open("w", encoding="utf-8", newline="")


def _write(path: str, data: str | bytes) -> None:
    target = Path(path)
    if isinstance(data, bytes):
        target.write_bytes(data)
    else:
        target.write_text(data, encoding="utf-8")


def _valid_from(raw: str) -> datetime:
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidArgument.on_field(
            "valid_from", "INVALID_VALID_FROM", "a date or time, such as 2026-03-01"
        ) from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


async def prices_set(ctx: AppContext, args: argparse.Namespace) -> int:
    draft = pricing.PriceList(
        id="",
        partner_id=parse_partner_id(args.partner, "partner"),
        valid_from=_valid_from(args.valid_from),
        currency="",
        issue_price=pricing.parse_price(args.issue, "issue"),
        redemption_rate=pricing.parse_price(args.redeem, "redeem"),
        conversion_price=pricing.parse_price(args.convert, "convert"),
        charity_value=pricing.parse_price(args.charity, "charity"),
        fee_per_transaction_minor=pricing.check_fee(args.fee_minor, "fee_minor"),
        fee_percent=pricing.parse_price(args.fee_percent, "fee_percent", Decimal(100)),
    )
    async with ctx.database.begin() as conn:
        version = await prices.create_price_list(conn, ctx, draft)
    print(f"{version.name}: valid from {version.valid_from.isoformat()} ({version.currency})")
    return 0


async def prices_list(ctx: AppContext, args: argparse.Namespace) -> int:
    table = Table(
        "valid from",
        "currency",
        "issue",
        "redeem",
        "convert",
        "charity",
        "fee",
        "fee %",
        title=f"partners/{args.partner} price lists",
    )
    token = ""
    async with ctx.database.connect() as conn:
        while True:
            page, token = await prices.list_price_lists(conn, args.partner, 0, token)
            for p in page:
                table.add_row(
                    p.valid_from.isoformat(),
                    p.currency,
                    pricing.plain(p.issue_price),
                    pricing.plain(p.redemption_rate),
                    pricing.plain(p.conversion_price),
                    pricing.plain(p.charity_value),
                    str(p.fee_per_transaction_minor),
                    pricing.plain(p.fee_percent),
                )
            if not token:
                break
    Console().print(table)
    return 0


async def fx_set(ctx: AppContext, args: argparse.Namespace) -> int:
    period = parse_period(args.period)
    async with ctx.database.begin() as conn:
        currency, rate, _ = await prices.set_fx_rate(conn, ctx, period, args.currency, args.rate)
    print(f"{period.name}: 1 {ctx.base_currency} = {pricing.plain(rate)} {currency}")
    return 0


async def close(ctx: AppContext, args: argparse.Namespace) -> int:
    period = parse_period(args.period)
    with _progress() as progress:
        task = progress.add_task(f"closing {period.name}")
        async with ctx.database.begin() as conn:
            closed = await periods.close(
                conn, ctx, period, lambda stage: progress.update(task, description=stage)
            )
    assert closed.close_time is not None
    print(
        f"{period.name} CLOSED at {closed.close_time.isoformat()}: "
        f"{closed.statement_count} statement(s)"
    )
    return 0


def _statement_table(statements: list[dn.Statement], title: str) -> Table:
    table = Table("partner", "issued", "redeemed", "owes", "is owed", "net", "lines", title=title)
    for s in statements:
        table.add_row(
            s.partner_id,
            f"{s.points_issued + s.points_matched:,}",
            f"{s.points_redeemed + s.points_converted + s.points_donated:,}",
            money(s.owed_minor, s.currency, s.exponent),
            money(s.due_minor, s.currency, s.exponent),
            money(s.net_minor, s.currency, s.exponent),
            f"{s.line_count:,}",
        )
    return table


async def statement(ctx: AppContext, args: argparse.Namespace) -> int:
    period = parse_period(args.period)
    async with ctx.database.connect() as conn:
        if args.partner:
            chosen = [await periods.get_statement(conn, period, args.partner)]
        else:
            chosen = await periods.all_statements(conn, period)
        base = (await state.get_period(conn, period)).base_currency
        if args.csv:
            _write(args.csv, documents.statements_csv(chosen, base, currency_exponent(base)))
        if args.json:
            _write(args.json, json.dumps([asdict(s) for s in chosen], default=str, indent=2))
        if args.lines_csv:
            await _lines_csv(conn, period, chosen, args.lines_csv)
    Console().print(_statement_table(chosen, f"{period.name} statements"))
    return 0


async def _lines_csv(conn: Any, period: Any, chosen: list[dn.Statement], path: str) -> None:
    """Every line of the chosen statements, streamed to the file batch by batch."""
    total = sum(s.line_count for s in chosen)
    with _open_csv(path) as out, _progress(total) as bar:
        task = bar.add_task("writing lines", total=total)
        header = True
        for s in chosen:
            batch: list[periods.Line] = []
            async for line in periods.stream_lines(conn, period, s.partner_id, s.currency):
                batch.append(line)
                if len(batch) == periods.LINE_BATCH:
                    documents.write_lines_csv(out, batch, header)
                    header = False
                    bar.advance(task, len(batch))
                    batch = []
            documents.write_lines_csv(out, batch, header)
            header = False
            bar.advance(task, len(batch))


async def _report(ctx: AppContext, period: Any, breakage: Decimal) -> documents.PeriodReport:
    async with ctx.database.connect() as conn:
        return documents.PeriodReport(
            netting=await periods.netting_report(conn, period),
            names=await reports.display_names(conn),
            liability=await reports.liability(conn, period, breakage),
            returns=tuple(await reports.partner_returns(conn, period)),
            history=await reports.history(conn, period),
        )


def _breakage(args: argparse.Namespace) -> Decimal:
    raw = args.breakage_percent or env("SETTLEMENT_BREAKAGE_PERCENT", "")
    return dr.parse_breakage(raw) if raw else dr.BREAKAGE_PERCENT_DEFAULT


async def netting(ctx: AppContext, args: argparse.Namespace) -> int:
    period = parse_period(args.period)
    report = await _report(ctx, period, _breakage(args))
    n = report.netting
    if args.json:
        _write(args.json, json.dumps(asdict(n), default=str, indent=2))
    if args.html:
        _write(args.html, documents.report_html(report))
    if args.pdf:
        font = gateway_documents.find_unicode_font()
        _write(args.pdf, documents.report_pdf(report, font))
    table = Table(
        "partner", "currency", "net", "fx", f"net {n.base_currency}", title=f"{period.name} netting"
    )
    for s in n.positions:
        table.add_row(
            s.partner_id,
            s.currency,
            money(s.net_minor, s.currency, s.exponent),
            pricing.plain(s.fx_rate),
            money(s.net_base_minor, n.base_currency, n.base_exponent),
        )
    table.add_row(
        "operator margin",
        n.base_currency,
        "",
        "",
        money(n.margin.total, n.base_currency, n.base_exponent),
    )
    Console().print(table)
    return 0


async def liability(ctx: AppContext, args: argparse.Namespace) -> int:
    period = parse_period(args.period)
    report = await _report(ctx, period, _breakage(args))
    if args.json:
        payload = {
            "liability": asdict(report.liability),
            "partner_returns": [asdict(r) for r in report.returns],
        }
        _write(args.json, json.dumps(payload, default=str, indent=2))
    console = Console()
    table = Table("", "", title=f"{period.name} points liability")
    for label, value in documents.liability_rows(report):
        table.add_row(label, value)
    console.print(table)
    returns = Table(*documents.RETURN_HEADINGS, title=f"{period.name} partner returns")
    for row in documents.return_rows(report):
        returns.add_row(*row)
    console.print(returns)
    return 0


async def reconcile_file(ctx: AppContext, args: argparse.Namespace) -> int:
    period = parse_period(args.period)
    partner_id = parse_partner_id(args.partner, "partner")
    content = _read(args.file)
    with _progress() as progress:
        progress.add_task(f"matching {Path(args.file).name}")
        async with ctx.database.begin() as conn:
            name, result = await reconcile.reconcile(
                conn, ctx, partner_id, period, content, keep_all=True
            )
    if args.out:
        with _open_csv(args.out) as out:
            csv.writer(out).writerows(drc.csv_rows(result.discrepancies))
    print(
        f"{name}: {result.matched_count:,} matched, {result.discrepancy_count:,} "
        f"discrepancies; file {result.file_reference_count:,} references "
        f"({result.file_points_total:,} points), ledger {result.ledger_reference_count:,} "
        f"references ({result.ledger_points_total:,} points)"
    )
    by_kind: dict[str, int] = {}
    for d in result.discrepancies:
        by_kind[d.kind.value] = by_kind.get(d.kind.value, 0) + 1
    for kind, count in sorted(by_kind.items()):
        print(f"  {kind}: {count:,}")
    return 0 if result.discrepancy_count == 0 else 1


async def adjust(ctx: AppContext, args: argparse.Namespace) -> int:
    partner_id = parse_partner_id(args.partner, "partner")
    async with ctx.database.begin() as conn:
        partner_currency = ""
        if args.amount_minor:
            partner = await partner_service.get(conn, partner_id)
            partner_currency = partner.settings.settlement_currency_code
        a = await periods.create_adjustment(
            conn,
            ctx,
            partner_id,
            parse_period(args.period) if args.period else None,
            args.points,
            args.amount_minor,
            args.currency or partner_currency,
            args.reason,
            args.reference,
        )
    print(f"{a.name}: {a.points:+,} points, {a.amount_minor:+,} minor units of {a.currency}")
    return 0


def add_commands(
    sub: Any,
    with_db: Callable[[argparse.ArgumentParser], argparse.ArgumentParser],
    runner: Callable[[Command], Callable[[argparse.Namespace], Awaitable[int]]],
) -> None:
    group = sub.add_parser("settlement", help="finance: prices, close, statements, netting")
    commands = group.add_subparsers(dest="settlement", required=True)

    prices_group = commands.add_parser("prices", help="partner price lists").add_subparsers(
        dest="prices", required=True
    )
    p = with_db(prices_group.add_parser("set", help="add a price list version"))
    p.add_argument("--partner", required=True, help="partner id")
    p.add_argument("--valid-from", required=True, help="date or time (UTC), e.g. 2026-03-01")
    p.add_argument("--issue", default="", help="issue price per point, major units")
    p.add_argument("--redeem", default="", help="redemption rate per point, major units")
    p.add_argument("--convert", default="", help="conversion price per program unit (mile)")
    p.add_argument("--charity", default="", help="charity value per point")
    p.add_argument("--fee-minor", type=int, default=0, help="fixed fee per transaction, minor")
    p.add_argument("--fee-percent", default="", help="percent fee on issued/redeemed value")
    p.set_defaults(run=runner(prices_set))
    p = with_db(prices_group.add_parser("list", help="a partner's price list versions"))
    p.add_argument("--partner", required=True)
    p.set_defaults(run=runner(prices_list))

    fx_group = commands.add_parser("fx", help="period FX rates").add_subparsers(
        dest="fx", required=True
    )
    p = with_db(fx_group.add_parser("set", help="units of a currency per base unit"))
    p.add_argument("--period", required=True, help="YYYY-MM")
    p.add_argument("--currency", required=True)
    p.add_argument("--rate", required=True)
    p.set_defaults(run=runner(fx_set))

    p = with_db(commands.add_parser("close", help="close a period: freeze its statements"))
    p.add_argument("--period", required=True, help="YYYY-MM")
    p.set_defaults(run=runner(close))

    p = with_db(commands.add_parser("statement", help="show and export statements"))
    p.add_argument("--period", required=True, help="YYYY-MM")
    p.add_argument("--partner", help="one partner (default: all)")
    p.add_argument("--csv", help="write the statements as CSV here")
    p.add_argument("--lines-csv", help="write every line of them as CSV here")
    p.add_argument("--json", help="write the statements as JSON here")
    p.set_defaults(run=runner(statement))

    for name, run, what in (
        ("netting", netting, "net positions and the operator margin"),
        ("liability", liability, "points liability and partner returns"),
    ):
        p = with_db(commands.add_parser(name, help=what))
        p.add_argument("--period", required=True, help="YYYY-MM")
        p.add_argument("--breakage-percent", help="expected breakage (default 20)")
        p.add_argument("--json", help="write the figures as JSON here")
        if name == "netting":
            p.add_argument("--html", help="write the readable report with charts here")
            p.add_argument("--pdf", help="write the report as PDF here")
        p.set_defaults(run=runner(run))

    p = with_db(commands.add_parser("reconcile", help="match a partner's file to the ledger"))
    p.add_argument("--partner", required=True)
    p.add_argument("--period", required=True, help="YYYY-MM")
    p.add_argument("file", help="the partner's CSV (partner_reference,points,...)")
    p.add_argument("--out", help="write every discrepancy as CSV here")
    p.set_defaults(run=runner(reconcile_file))

    p = with_db(commands.add_parser("adjust", help="book a correcting line"))
    p.add_argument("--partner", required=True)
    p.add_argument("--reason", required=True)
    p.add_argument("--reference", default="")
    p.add_argument("--points", type=int, default=0)
    p.add_argument("--amount-minor", type=int, default=0, help="+ in the partner's favour")
    p.add_argument("--currency", default="", help="default: the partner's")
    p.add_argument("--period", help="an open period, YYYY-MM (default: the current one)")
    p.set_defaults(run=runner(adjust))
