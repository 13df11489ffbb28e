"""Donation documents: receipts as HTML and PDF, the finance report as HTML and CSV.

Pure renders of frozen dataclasses; the only files read are the package's templates (and a
Unicode font where the machine has one)."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader

from gateway.adapters import documents
from gateway.adapters.documents import (
    CSV_HEADER,
    donations_report_csv,
    donations_report_html,
    find_unicode_font,
    receipt_html,
    receipt_pdf,
)
from gateway.domain.donations import (
    CharityTotal,
    DailyTotal,
    DonationsReport,
    Receipt,
    SponsorTotal,
)

RECEIPT = Receipt(
    receipt_number="D2026-00000012340",
    donation="charities/oceans/donations/d7",
    charity="charities/oceans",
    charity_display_name="Clean Oceans Trust",
    donor_name="Ada Lovelace",
    donate_time=datetime(2026, 11, 24, 18, 30, tzinfo=UTC),
    points=123_456,
    matched_points=0,
    value_minor=123_456,
    matched_value_minor=0,
    currency="USD",
    currency_exponent=2,
)
MATCHED = replace(
    RECEIPT, matched_points=61_728, matched_value_minor=61_728, sponsor_display_name="Acme Air"
)
NOT_LATIN1 = "Łukasiewicz"
"""Ł (U+0141) is outside Latin-1: Helvetica cannot draw it, DejaVu Sans can."""


class _Page(HTMLParser):
    """What a browser would see: the visible text, the tags opened, and each figure's content."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.figures: dict[str, list[str]] = {}
        self._figure: str | None = None
        self._hidden = 0  # inside <style>, <script> or <title>: not part of the page's text

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "figure":
            self._figure = dict(attrs).get("id") or ""
            self.figures[self._figure] = []
        elif self._figure is not None:
            self.figures[self._figure].append(tag)
        self._hidden += tag in ("style", "script", "title")

    def handle_endtag(self, tag: str) -> None:
        if tag == "figure":
            self._figure = None
        self._hidden -= tag in ("style", "script", "title")

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.text.append(data)

    @property
    def visible(self) -> str:
        return " ".join(" ".join(self.text).split())


def page(html: str) -> _Page:
    parsed = _Page()
    parsed.feed(html)
    parsed.close()
    return parsed


def pdf_text(data: bytes) -> str:
    reader = PdfReader(io.BytesIO(data))
    return " ".join(" ".join(p.extract_text() for p in reader.pages).split())


@pytest.fixture(scope="module")
def unicode_font() -> Path:
    font = find_unicode_font()
    if font is None:
        pytest.skip(
            "no Unicode TrueType font: install fonts-dejavu-core or set COALITION_DOCUMENT_FONT"
        )
    return font


# -- the HTML receipt ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expected",
    [
        "Donation receipt",
        "Receipt number D2026-00000012340",
        "Donor Ada Lovelace",
        "Charity Clean Oceans Trust",
        "charities/oceans",
        "Date 24 November 2026",
        "Points donated 123,456",
        "Value USD 1,234.56",
        "Total to the charity USD 1,234.56",
        "valued at the charity's rate",
    ],
    ids=[
        "heading",
        "number",
        "donor",
        "charity",
        "resource",
        "date",
        "points",
        "value",
        "total",
        "footer",
    ],
)
def test_the_html_receipt_shows_each_field(expected: str) -> None:
    assert expected in page(receipt_html(RECEIPT)).visible


def test_the_html_receipt_is_a_self_contained_html5_document() -> None:
    html = receipt_html(RECEIPT)
    tags = page(html).tags
    assert html.startswith("<!DOCTYPE html>")
    assert ("html", {"lang": "en"}) in tags
    assert ("meta", {"charset": "utf-8"}) in tags
    assert any(t == "meta" and a.get("name") == "viewport" for t, a in tags)
    assert re.search(r"<title>Donation receipt D2026-00000012340</title>", html)
    assert not [a for _, a in tags if "src" in a or "href" in a], "nothing is fetched"


@pytest.mark.parametrize(
    "donor",
    ["<script>alert(1)</script>", '"><img src=x onerror=alert(1)>'],
    ids=["script", "attribute-breakout"],
)
def test_a_hostile_donor_name_is_text_not_markup(donor: str) -> None:
    parsed = page(receipt_html(replace(RECEIPT, donor_name=donor)))
    assert f"Donor {donor}" in parsed.visible
    assert not [t for t, _ in parsed.tags if t in ("script", "img")]


@pytest.mark.parametrize(
    ("receipt", "shown", "total"),
    [
        (RECEIPT, False, "USD 1,234.56"),
        (MATCHED, True, "USD 1,851.84"),
    ],
    ids=["unmatched", "matched"],
)
def test_the_matching_line_appears_only_for_a_matched_donation(
    receipt: Receipt, shown: bool, total: str
) -> None:
    text = page(receipt_html(receipt)).visible
    assert ("Matched by Acme Air: 61,728 points, USD 617.28" in text) is shown
    assert ("Matched by" in text) is shown
    assert f"Total to the charity {total}" in text


# -- the PDF receipt -------------------------------------------------------------------------


def test_the_pdf_receipt_is_a_pdf() -> None:
    assert receipt_pdf(RECEIPT).startswith(b"%PDF-")


@pytest.mark.parametrize(
    "expected",
    [
        "D2026-00000012340",
        "Ada Lovelace",
        "Clean Oceans Trust",
        "24 November 2026",
        "123,456",
        "USD 1,234.56",
        "Acme Air: 61,728 points, USD 617.28",
        "Total to the charity USD 1,851.84",
    ],
    ids=["number", "donor", "charity", "date", "points", "value", "matched", "total"],
)
def test_the_pdf_receipt_says_what_the_html_says(expected: str) -> None:
    assert expected in pdf_text(receipt_pdf(MATCHED))
    assert expected in page(receipt_html(MATCHED)).visible


def test_the_pdf_records_its_title_author_and_the_donation_time() -> None:
    meta = PdfReader(io.BytesIO(receipt_pdf(RECEIPT))).metadata
    assert meta is not None
    assert meta.title == "Donation receipt D2026-00000012340"
    assert meta.author == documents.PDF_AUTHOR
    assert meta.creation_date == RECEIPT.donate_time


def test_the_core_font_prints_a_character_outside_latin1_as_a_question_mark() -> None:
    text = pdf_text(receipt_pdf(replace(RECEIPT, donor_name=f"Jan {NOT_LATIN1}")))
    assert "Jan ?ukasiewicz" in text
    assert NOT_LATIN1 not in text


def test_an_embedded_unicode_font_keeps_every_character(unicode_font: Path) -> None:
    text = pdf_text(receipt_pdf(replace(RECEIPT, donor_name=f"Jan {NOT_LATIN1}"), unicode_font))
    assert f"Jan {NOT_LATIN1}" in text


@pytest.mark.parametrize("embedded", [False, True], ids=["core-font", "unicode-font"])
def test_the_same_receipt_renders_to_the_same_bytes(
    embedded: bool, request: pytest.FixtureRequest
) -> None:
    font = request.getfixturevalue("unicode_font") if embedded else None
    assert receipt_pdf(MATCHED, font) == receipt_pdf(MATCHED, font)


# -- finding a font --------------------------------------------------------------------------


def test_the_font_named_by_the_environment_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    existing = Path(documents.__file__)  # any existing file: the choice is not validated here
    monkeypatch.setenv(documents.FONT_ENV, str(existing))
    assert find_unicode_font() == existing


def test_a_missing_font_in_the_environment_falls_back_to_the_usual_places(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(documents.FONT_ENV, "/nonexistent/font.ttf")
    found = find_unicode_font()
    assert found is None or found in documents.UNICODE_FONT_PATHS


# -- the finance report ----------------------------------------------------------------------


def charity(
    charity_id: str, currency: str = "USD", exponent: int = 2, **changes: Any
) -> CharityTotal:
    total = CharityTotal(
        charity_id=charity_id,
        charity_display_name=charity_id.title(),
        currency=currency,
        currency_exponent=exponent,
        donations=3,
        donors=2,
        points=150_000,
        matched_points=50_000,
        value_minor=150_000,
        matched_value_minor=50_000,
    )
    return replace(total, **changes)


def on(day: int) -> datetime:
    return datetime(2026, 11, day, tzinfo=UTC)


REPORT = DonationsReport(
    period="2026-11",
    start_time=on(1),
    end_time=datetime(2026, 12, 1, tzinfo=UTC),
    charities=(
        charity("oceans"),
        charity(
            "forests",
            donations=1,
            donors=1,
            points=2_000,
            matched_points=0,
            value_minor=1_999,
            matched_value_minor=0,
        ),
        charity("schools", currency="EUR", charity_display_name="<b>Schools</b>"),
        charity("wells", currency="JPY", exponent=0, value_minor=1_500, matched_value_minor=500),
    ),
    sponsors=(
        SponsorTotal("acme", "Acme Air", "oceans", "USD", 50_000, 50_000),
        SponsorTotal("acme", "Acme Air", "schools", "EUR", 50_000, 50_000),
    ),
    daily=(
        DailyTotal("oceans", on(3), 100_000, 50_000),
        DailyTotal("oceans", on(30), 50_000, 0),
        DailyTotal("forests", on(5), 2_000, 0),
        DailyTotal("schools", on(12), 150_000, 50_000),
    ),  # wells: no daily rows, yet a figure
    generate_time=datetime(2026, 12, 1, 3, 0, tzinfo=UTC),
)
CHARITY_IDS = ["oceans", "forests", "schools", "wells"]


@pytest.fixture(scope="module")
def report_page() -> _Page:
    return page(donations_report_html(REPORT))


@pytest.mark.parametrize(
    "expected",
    [
        "Donations 2026-11",
        "1 November 2026 to 30 November 2026",
        "Generated 1 December 2026 at 03:00 UTC",
        "Oceans 3 2 150,000 50,000 USD 1,500.00 USD 500.00 USD 2,000.00",
        "<b>Schools</b> 3 2 150,000 50,000 EUR 1,500.00 EUR 500.00 EUR 2,000.00",
        "Wells 3 2 150,000 50,000 JPY 1,500 JPY 500 JPY 2,000",
        "Acme Air Oceans 50,000 USD 500.00",
        "Acme Air <b>Schools</b> 50,000 EUR 500.00",
    ],
    ids=[
        "title",
        "period",
        "generated",
        "charity",
        "escaped",
        "no-decimals",
        "sponsor",
        "sponsor-eur",
    ],
)
def test_the_report_shows_the_period_and_each_total(report_page: _Page, expected: str) -> None:
    assert expected in report_page.visible


@pytest.mark.parametrize(
    "expected",
    [
        "Total EUR 3 150,000 50,000 EUR 1,500.00 EUR 500.00 EUR 2,000.00",
        "Total JPY 3 150,000 50,000 JPY 1,500 JPY 500 JPY 2,000",
        "Total USD 4 152,000 50,000 USD 1,519.99 USD 500.00 USD 2,019.99",
    ],
    ids=["EUR", "JPY", "USD"],
)
def test_the_report_totals_each_currency_apart(report_page: _Page, expected: str) -> None:
    assert expected in report_page.visible


def test_the_report_has_one_chart_per_charity(report_page: _Page) -> None:
    assert list(report_page.figures) == [f"chart-{c}" for c in CHARITY_IDS]
    for figure, tags in report_page.figures.items():
        assert tags[0] == "figcaption", figure
        assert "svg" in tags, figure


def test_a_charity_without_daily_rows_gets_a_chart_that_says_so() -> None:
    html = donations_report_html(REPORT)
    wells = html[html.index('<figure id="chart-wells">') :]
    assert "No donations" in wells[: wells.index("</figure>")]


def test_the_report_fetches_and_runs_nothing() -> None:
    html = donations_report_html(REPORT)
    parsed = page(html)
    fetched = [
        a for _, a in parsed.tags for k in ("src", "href") if re.match(r"https?:", a.get(k) or "")
    ]
    assert not fetched
    assert not [t for t, _ in parsed.tags if t in ("script", "link", "iframe", "img")]
    assert not re.search(r"@import|url\(\s*['\"]?https?:", html)


# -- the finance CSV -------------------------------------------------------------------------


def csv_rows() -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(donations_report_csv(REPORT))))


def test_the_csv_has_exactly_the_documented_header() -> None:
    header = next(csv.reader(io.StringIO(donations_report_csv(REPORT))))
    assert header == list(CSV_HEADER)
    assert ",".join(header) == (
        "period,charity,charity_display_name,currency,donations,donors,points,matched_points,"
        "value,matched_value,owed"
    )


def test_the_csv_has_a_row_per_charity_then_a_total_per_currency() -> None:
    assert [(r["charity"], r["currency"]) for r in csv_rows()] == [
        ("oceans", "USD"),
        ("forests", "USD"),
        ("schools", "EUR"),
        ("wells", "JPY"),
        ("TOTAL", "EUR"),
        ("TOTAL", "JPY"),
        ("TOTAL", "USD"),
    ]
    assert {r["period"] for r in csv_rows()} == {"2026-11"}


@pytest.mark.parametrize(
    ("charity_id", "value", "matched_value", "owed"),
    [
        ("oceans", "1500.00", "500.00", "2000.00"),
        ("forests", "19.99", "0.00", "19.99"),
        ("wells", "1500", "500", "2000"),
    ],
    ids=["no-grouping", "cents", "no-decimals"],
)
def test_the_csv_writes_money_in_major_units(
    charity_id: str, value: str, matched_value: str, owed: str
) -> None:
    row = next(r for r in csv_rows() if r["charity"] == charity_id)
    assert (row["value"], row["matched_value"], row["owed"]) == (value, matched_value, owed)


@pytest.mark.parametrize("currency", ["EUR", "JPY", "USD"])
def test_each_csv_total_is_the_sum_of_its_currency_rows(currency: str) -> None:
    rows = [r for r in csv_rows() if r["currency"] == currency]
    total = next(r for r in rows if r["charity"] == "TOTAL")
    charities = [r for r in rows if r["charity"] != "TOTAL"]
    for column in ("donations", "points", "matched_points"):
        assert int(total[column]) == sum(int(r[column]) for r in charities), column
    for column in ("value", "matched_value", "owed"):
        assert Decimal(total[column]) == sum(Decimal(r[column]) for r in charities), column
    assert total["charity_display_name"] == ""
    assert total["donors"] == "", "one member may give to several charities"


@pytest.mark.parametrize("name", ["=HYPERLINK(1)", "+1", "-1", "@SUM(1)"])
def test_a_display_name_a_spreadsheet_would_run_is_quoted(name: str) -> None:
    changed = replace(REPORT, charities=(charity("oceans", charity_display_name=name),))
    row = next(csv.DictReader(io.StringIO(donations_report_csv(changed))))
    assert row["charity_display_name"] == f"'{name}"
