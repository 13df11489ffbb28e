"""Settlement documents: statements and lines as CSV, the period report as HTML and PDF.

    statements_csv(statements, names, base)    one row per statement, TOTAL rows per currency
    write_lines_csv(out, lines)                streams a statement's lines, one row each
    report_html(report)                        netting, margin, liability, partner returns and
                                               two charts (net positions; issued vs burned)
    report_pdf(report, font)                   the same tables and the net positions chart

Pure functions of the domain's dataclasses: no database, no network. Money reads
"USD 1,234.56" in documents and "1234.56" in CSV; CSV cells a spreadsheet would run as a
formula are quoted (gateway.adapters.documents.cell_text).
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import pygal
from fpdf import FPDF
from fpdf.enums import XPos, YPos
from fpdf.fonts import FontFace
from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from gateway.adapters.documents import cell_text, decimal_text, pdf_font, without_scripts
from gateway.domain.notices import moment
from gateway.domain.rules import money
from settlement.domain import netting as dn
from settlement.domain import reports as dr
from settlement.domain.pricing import plain
from settlement.service.periods import Line

STATEMENT_CSV_HEADER = (
    "period",
    "partner",
    "currency",
    "points_issued",
    "points_matched",
    "points_redeemed",
    "points_converted",
    "units_converted",
    "points_donated",
    "points_expired",
    "issue_amount",
    "redemption_amount",
    "conversion_amount",
    "donation_amount",
    "fee_amount",
    "adjustment_amount",
    "late_amount",
    "amount_owed",
    "amount_due",
    "net_amount",
    "fx_rate",
    "net_amount_base",
    "base_currency",
    "line_count",
)
LINE_CSV_HEADER = (
    "period",
    "partner",
    "line",
    "kind",
    "component",
    "transaction",
    "adjustment",
    "type",
    "points",
    "units",
    "amount",
    "exact_amount_minor",
    "currency",
    "price_list",
    "partner_reference",
    "create_time",
    "occur_time",
    "reason",
)
CSV_TOTAL = "TOTAL"
CHART_WIDTH_PX = 800
CHART_HEIGHT_PX = 320
PDF_TITLE_SIZE_PT = 16
PDF_BODY_SIZE_PT = 8
PDF_ROW_MM = 5.5
PDF_BAR_MAX_MM = 80.0
PDF_AUTHOR = "Coalition"

_TEMPLATES = Environment(
    loader=PackageLoader("settlement", "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


@dataclass(frozen=True)
class PeriodReport:
    """Everything the readable report shows for one closed period."""

    netting: dn.Netting
    names: dict[str, str]
    liability: dr.Liability
    returns: tuple[dr.PartnerReturn, ...]
    history: tuple[dr.PeriodPoints, ...]


# -- CSV -------------------------------------------------------------------------------------


def statements_csv(statements: Sequence[dn.Statement], base: str, base_exponent: int) -> str:
    """RFC 4180 CSV: a row per statement, then a TOTAL row per currency."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(STATEMENT_CSV_HEADER)
    by_currency: dict[str, list[dn.Statement]] = defaultdict(list)
    for s in statements:
        by_currency[s.currency].append(s)
        row = _statement_row(s.partner_id, s, _figures(s), plain(s.fx_rate), base, base_exponent)
        writer.writerow(row)
    for currency in sorted(by_currency):
        group = by_currency[currency]
        totals = [sum(column) for column in zip(*map(_figures, group), strict=True)]
        writer.writerow(_statement_row(CSV_TOTAL, group[0], totals, "", base, base_exponent))
    return out.getvalue()


_POINT_FIGURES = 7
"""_figures: 7 points figures, then 10 amounts in the statement's currency, then the net in
the base currency and the line count."""


def _figures(s: dn.Statement) -> list[int]:
    return [
        s.points_issued,
        s.points_matched,
        s.points_redeemed,
        s.points_converted,
        s.units_converted,
        s.points_donated,
        s.points_expired,
        s.issue_minor,
        s.redemption_minor,
        s.conversion_minor,
        s.donation_minor,
        s.fee_minor,
        s.adjustment_minor,
        s.late_minor,
        s.owed_minor,
        s.due_minor,
        s.net_minor,
        s.net_base_minor,
        s.line_count,
    ]


def _statement_row(
    partner: str, s: dn.Statement, figures: list[int], fx: str, base: str, base_exponent: int
) -> list[str]:
    """A CSV row of `figures` for the statement's period and currency (s: any statement of
    them, for a TOTAL row)."""
    *amounts, net_base, lines = figures[_POINT_FIGURES:]
    return [
        s.period,
        cell_text(partner),
        s.currency,
        *map(str, figures[:_POINT_FIGURES]),
        *(decimal_text(m, s.exponent) for m in amounts),
        fx,
        decimal_text(net_base, base_exponent),
        base,
        str(lines),
    ]


def write_lines_csv(out: TextIO, lines: Iterable[Line], header: bool = True) -> int:
    """Write lines as CSV rows as they come (a statement may have millions); returns the count."""
    writer = csv.writer(out)
    if header:
        writer.writerow(LINE_CSV_HEADER)
    count = 0
    for line in lines:
        exponent = line.exponent
        writer.writerow(
            [
                line.period,
                line.partner_id,
                line.id,
                line.kind,
                line.component,
                line.transaction_name,
                line.adjustment_name,
                line.txn_type,
                line.points,
                line.units,
                decimal_text(line.amount_minor, exponent),
                plain(line.exact_minor),
                line.currency,
                line.price_list,
                cell_text(line.partner_reference),
                line.create_time.isoformat(),
                line.occur_time.isoformat() if line.occur_time else "",
                cell_text(line.reason),
            ]
        )
        count += 1
    return count


# -- the readable report ---------------------------------------------------------------------


def _position_rows(r: PeriodReport) -> list[tuple[str, ...]]:
    n = r.netting
    rows: list[tuple[str, ...]] = []
    for s in n.positions:
        rows.append(
            (
                r.names.get(s.partner_id, s.partner_id),
                s.currency,
                money(s.owed_minor, s.currency, s.exponent),
                money(s.due_minor, s.currency, s.exponent),
                money(s.net_minor, s.currency, s.exponent),
                plain(s.fx_rate),
                money(s.net_base_minor, n.base_currency, n.base_exponent),
                "receives" if s.net_base_minor > 0 else "pays" if s.net_base_minor < 0 else "-",
            )
        )
    return rows


def _margin_rows(r: PeriodReport) -> list[tuple[str, str]]:
    n, m = r.netting, r.netting.margin

    def shown(amount: int) -> str:
        return money(amount, n.base_currency, n.base_exponent)

    return [
        ("Issue revenue", shown(m.issue_revenue)),
        ("Fee revenue", shown(m.fee_revenue)),
        ("Redemption cost", shown(m.redemption_cost)),
        ("Conversion cost", shown(m.conversion_cost)),
        ("Charity payouts", shown(m.charity_payouts)),
        ("Adjustments", shown(m.adjustments)),
        ("FX and rounding", shown(m.fx_rounding)),
        ("Operator margin", shown(m.total)),
        ("Memo: breakage (expired points at their issue price)", shown(m.breakage)),
    ]


def liability_rows(r: PeriodReport) -> list[tuple[str, str]]:
    a = r.liability
    return [
        ("Points available to members", f"{a.available:,}"),
        ("Points pending (not vested)", f"{a.pending:,}"),
        ("Points held by open authorizations", f"{a.held:,}"),
        ("Points outstanding", f"{a.outstanding:,}"),
        ("Breakage estimate", f"{plain(a.breakage_percent)}%"),
        ("Points expected to be redeemed", f"{a.expected_redemptions:,}"),
        (
            f"Cost per point burned (last {len(a.trailing)} closed period(s))",
            f"{a.base_currency} {plain(a.cost_per_point_base_minor.scaleb(-a.base_exponent))}",
        ),
        (
            "Expected redemption cost",
            money(a.expected_cost_base_minor, a.base_currency, a.base_exponent),
        ),
    ]


def return_rows(r: PeriodReport) -> list[tuple[str, ...]]:
    n = r.netting
    return [
        (
            p.display_name,
            f"{p.points_issued:,}",
            f"{p.points_redeemed:,}",
            f"{p.members:,}",
            f"{p.shared_members:,} ({plain(p.shared_percent)}%)",
            money(p.net_base_minor, n.base_currency, n.base_exponent),
        )
        for p in r.returns
    ]


def _chart(kind: type[pygal.Graph], **options: object) -> pygal.Graph:
    chart = kind(
        js=[],  # pygal's tooltip script comes from the web; the report fetches nothing
        disable_xml_declaration=True,
        width=CHART_WIDTH_PX,
        height=CHART_HEIGHT_PX,
        legend_at_bottom=True,
        **options,
    )
    chart.add_xml_filter(without_scripts)
    return chart


def positions_chart(r: PeriodReport) -> Markup:
    n = r.netting
    chart = _chart(
        pygal.HorizontalBar,
        y_title=f"Net position ({n.base_currency}); + receives, - pays",
        no_data_text="No statements",
        show_legend=False,
    )
    scale = 10**n.base_exponent
    if n.positions:
        chart.x_labels = [r.names.get(s.partner_id, s.partner_id) for s in n.positions]
        chart.add("Net position", [s.net_base_minor / scale for s in n.positions])
    return Markup(chart.render(is_unicode=True))


def history_chart(r: PeriodReport) -> Markup:
    chart = _chart(pygal.Bar, y_title="Points", no_data_text="No closed periods")
    if r.history:
        chart.x_labels = [h.period for h in r.history]
        chart.add("Issued", [h.issued for h in r.history])
        chart.add("Redeemed, converted, donated", [h.burned for h in r.history])
        chart.add("Expired", [h.expired for h in r.history])
    return Markup(chart.render(is_unicode=True))


POSITION_HEADINGS = (
    "Partner",
    "Currency",
    "Owes",
    "Is owed",
    "Net",
    "FX rate",
    "Net (base)",
    "",
)
RETURN_HEADINGS = (
    "Partner",
    "Points issued",
    "Points spent there",
    "Members",
    "Shared with other partners",
    "Net (base)",
)


def report_html(r: PeriodReport) -> str:
    n = r.netting
    return _TEMPLATES.get_template("settlement_report.html.j2").render(
        title=f"Settlement {n.period}",
        generated=moment(n.create_time),
        base=n.base_currency,
        position_headings=POSITION_HEADINGS,
        positions=_position_rows(r),
        net_total=money(
            sum(s.net_base_minor for s in n.positions), n.base_currency, n.base_exponent
        ),
        margin=_margin_rows(r),
        liability=liability_rows(r),
        return_headings=RETURN_HEADINGS,
        returns=return_rows(r),
        positions_chart=positions_chart(r),
        history_chart=history_chart(r),
    )


def report_pdf(r: PeriodReport, font: Path | None = None) -> bytes:
    """An A4 landscape PDF of the same report; bars drawn as rectangles (no SVG needed)."""
    n = r.netting
    pdf = FPDF(orientation="L", format="A4", unit="mm")
    pdf.set_creation_date(n.create_time)
    pdf.set_title(f"Settlement {n.period}")
    pdf.set_author(PDF_AUTHOR)
    pdf.set_lang("en")
    family, text = pdf_font(pdf, font)
    pdf.add_page()
    pdf.set_font(family, size=PDF_TITLE_SIZE_PT)
    pdf.cell(text=text(f"Settlement {n.period}"), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font(family, size=PDF_BODY_SIZE_PT)
    pdf.cell(
        text=text(f"Generated {moment(n.create_time)}; base currency {n.base_currency}."),
        new_x=XPos.LMARGIN,
        new_y=YPos.NEXT,
    )
    pdf.ln(3)
    _pdf_table(
        pdf,
        family,
        text,
        "Net positions",
        POSITION_HEADINGS[:-1],
        [row[:-1] for row in _position_rows(r)],
    )
    _pdf_bars(pdf, text, r)
    _pdf_table(pdf, family, text, "Operator margin", ("", n.base_currency), _margin_rows(r))
    _pdf_table(pdf, family, text, "Points liability", ("", ""), liability_rows(r))
    _pdf_table(pdf, family, text, "Partner returns", RETURN_HEADINGS, return_rows(r))
    return bytes(pdf.output())


def _pdf_table(
    pdf: FPDF,
    family: str,
    text: Callable[[str], str],
    title: str,
    headings: Sequence[str],
    rows: Sequence[Sequence[str]],
) -> None:
    pdf.set_font(family, size=PDF_BODY_SIZE_PT + 2)
    pdf.cell(text=text(title), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font(family, size=PDF_BODY_SIZE_PT)
    # Headings in the regular face: a bold one would need a second font file.
    plain_headings = FontFace(emphasis="")
    with pdf.table(
        text_align="LEFT",
        first_row_as_headings=True,
        line_height=PDF_ROW_MM,
        headings_style=plain_headings,
    ) as t:
        for row in [headings, *rows]:
            cells = t.row()
            for cell in row:
                cells.cell(text(cell))
    pdf.ln(4)


def _pdf_bars(pdf: FPDF, text: Callable[[str], str], r: PeriodReport) -> None:
    """Net positions in the base currency as horizontal bars around a zero line."""
    positions = r.netting.positions
    if not positions:
        return
    widest = max(abs(s.net_base_minor) for s in positions) or 1
    zero_x = pdf.l_margin + 60 + PDF_BAR_MAX_MM
    for s in positions:
        y = pdf.get_y()
        pdf.set_x(pdf.l_margin)
        pdf.cell(58, PDF_ROW_MM, text(r.names.get(s.partner_id, s.partner_id)))
        width = PDF_BAR_MAX_MM * abs(s.net_base_minor) / widest
        pdf.set_fill_color(46, 125, 50) if s.net_base_minor >= 0 else pdf.set_fill_color(
            198, 40, 40
        )
        x = zero_x if s.net_base_minor >= 0 else zero_x - width
        pdf.rect(x, y + 1, max(width, 0.2), PDF_ROW_MM - 2, style="F")
        pdf.set_y(y + PDF_ROW_MM)
    pdf.ln(4)
