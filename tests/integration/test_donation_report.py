"""The monthly donations report against a real database, and `coalition donations report`.

Two months (November and December 2026) of donations to three charities settling in USD, GBP
and JPY, some matched by sponsors (one campaign runs out of budget mid-month), plus donations
on each side of every month boundary. The report must equal two independent recomputations:
from what the test donated (with the matches it expects) and from the `donations` rows read
back one by one and summed in Python.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import re
import sys
from collections import defaultdict
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from gateway.domain import donations as dd
from gateway.domain.errors import InvalidArgument
from gateway.domain.members import ContactDetails, Member
from gateway.domain.partners import Partner, PartnerSettings, PartnerType
from gateway.service import donations, earning
from gateway.service import members as members_service
from gateway.service import partners as partner_service
from gateway.service.context import AppContext

COMMAND_TIMEOUT_S = 60
CLI_SECRET = "report-test-secret-key-0123456789abcdef"
POINTS_EACH = 30_000
"""What every member earns up front: more than they give over the two months."""


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


@dataclass(frozen=True)
class CharitySpec:
    id: str
    display_name: str
    currency: str
    per_thousand: int
    """Minor units per 1,000 points."""


RED_CROSS = CharitySpec("red-cross", "Red Cross", "USD", 1_250)
OWLS = CharitySpec("save-the-owls", "Save the Owls", "GBP", 800)
FOOD = CharitySpec("food-bank", "Food Bank", "JPY", 333)
CHARITIES = {c.id: c for c in (RED_CROSS, OWLS, FOOD)}
EXPONENTS = {"USD": 2, "GBP": 2, "JPY": 0}
"""Digits of the minor unit (ISO 4217), written out so the test does not ask babel."""


@dataclass(frozen=True)
class MatchSpec:
    sponsor: str
    charity: str
    percent: int
    budget: int
    start: datetime
    end: datetime


MATCHES = (
    # Runs out mid-November: 500 + 388 + 346 (in part) = 1,234.
    MatchSpec("grand-hotel", RED_CROSS.id, 50, 1_234, utc(2026, 11, 10), utc(2026, 12, 10)),
    MatchSpec("city-taxi", OWLS.id, 100, 10_000, utc(2026, 12, 1), utc(2027, 1, 1)),
)

GIFTS: tuple[tuple[datetime, int, str, int], ...] = (
    # (when, member index, charity, points), in time order
    (utc(2026, 10, 31, 23, 59, 59, 999_999), 0, RED_CROSS.id, 500),
    (utc(2026, 11, 1), 0, RED_CROSS.id, 999),
    (utc(2026, 11, 2, 10), 1, OWLS.id, 1_001),
    (utc(2026, 11, 10, 12), 2, RED_CROSS.id, 1_000),
    (utc(2026, 11, 15, 8), 0, RED_CROSS.id, 777),
    (utc(2026, 11, 15, 9), 3, FOOD.id, 2_999),
    (utc(2026, 11, 20, 13), 1, RED_CROSS.id, 1_000),
    (utc(2026, 11, 21), 2, RED_CROSS.id, 400),
    (utc(2026, 11, 30, 23, 59, 59), 3, OWLS.id, 123),
    (utc(2026, 11, 30, 23, 59, 59, 999_999), 0, FOOD.id, 10),
    (utc(2026, 12, 1), 1, OWLS.id, 456),
    (utc(2026, 12, 5, 7, 30), 2, FOOD.id, 1_500),
    (utc(2026, 12, 5, 18), 2, FOOD.id, 1),
    (utc(2026, 12, 31, 23, 59, 59), 3, RED_CROSS.id, 250),
    (utc(2027, 1, 1), 0, RED_CROSS.id, 100),
)


@dataclass(frozen=True)
class Gift:
    """One donation as the test made it, with the match the rules promise."""

    when: datetime
    member_id: str
    charity_id: str
    points: int
    matched: int
    sponsor_id: str | None


@dataclass(frozen=True)
class Totals:
    """A charity's month, in the report's terms."""

    donations: int
    donors: int
    points: int
    matched_points: int
    value_minor: int
    matched_value_minor: int


def expected_gifts(member_ids: list[str]) -> list[Gift]:
    """The donations with the matches the rules promise: a live campaign matches `percent` of
    the points, at most what is left of its budget."""
    spent: dict[MatchSpec, int] = defaultdict(int)
    gifts = []
    for when, who, charity, points in GIFTS:
        live = [m for m in MATCHES if m.charity == charity and m.start <= when < m.end]
        matched, sponsor = 0, None
        if live:
            (campaign,) = live
            matched = min(points * campaign.percent // 100, campaign.budget - spent[campaign])
            spent[campaign] += matched
            sponsor = campaign.sponsor if matched else None
        gifts.append(Gift(when, member_ids[who], charity, points, matched, sponsor))
    return gifts


def totals_from_gifts(gifts: list[Gift], start: datetime, end: datetime) -> dict[str, Totals]:
    by_charity: dict[str, list[Gift]] = defaultdict(list)
    for gift in gifts:
        if start <= gift.when < end:
            by_charity[gift.charity_id].append(gift)
    found = {}
    for charity_id, given in by_charity.items():
        rate = CHARITIES[charity_id].per_thousand
        found[charity_id] = Totals(
            donations=len(given),
            donors=len({g.member_id for g in given}),
            points=sum(g.points for g in given),
            matched_points=sum(g.matched for g in given),
            # Each donation is valued (and rounded down) on its own.
            value_minor=sum(g.points * rate // 1000 for g in given),
            matched_value_minor=sum(g.matched * rate // 1000 for g in given),
        )
    return found


async def rows_of(ctx: AppContext) -> list[Any]:
    d = donations.DONATIONS
    async with ctx.database.connect() as conn:
        return list((await conn.execute(select(d).order_by(d.c.seq))).all())


def totals_from_rows(rows: list[Any], start: datetime, end: datetime) -> dict[str, Totals]:
    """The same totals, summed in Python from the stored rows."""
    by_charity: dict[str, list[Any]] = defaultdict(list)
    for row in rows:
        if start <= row.create_time < end:
            by_charity[row.charity_id].append(row)
    return {
        charity_id: Totals(
            donations=len(given),
            donors=len({r.member_id for r in given}),
            points=sum(r.points for r in given),
            matched_points=sum(r.matched_points for r in given),
            value_minor=sum(r.value_minor for r in given),
            matched_value_minor=sum(r.matched_value_minor for r in given),
        )
        for charity_id, given in by_charity.items()
    }


def totals_of(report: dd.DonationsReport) -> dict[str, Totals]:
    found = {}
    for c in report.charities:
        assert c.charity_id not in found, f"{c.charity_id} reported twice"
        assert c.currency == CHARITIES[c.charity_id].currency
        assert c.charity_display_name == CHARITIES[c.charity_id].display_name
        assert c.owed_minor == c.value_minor + c.matched_value_minor
        found[c.charity_id] = Totals(
            c.donations, c.donors, c.points, c.matched_points, c.value_minor, c.matched_value_minor
        )
    return found


async def report_of(ctx: AppContext, period: str) -> dd.DonationsReport:
    async with ctx.database.connect() as conn:
        return await donations.report(conn, ctx, period)


# -- seeding ---------------------------------------------------------------------------------


async def _partner(
    ctx: AppContext, partner_id: str, kind: PartnerType, settings: PartnerSettings
) -> Partner:
    async with ctx.database.begin() as conn:
        return await partner_service.create(conn, ctx, partner_id, kind, settings)


async def _member(ctx: AppContext, name: str, hotel: Partner) -> Member:
    async with ctx.database.begin() as conn:
        member = await members_service.enroll(conn, ctx, ContactDetails(name))
        txn, _ = await earning.earn(
            conn, ctx, hotel, member.id, earning.Action("BONUS", POINTS_EACH)
        )
    assert txn.points == POINTS_EACH
    return member


@dataclass(frozen=True)
class Seeded:
    gifts: list[Gift]
    donations: list[dd.Donation]


@pytest.fixture
async def seeded(ctx: AppContext) -> Seeded:
    hotel = await _partner(
        ctx, "grand-hotel", PartnerType.HOTEL, PartnerSettings("Grand Hotel", Decimal(1))
    )
    await _partner(
        ctx, "city-taxi", PartnerType.RIDE_SHARE, PartnerSettings("City Taxi", Decimal(1))
    )
    for spec in CHARITIES.values():
        await _partner(
            ctx,
            spec.id,
            PartnerType.CHARITY,
            PartnerSettings(
                spec.display_name,
                settlement_currency_code=spec.currency,
                charity=dd.CharityProfile(value_per_thousand_minor=spec.per_thousand),
            ),
        )
    members = [await _member(ctx, name, hotel) for name in ("Ada", "Grace", "Alan", "Edsger")]
    for m in MATCHES:  # created ahead of time, at the clock's start (January 2026)
        async with ctx.database.begin() as conn:
            await donations.create_matching(
                conn,
                ctx,
                dd.MatchingDraft(m.sponsor, m.charity, m.percent, m.budget, m.start, m.end),
            )
    gifts = expected_gifts([m.id for m in members])
    made = []
    for gift in gifts:
        ctx.clock.set(gift.when)  # type: ignore[attr-defined]
        async with ctx.database.begin() as conn:
            donation, _ = await donations.donate(
                conn, ctx, gift.member_id, gift.charity_id, gift.points
            )
        assert (donation.matched_points, donation.sponsor_id) == (gift.matched, gift.sponsor_id)
        made.append(donation)
    return Seeded(gifts, made)


# -- totals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "period",
    [
        pytest.param("2026-10", id="october-one-donation-at-its-last-instant"),
        pytest.param("2026-11", id="november-with-a-budget-spent-mid-month"),
        pytest.param("2026-12", id="december-into-the-new-year"),
        pytest.param("2027-01", id="january-one-donation-at-its-first-instant"),
    ],
)
async def test_report_totals_equal_the_donations_made_and_stored(
    ctx: AppContext, seeded: Seeded, period: str
) -> None:
    report = await report_of(ctx, period)
    start, end = donations.month_bounds(period)
    assert (report.period, report.start_time, report.end_time) == (period, start, end)

    from_gifts = totals_from_gifts(seeded.gifts, start, end)
    from_rows = totals_from_rows(await rows_of(ctx), start, end)
    assert from_gifts, "every month has donations"
    assert from_rows == from_gifts, "the stored rows say what was donated"
    assert totals_of(report) == from_gifts
    assert [c.charity_id for c in report.charities] == sorted(from_gifts)


async def test_november_in_numbers(ctx: AppContext, seeded: Seeded) -> None:
    """The totals worked out by hand, so a shared mistake in the recomputations shows."""
    totals = totals_of(await report_of(ctx, "2026-11"))
    assert totals[RED_CROSS.id] == Totals(
        donations=5,
        donors=3,
        points=999 + 1_000 + 777 + 1_000 + 400,
        matched_points=500 + 388 + 346,
        # 1.25 cents a point, each donation rounded down: 1248 + 1250 + 971 + 1250 + 500
        value_minor=5_219,
        matched_value_minor=625 + 485 + 432,
    )
    assert totals[OWLS.id] == Totals(2, 2, 1_124, 0, 800 + 98, 0)
    assert totals[FOOD.id] == Totals(2, 2, 3_009, 0, 998 + 3, 0)


async def test_sponsors_are_reported_per_charity(ctx: AppContext, seeded: Seeded) -> None:
    november = await report_of(ctx, "2026-11")
    december = await report_of(ctx, "2026-12")
    assert [asdict(s) for s in november.sponsors] == [
        {
            "sponsor_id": "grand-hotel",
            "sponsor_display_name": "Grand Hotel",
            "charity_id": RED_CROSS.id,
            "currency": "USD",
            "matched_points": 1_234,
            "matched_value_minor": 1_542,
            "currency_exponent": 2,
        }
    ]
    assert [(s.sponsor_id, s.charity_id, s.matched_points) for s in december.sponsors] == [
        ("city-taxi", OWLS.id, 456)
    ]
    assert december.sponsors[0].matched_value_minor == 456 * 800 // 1000


async def test_every_donation_is_in_exactly_one_month(ctx: AppContext, seeded: Seeded) -> None:
    reports = [await report_of(ctx, p) for p in ("2026-10", "2026-11", "2026-12", "2027-01")]
    assert sum(c.donations for r in reports for c in r.charities) == len(GIFTS)
    assert sum(c.points for r in reports for c in r.charities) == sum(g[3] for g in GIFTS)


def daily_of(report: dd.DonationsReport) -> dict[tuple[str, date], tuple[int, int]]:
    return {(d.charity_id, d.day.date()): (d.points, d.matched_points) for d in report.daily}


async def test_the_last_instant_of_a_month_belongs_to_it_and_midnight_to_the_next(
    ctx: AppContext, seeded: Seeded
) -> None:
    october = daily_of(await report_of(ctx, "2026-10"))
    november = daily_of(await report_of(ctx, "2026-11"))
    december = daily_of(await report_of(ctx, "2026-12"))
    january = daily_of(await report_of(ctx, "2027-01"))

    assert october == {(RED_CROSS.id, date(2026, 10, 31)): (500, 0)}
    assert november[(RED_CROSS.id, date(2026, 11, 1))] == (999, 0), "00:00:00 opens the month"
    assert november[(OWLS.id, date(2026, 11, 30))] == (123, 0), "23:59:59 closes it"
    assert november[(FOOD.id, date(2026, 11, 30))] == (10, 0), "and 23:59:59.999999"
    assert december[(OWLS.id, date(2026, 12, 1))] == (456, 456)
    assert december[(RED_CROSS.id, date(2026, 12, 31))] == (250, 0)
    assert january == {(RED_CROSS.id, date(2027, 1, 1)): (100, 0)}


async def test_daily_totals_add_up_to_the_month(ctx: AppContext, seeded: Seeded) -> None:
    for period in ("2026-11", "2026-12"):
        report = await report_of(ctx, period)
        start, end = donations.month_bounds(period)
        per_day: dict[tuple[str, date], list[int]] = defaultdict(lambda: [0, 0])
        for g in seeded.gifts:
            if start <= g.when < end:
                per_day[(g.charity_id, g.when.date())][0] += g.points
                per_day[(g.charity_id, g.when.date())][1] += g.matched
        assert daily_of(report) == {k: tuple(v) for k, v in per_day.items()}
        assert all(
            d.day.tzinfo is not None and d.day.time() == datetime.min.time() for d in report.daily
        ), "days are UTC midnights"
        assert [d.day for d in report.daily if d.charity_id == FOOD.id] == sorted(
            d.day for d in report.daily if d.charity_id == FOOD.id
        )


async def test_a_month_without_donations_reports_nothing(ctx: AppContext, seeded: Seeded) -> None:
    report = await report_of(ctx, "2027-02")
    assert (report.charities, report.sponsors, report.daily) == ((), (), ())


@pytest.mark.parametrize(
    ("period", "start", "end"),
    [
        pytest.param("2026-11", utc(2026, 11, 1), utc(2026, 12, 1), id="november"),
        pytest.param("2026-12", utc(2026, 12, 1), utc(2027, 1, 1), id="december"),
        pytest.param("2028-02", utc(2028, 2, 1), utc(2028, 3, 1), id="leap-february"),
    ],
)
def test_month_bounds(period: str, start: datetime, end: datetime) -> None:
    assert donations.month_bounds(period) == (start, end)


@pytest.mark.parametrize(
    "period",
    [
        pytest.param("2026-13", id="month-13"),
        pytest.param("2026-00", id="month-0"),
        pytest.param("26-11", id="two-digit-year"),
        pytest.param("2026/11", id="slash"),
        pytest.param("2026-11-01", id="a-day"),
        pytest.param("", id="empty"),
        pytest.param("november", id="words"),
    ],
)
async def test_a_malformed_period_is_invalid(ctx: AppContext, period: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await report_of(ctx, period)
    assert caught.value.reason == "INVALID_PERIOD"
    assert caught.value.metadata["field"] == "period"


def test_the_last_representable_month_is_an_invalid_period_not_a_crash() -> None:
    with pytest.raises(InvalidArgument):
        donations.month_bounds("9999-12")


@pytest.mark.parametrize(
    "period",
    [
        pytest.param("2026-1", id="one-digit-month"),
        pytest.param("\uff12\uff10\uff12\uff16-11", id="full-width-digits"),
    ],
)
def test_only_yyyy_mm_is_a_period(period: str) -> None:
    with pytest.raises(InvalidArgument):
        donations.month_bounds(period)


# -- the command -----------------------------------------------------------------------------


def cli_url(ctx: AppContext) -> str:
    """The test database's URL as an operator would give it to the CLI."""
    return ctx.database.engine.url.render_as_string(hide_password=False)


async def coalition(ctx: AppContext, *args: str, cwd: Path) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COALITION_")}
    env |= {"COALITION_DATABASE_URL": cli_url(ctx), "COALITION_SECRET_KEY": CLI_SECRET}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway.entrypoints.cli",
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), COMMAND_TIMEOUT_S)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def _figures(html: str) -> dict[str, str]:
    """The body of each <figure id="chart-…">, by charity id."""
    return {
        m.group(1): m.group(2)
        for m in re.finditer(r'<figure id="chart-([^"]+)"\s*>(.*?)</figure>', html, re.S)
    }


def _csv_rows(text: str) -> tuple[list[dict[str, str]], dict[str, dict[str, str]]]:
    """The CSV's per-charity rows, and its TOTAL rows by currency."""
    assert text.endswith("\r\n"), "RFC 4180 line ends"
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    charities = [r for r in rows if r["charity"] != "TOTAL"]
    totals = {r["currency"]: r for r in rows if r["charity"] == "TOTAL"}
    assert len(totals) == len([r for r in rows if r["charity"] == "TOTAL"]), "one per currency"
    return charities, totals


def _major(amount_minor: int, currency: str) -> Decimal:
    """What the CSV writes for an amount: major units, as a spreadsheet reads them."""
    return Decimal(amount_minor).scaleb(-EXPONENTS[currency])


def _csv_numbers(row: dict[str, str]) -> tuple[int, int, int, Decimal, Decimal, Decimal]:
    return (
        int(row["donations"]),
        int(row["points"]),
        int(row["matched_points"]),
        Decimal(row["value"]),
        Decimal(row["matched_value"]),
        Decimal(row["owed"]),
    )


def _numbers(t: Totals, currency: str) -> tuple[int, int, int, Decimal, Decimal, Decimal]:
    return (
        t.donations,
        t.points,
        t.matched_points,
        _major(t.value_minor, currency),
        _major(t.matched_value_minor, currency),
        _major(t.value_minor + t.matched_value_minor, currency),
    )


async def test_the_report_command_writes_html_csv_and_json(
    ctx: AppContext, seeded: Seeded, tmp_path: Path
) -> None:
    html_file, csv_file, json_file = (tmp_path / n for n in ("r.html", "r.csv", "r.json"))
    code, out, err = await coalition(
        ctx,
        "donations",
        "report",
        "--period",
        "2026-11",
        "--html",
        str(html_file),
        "--csv",
        str(csv_file),
        "--json",
        str(json_file),
        cwd=tmp_path,
    )
    assert code == 0, err
    start, end = donations.month_bounds("2026-11")
    expected = totals_from_gifts(seeded.gifts, start, end)
    for charity_id in expected:
        assert charity_id in out, f"the summary names {charity_id}"

    figures = _figures(html_file.read_text(encoding="utf-8"))
    assert set(figures) == set(expected), "a chart per charity with donations"
    for charity_id, body in figures.items():
        assert "<svg" in body and "</svg>" in body, f"chart-{charity_id} holds an SVG"

    data = json.loads(json_file.read_text(encoding="utf-8"))
    assert data["period"] == "2026-11"
    assert {
        c["charity_id"]: Totals(
            c["donations"],
            c["donors"],
            c["points"],
            c["matched_points"],
            c["value_minor"],
            c["matched_value_minor"],
        )
        for c in data["charities"]
    } == expected

    charity_rows, total_rows = _csv_rows(csv_file.read_bytes().decode("utf-8"))
    assert {r["charity"]: r["currency"] for r in charity_rows} == {
        c: CHARITIES[c].currency for c in expected
    }
    for row in charity_rows:
        currency = row["currency"]
        assert row["period"] == "2026-11"
        assert row["charity_display_name"] == CHARITIES[row["charity"]].display_name
        assert _csv_numbers(row) == _numbers(expected[row["charity"]], currency), row
        assert int(row["donors"]) == expected[row["charity"]].donors

    per_currency: dict[str, list[Totals]] = defaultdict(list)
    for charity_id, totals in expected.items():
        per_currency[CHARITIES[charity_id].currency].append(totals)
    assert set(total_rows) == set(per_currency) == {"USD", "GBP", "JPY"}
    for currency, given in per_currency.items():
        summed = Totals(*(sum(getattr(t, f) for t in given) for f in Totals.__dataclass_fields__))
        assert _csv_numbers(total_rows[currency]) == _numbers(summed, currency), currency


async def test_the_report_command_refuses_a_malformed_period(
    ctx: AppContext, tmp_path: Path
) -> None:
    code, _, err = await coalition(
        ctx, "donations", "report", "--period", "2026-13", "--json", "r.json", cwd=tmp_path
    )
    assert code == 2
    assert "INVALID_PERIOD" in err
    assert not (tmp_path / "r.json").exists()


async def test_an_empty_month_still_writes_its_documents(
    ctx: AppContext, seeded: Seeded, tmp_path: Path
) -> None:
    code, out, err = await coalition(
        ctx,
        "donations",
        "report",
        "--period",
        "2027-02",
        "--html",
        "r.html",
        "--csv",
        "r.csv",
        "--json",
        "r.json",
        cwd=tmp_path,
    )
    assert code == 0, err
    assert "no donations" in out
    assert _figures((tmp_path / "r.html").read_text(encoding="utf-8")) == {}
    assert _csv_rows((tmp_path / "r.csv").read_bytes().decode("utf-8")) == ([], {})
    assert json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))["charities"] == []
