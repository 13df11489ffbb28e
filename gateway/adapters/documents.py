"""Donation documents: a receipt as HTML or PDF, a month's finance report as HTML or CSV.

    receipt_html(receipt)            one HTML5 page, inline CSS, nothing fetched
    receipt_pdf(receipt, font)       A4; `font` a TrueType file (find_unicode_font) or None
    donations_report_html(report)    tables per charity and sponsor, an inline SVG chart each
    donations_report_csv(report)     one row per charity, one TOTAL row per currency

Pure functions of the domain's frozen dataclasses: no database, no network, and the only files
read are the package's templates and the font. The receipt's lines are drawn up once
(`_receipt_lines`) so that the HTML and the PDF cannot say different things. Money reads
"USD 1,234.56" (the CSV: "1234.56"), dates "24 November 2026" in UTC, points "1,500". Sums are
kept per currency: the report never adds dollars to euros.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, timedelta
from decimal import Decimal
from pathlib import Path
from xml.etree import ElementTree

import pygal
from fpdf import FPDF
from fpdf.enums import XPos, YPos
from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from gateway.domain.donations import (
    CharityTotal,
    DailyTotal,
    DonationsReport,
    Receipt,
    SponsorTotal,
)
from gateway.domain.notices import day, last_day, moment
from gateway.domain.rules import money

FONT_ENV = "COALITION_DOCUMENT_FONT"
UNICODE_FONT_PATHS = (
    Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),  # Debian, Ubuntu
    Path("/usr/share/fonts/dejavu/DejaVuSans.ttf"),  # Fedora, Alpine
    Path("/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf"),  # Fedora 36 and later
    Path("/usr/share/fonts/TTF/DejaVuSans.ttf"),  # Arch
    Path("/usr/local/share/fonts/DejaVuSans.ttf"),  # FreeBSD, hand installs
    Path("/Library/Fonts/DejaVuSans.ttf"),  # macOS
)
RECEIPT_TITLE = "Donation receipt"
RECEIPT_FOOTER = (
    "This receipt records a donation of loyalty points, valued at the charity's rate for points "
    "at the time of the donation."
)
PDF_AUTHOR = "Coalition"
PDF_FONT_UNICODE = "DejaVu"
PDF_FONT_CORE = "Helvetica"
PDF_TITLE_SIZE_PT = 18
PDF_BODY_SIZE_PT = 11
PDF_FOOTER_SIZE_PT = 9
PDF_LINE_MM = 7.0
PDF_LABEL_WIDTH_MM = 55.0
PDF_GAP_MM = 6.0
CORE_FONT_ENCODING = "latin-1"
"""The PDF core fonts draw Latin-1 only; anything else prints as "?"."""
CHART_DAYS_MAX = 31
"""A report covers one calendar month: one bar per day."""
CHART_WIDTH_PX = 800
CHART_HEIGHT_PX = 300
CSV_HEADER = (
    "period",
    "charity",
    "charity_display_name",
    "currency",
    "donations",
    "donors",
    "points",
    "matched_points",
    "value",
    "matched_value",
    "owed",
)
CSV_TOTAL = "TOTAL"
CSV_FORMULA_CHARS = ("=", "+", "-", "@", "\t", "\r")
"""A cell starting with one of these is a formula to a spreadsheet (OWASP "CSV injection")."""

_Text = Callable[[str], str]
_TEMPLATES = Environment(
    loader=PackageLoader("gateway.adapters", "templates"),
    autoescape=True,  # every template is HTML; a donor named "<script>" stays text
    undefined=StrictUndefined,  # a misspelt field fails the render, not the reader
    trim_blocks=True,
    lstrip_blocks=True,
)


# -- receipts --------------------------------------------------------------------------------


def _receipt_lines(receipt: Receipt) -> list[tuple[str, str]]:
    """(label, text) in reading order: what both the HTML and the PDF receipt say."""
    lines = [
        ("Receipt number", receipt.receipt_number),
        ("Donor", receipt.donor_name),
        ("Charity", receipt.charity_display_name),
        ("Charity resource", receipt.charity),
        ("Date", day(receipt.donate_time)),
        ("Points donated", f"{receipt.points:,}"),
        ("Value", _money(receipt, receipt.value_minor)),
    ]
    if receipt.matched_points > 0:
        sponsor = receipt.sponsor_display_name or "A sponsor"
        matched_value = _money(receipt, receipt.matched_value_minor)
        lines.append(
            ("Matched by", f"{sponsor}: {receipt.matched_points:,} points, {matched_value}")
        )
    total = receipt.value_minor + receipt.matched_value_minor
    lines.append(("Total to the charity", _money(receipt, total)))
    return lines


def _money(receipt: Receipt, amount_minor: int) -> str:
    return money(amount_minor, receipt.currency, receipt.currency_exponent)


def receipt_html(receipt: Receipt) -> str:
    return _TEMPLATES.get_template("receipt.html.j2").render(
        title=RECEIPT_TITLE,
        number=receipt.receipt_number,
        lines=_receipt_lines(receipt),
        footer=RECEIPT_FOOTER,
    )


def find_unicode_font() -> Path | None:
    """A TrueType font for names beyond Latin-1: $COALITION_DOCUMENT_FONT, else DejaVu Sans
    where distributions install it, else None (receipts fall back to Helvetica). DejaVu draws
    Latin, Greek and Cyrillic but not CJK: fpdf2 logs the glyphs it lacks and leaves them out."""
    chosen = os.environ.get(FONT_ENV, "")
    candidates = (Path(chosen), *UNICODE_FONT_PATHS) if chosen else UNICODE_FONT_PATHS
    return next((path for path in candidates if path.is_file()), None)


def receipt_pdf(receipt: Receipt, font: Path | None = None) -> bytes:
    """An A4 PDF receipt; the same receipt and font always give the same bytes."""
    pdf = FPDF(format="A4", unit="mm")
    # The dates and the file /ID come from the receipt, not the clock: a receipt fetched twice
    # is the same file.
    pdf.set_creation_date(receipt.donate_time.astimezone(UTC))
    pdf.set_title(f"{RECEIPT_TITLE} {receipt.receipt_number}")
    pdf.set_author(PDF_AUTHOR)
    pdf.set_subject(f"Donation to {receipt.charity_display_name}")
    pdf.set_lang("en")
    family, text = pdf_font(pdf, font)
    pdf.add_page()
    pdf.set_font(family, size=PDF_TITLE_SIZE_PT)
    pdf.cell(text=RECEIPT_TITLE, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(PDF_GAP_MM)
    pdf.set_font(family, size=PDF_BODY_SIZE_PT)
    for label, value in _receipt_lines(receipt):
        pdf.cell(PDF_LABEL_WIDTH_MM, PDF_LINE_MM, text(label))
        pdf.multi_cell(0, PDF_LINE_MM, text(value), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(PDF_GAP_MM)
    pdf.set_font(family, size=PDF_FOOTER_SIZE_PT)
    pdf.multi_cell(0, PDF_LINE_MM, text(RECEIPT_FOOTER), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    return bytes(pdf.output())


def pdf_font(pdf: FPDF, font: Path | None) -> tuple[str, _Text]:
    """The font family to write with, and what a string must become to be drawn in it."""
    if font is None:
        return PDF_FONT_CORE, _latin1
    pdf.add_font(PDF_FONT_UNICODE, fname=font)
    return PDF_FONT_UNICODE, str


def _latin1(text: str) -> str:
    return text.encode(CORE_FONT_ENCODING, "replace").decode(CORE_FONT_ENCODING)


# -- the finance report ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Chart:
    charity_id: str
    caption: str
    svg: Markup


@dataclass(frozen=True)
class _CurrencyTotal:
    currency: str
    exponent: int
    donations: int
    points: int
    matched_points: int
    value_minor: int
    matched_value_minor: int

    @property
    def owed_minor(self) -> int:
        return self.value_minor + self.matched_value_minor


_CHARITY_HEADINGS = (
    "Charity",
    "Donations",
    "Donors",
    "Points",
    "Matched points",
    "Value",
    "Matched value",
    "Owed",
)
_SPONSOR_HEADINGS = ("Sponsor", "Charity", "Matched points", "Matched value")


def donations_report_html(report: DonationsReport) -> str:
    names = {c.charity_id: c.charity_display_name for c in report.charities}
    return _TEMPLATES.get_template("donations_report.html.j2").render(
        title=f"Donations {report.period}",
        span=f"{day(report.start_time)} to {last_day(report.end_time)}, UTC",
        generated=moment(report.generate_time),
        charity_headings=_CHARITY_HEADINGS,
        charity_rows=[_charity_row(c) for c in report.charities],
        charity_totals=[_total_row(t) for t in _currency_totals(report.charities)],
        sponsor_headings=_SPONSOR_HEADINGS,
        sponsor_rows=[_sponsor_row(s, names) for s in report.sponsors],
        charts=[_chart(charity_id, names[charity_id], report) for charity_id in names],
    )


def _charity_row(c: CharityTotal) -> tuple[str, ...]:
    def shown(minor: int) -> str:
        return money(minor, c.currency, c.currency_exponent)

    return (
        c.charity_display_name,
        f"{c.donations:,}",
        f"{c.donors:,}",
        f"{c.points:,}",
        f"{c.matched_points:,}",
        shown(c.value_minor),
        shown(c.matched_value_minor),
        shown(c.owed_minor),
    )


def _total_row(t: _CurrencyTotal) -> tuple[str, ...]:
    def shown(minor: int) -> str:
        return money(minor, t.currency, t.exponent)

    return (
        f"Total {t.currency}",
        f"{t.donations:,}",
        "",  # one member may give to several charities: donors do not add up
        f"{t.points:,}",
        f"{t.matched_points:,}",
        shown(t.value_minor),
        shown(t.matched_value_minor),
        shown(t.owed_minor),
    )


def _sponsor_row(s: SponsorTotal, names: dict[str, str]) -> tuple[str, ...]:
    return (
        s.sponsor_display_name,
        names.get(s.charity_id, s.charity_id),
        f"{s.matched_points:,}",
        money(s.matched_value_minor, s.currency, s.currency_exponent),
    )


def _currency_totals(charities: Iterable[CharityTotal]) -> list[_CurrencyTotal]:
    """One total per currency, in currency order."""
    by_currency: dict[str, list[CharityTotal]] = {}
    for c in charities:
        by_currency.setdefault(c.currency, []).append(c)
    return [_sum(rows) for _, rows in sorted(by_currency.items())]


def _sum(rows: Sequence[CharityTotal]) -> _CurrencyTotal:
    return _CurrencyTotal(
        currency=rows[0].currency,
        exponent=rows[0].currency_exponent,
        donations=sum(r.donations for r in rows),
        points=sum(r.points for r in rows),
        matched_points=sum(r.matched_points for r in rows),
        value_minor=sum(r.value_minor for r in rows),
        matched_value_minor=sum(r.matched_value_minor for r in rows),
    )


def _report_days(report: DonationsReport) -> list[date]:
    first = report.start_time.astimezone(UTC).date()
    count = (report.end_time - report.start_time) // timedelta(days=1)
    assert count <= CHART_DAYS_MAX, "a donations report covers one calendar month"
    return [first + timedelta(days=i) for i in range(count)]


def _chart(charity_id: str, display_name: str, report: DonationsReport) -> _Chart:
    """A stacked bar per day of the period; a charity with no donations that month gets the
    same chart with pygal's no-data text, so that every charity has one figure."""
    rows = [d for d in report.daily if d.charity_id == charity_id]
    chart = pygal.StackedBar(
        js=[],  # pygal's tooltip script comes from the web; the report fetches nothing
        disable_xml_declaration=True,  # the SVG goes inside HTML, not into a file
        width=CHART_WIDTH_PX,
        height=CHART_HEIGHT_PX,
        legend_at_bottom=True,
        y_title="Points",
        x_title=f"Day of {report.period} (UTC)",
        no_data_text="No donations",
        value_formatter=_points_label,
    )
    chart.add_xml_filter(without_scripts)
    if rows:
        days = _report_days(report)
        donated, matched = _daily_series(rows, days)
        chart.x_labels = [str(d.day) for d in days]
        chart.add("Donated", donated)
        chart.add("Matched", matched)
    caption = f"{display_name}: points donated and matched each day"
    # pygal builds the SVG with ElementTree, which escapes every name and label in it.
    return _Chart(charity_id, caption, Markup(chart.render(is_unicode=True)))


def _points_label(points: float) -> str:
    """Axis and value labels: "1,500"; a fraction only where pygal splits a tiny scale."""
    return f"{points:,.0f}" if points == int(points) else f"{points:,}"


def without_scripts(svg: ElementTree.Element) -> ElementTree.Element:
    """pygal inlines a script that only configures its web tooltips, which the report does not
    load: dropped, so that the report runs no script at all (mail clients, strict CSPs)."""
    for parent in svg.iter():
        for child in list(parent):
            if isinstance(child.tag, str) and child.tag.rsplit("}", 1)[-1] == "script":
                parent.remove(child)
    return svg


def _daily_series(rows: Iterable[DailyTotal], days: Sequence[date]) -> tuple[list[int], ...]:
    """Donated and matched points per day, 0 on a day without donations."""
    by_day = {row.day.astimezone(UTC).date(): row for row in rows}
    donated = [by_day[d].points if d in by_day else 0 for d in days]
    matched = [by_day[d].matched_points if d in by_day else 0 for d in days]
    return donated, matched


def donations_report_csv(report: DonationsReport) -> str:
    """RFC 4180 CSV (CRLF line ends): one row per charity, then one TOTAL row per currency."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_HEADER)
    for c in report.charities:
        writer.writerow(
            (
                report.period,
                c.charity_id,
                cell_text(c.charity_display_name),
                c.currency,
                c.donations,
                c.donors,
                c.points,
                c.matched_points,
                decimal_text(c.value_minor, c.currency_exponent),
                decimal_text(c.matched_value_minor, c.currency_exponent),
                decimal_text(c.owed_minor, c.currency_exponent),
            )
        )
    for t in _currency_totals(report.charities):
        writer.writerow(
            (
                report.period,
                CSV_TOTAL,
                "",
                t.currency,
                t.donations,
                "",  # one member may give to several charities: donors do not add up
                t.points,
                t.matched_points,
                decimal_text(t.value_minor, t.exponent),
                decimal_text(t.matched_value_minor, t.exponent),
                decimal_text(t.owed_minor, t.exponent),
            )
        )
    return out.getvalue()


def decimal_text(amount_minor: int, exponent: int) -> str:
    """ "1234.56": major units, no grouping, what a spreadsheet reads as a number."""
    return f"{Decimal(amount_minor).scaleb(-exponent):.{exponent}f}"


def cell_text(text: str) -> str:
    """A partner-chosen name that a spreadsheet would run as a formula is quoted as text."""
    return f"'{text}" if text.startswith(CSV_FORMULA_CHARS) else text
