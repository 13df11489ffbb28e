"""`coalition settlement ...` against a real database: close, exports, the report, reconcile.

The month is recorded in-process with the fixed clock (March 2026); the commands run as an
operator runs them, in a subprocess with the system clock, long after March ended.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import re
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from xml.etree import ElementTree

import pytest

from gateway.clock import FixedClock
from gateway.domain.members import ContactDetails
from gateway.domain.partners import PartnerSettings, PartnerType
from gateway.service import earning, ledger
from gateway.service import members as members_service
from gateway.service import partners as partner_service
from gateway.service.context import AppContext
from settlement.adapters.documents import LINE_CSV_HEADER, STATEMENT_CSV_HEADER
from settlement.domain.periods import Period
from settlement.domain.pricing import PriceList
from settlement.service import prices

COMMAND_TIMEOUT_S = 60
CLI_SECRET = "settlement-cli-test-secret-key-0123456789"
MARCH = Period(2026, 3)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


async def coalition(ctx: AppContext, *args: str, cwd: Path) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COALITION_")}
    url = ctx.database.engine.url.render_as_string(hide_password=False)
    env |= {"COALITION_DATABASE_URL": url, "COALITION_SECRET_KEY": CLI_SECRET}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway.entrypoints.cli",
        "settlement",
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), COMMAND_TIMEOUT_S)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def _record_march(ctx: AppContext) -> list[str]:
    """Three partners (USD hotel, CAD retailer, USD taxi) and a month of activity; returns
    the hotel's references in the order recorded."""
    clock = ctx.clock
    assert isinstance(clock, FixedClock)
    clock.set(utc(2026, 2, 20))
    specs = (
        ("harbor-hotel", PartnerType.HOTEL, "USD", "0.0125", "0.0095"),
        ("maple-market", PartnerType.RETAIL, "CAD", "0.016", "0.0125"),
        ("swift-taxi", PartnerType.RIDE_SHARE, "USD", "0.012", "0.0092"),
    )
    async with ctx.database.begin() as conn:
        partners = {}
        for pid, kind, currency, issue, redeem in specs:
            settings = PartnerSettings(
                pid.replace("-", " ").title(),
                Decimal(1),
                earn_currency_code=currency,
                settlement_currency_code=currency,
            )
            partners[pid] = await partner_service.create(conn, ctx, pid, kind, settings)
            await prices.create_price_list(
                conn,
                ctx,
                PriceList(
                    "",
                    pid,
                    utc(2026, 1, 1),
                    "",
                    issue_price=Decimal(issue),
                    redemption_rate=Decimal(redeem),
                    fee_per_transaction_minor=1,
                    fee_percent=Decimal("0.5"),
                ),
            )
        await prices.set_fx_rate(conn, ctx, MARCH, "CAD", "1.3791")
        members = [
            await members_service.enroll(conn, ctx, ContactDetails(f"Member {i}")) for i in range(4)
        ]
    references = []
    for day in range(1, 29):
        clock.set(utc(2026, 3, day, 12))
        member = members[day % len(members)]
        async with ctx.database.begin() as conn:
            reference = f"H-{day:03d}"
            references.append(reference)
            await earning.earn(
                conn,
                ctx,
                partners["harbor-hotel"],
                member.id,
                earning.Action("STAY", 1_000 + day * 37),
                reference,
            )
            await earning.earn(
                conn,
                ctx,
                partners["maple-market"],
                member.id,
                earning.Action("SHOP", 200 + day),
                f"M-{day}",
            )
            if day % 3 == 0:
                await ledger.redeem(conn, ctx, "swift-taxi", member.id, 500 + day, f"T-{day}")
    return references


def _csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_bytes().decode(), newline="")))


@pytest.fixture
async def closed_march(ctx: AppContext, tmp_path: Path) -> list[str]:
    references = await _record_march(ctx)
    code, out, err = await coalition(ctx, "close", "--period", "2026-03", cwd=tmp_path)
    assert code == 0, err
    assert "settlementPeriods/2026-03 CLOSED" in out and "3 statement(s)" in out
    return references


async def test_close_twice_and_export_statements(
    ctx: AppContext, closed_march: list[str], tmp_path: Path
) -> None:
    code, _, err = await coalition(ctx, "close", "--period", "2026-03", cwd=tmp_path)
    assert code == 0, err  # closing again is a no-op that reports the same close
    args = ["statement", "--period", "2026-03", "--csv", "s.csv", "--lines-csv", "l.csv"]
    code, _, err = await coalition(ctx, *args, "--json", "s.json", cwd=tmp_path)
    assert code == 0, err
    text = (tmp_path / "s.csv").read_bytes().decode()
    assert text.endswith("\r\n")
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert tuple(rows[0]) == STATEMENT_CSV_HEADER
    partners = [r for r in rows if r["partner"] != "TOTAL"]
    totals = {r["currency"]: r for r in rows if r["partner"] == "TOTAL"}
    assert [r["partner"] for r in partners] == ["harbor-hotel", "maple-market", "swift-taxi"]
    assert set(totals) == {"CAD", "USD"}
    for currency, total in totals.items():
        mine = [r for r in partners if r["currency"] == currency]
        for column in ("points_issued", "points_redeemed", "line_count"):
            assert int(total[column]) == sum(int(r[column]) for r in mine)
        for column in ("amount_owed", "amount_due", "net_amount", "net_amount_base"):
            assert Decimal(total[column]) == sum(Decimal(r[column]) for r in mine)
        for r in mine:  # net = due - owed on every row
            assert Decimal(r["net_amount"]) == Decimal(r["amount_due"]) - Decimal(r["amount_owed"])
    hotel = next(r for r in partners if r["partner"] == "harbor-hotel")
    assert int(hotel["points_issued"]) == sum(1_000 + d * 37 for d in range(1, 29))
    assert hotel["fx_rate"] == "1"
    maple = next(r for r in partners if r["partner"] == "maple-market")
    assert maple["fx_rate"] == "1.3791"
    assert Decimal(maple["net_amount_base"]) == (
        Decimal(maple["net_amount"]) / Decimal("1.3791")
    ).quantize(Decimal("0.01"))

    lines = list(
        csv.DictReader(io.StringIO((tmp_path / "l.csv").read_bytes().decode(), newline=""))
    )
    assert tuple(lines[0]) == LINE_CSV_HEADER
    for r in partners:
        mine = [line for line in lines if line["partner"] == r["partner"]]
        assert len(mine) == int(r["line_count"])
        assert all(line["transaction"].startswith("members/") for line in mine)
    assert [x["partner_reference"] for x in lines if x["partner"] == "harbor-hotel"] == (
        closed_march
    )
    statements = json.loads((tmp_path / "s.json").read_text())
    assert {s["partner_id"] for s in statements} == {r["partner"] for r in partners}


def _svg_figures(html: str) -> list[ElementTree.Element]:
    figures = re.findall(r"<figure>.*?(<svg.*?</svg>).*?</figure>", html, re.S)
    return [ElementTree.fromstring(svg) for svg in figures]


async def test_netting_report_renders_with_its_charts(
    ctx: AppContext, closed_march: list[str], tmp_path: Path
) -> None:
    args = ["netting", "--period", "2026-03", "--html", "r.html", "--pdf", "r.pdf"]
    code, _, err = await coalition(ctx, *args, "--json", "n.json", cwd=tmp_path)
    assert code == 0, err
    netting = json.loads((tmp_path / "n.json").read_text())
    nets = [p["net_base_minor"] for p in netting["positions"]]
    assert sum(nets) + netting["margin"]["total"] == 0
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "<script" not in html
    positions, history = _svg_figures(html)
    ns = "{http://www.w3.org/2000/svg}"
    # One bar per partner in the positions chart, one series per flow in the history chart.
    bars = [r for r in positions.iter(f"{ns}rect") if "rect" in (r.get("class") or "")]
    assert len(bars) == 3
    labels = "".join(positions.itertext())
    for name in ("Harbor Hotel", "Maple Market", "Swift Taxi"):
        assert name in labels and name in html
    history_text = "".join(history.itertext())
    assert "2026-03" in history_text and "Issued" in history_text
    assert "Operator margin" in html and "Points liability" in html
    assert (tmp_path / "r.pdf").read_bytes().startswith(b"%PDF-")


async def test_liability_and_returns(
    ctx: AppContext, closed_march: list[str], tmp_path: Path
) -> None:
    args = ["liability", "--period", "2026-03", "--breakage-percent", "25", "--json", "l.json"]
    code, _, err = await coalition(ctx, *args, cwd=tmp_path)
    assert code == 0, err
    payload = json.loads((tmp_path / "l.json").read_text())
    issued = sum(1_000 + d * 37 + 200 + d for d in range(1, 29))
    redeemed = sum(500 + d for d in range(1, 29) if d % 3 == 0)
    assert payload["liability"]["available"] == issued - redeemed
    assert Decimal(payload["liability"]["breakage_percent"]) == 25
    returns = {r["partner_id"]: r for r in payload["partner_returns"]}
    assert returns["swift-taxi"]["points_redeemed"] == redeemed
    # Every member active at the taxi earned at the hotel too: all shared.
    assert returns["swift-taxi"]["shared_members"] == returns["swift-taxi"]["members"] == 4
    code, _, err = await coalition(
        ctx, "liability", "--period", "2026-03", "--breakage-percent", "120", cwd=tmp_path
    )
    assert code == 2 and "INVALID_BREAKAGE" in err


async def test_reconcile_reports_what_differs(
    ctx: AppContext, closed_march: list[str], tmp_path: Path
) -> None:
    rows = [(ref, 1_000 + int(ref[2:]) * 37) for ref in closed_march]
    rows[3] = (rows[3][0], rows[3][1] + 1)  # changed
    del rows[7]  # missing in the file
    rows.append(("H-999", 50))  # not in the ledger
    content = "partner_reference,points,comment\r\n" + "".join(
        f"{ref},{points},x\r\n" for ref, points in rows
    )
    (tmp_path / "hotel.csv").write_text(content, encoding="utf-8")
    args = ["reconcile", "--partner", "harbor-hotel", "--period", "2026-03", "hotel.csv"]
    code, out, err = await coalition(ctx, *args, "--out", "d.csv", cwd=tmp_path)
    assert code == 1, err  # differences found
    assert "26 matched, 3 discrepancies" in out
    found = list(
        csv.DictReader(io.StringIO((tmp_path / "d.csv").read_bytes().decode(), newline=""))
    )
    assert {(d["kind"], d["partner_reference"]) for d in found} == {
        ("AMOUNT_MISMATCH", "H-004"),
        ("MISSING_IN_FILE", "H-008"),
        ("MISSING_IN_LEDGER", "H-999"),
    }


async def test_adjustment_lands_in_the_next_open_period(
    ctx: AppContext, closed_march: list[str], tmp_path: Path
) -> None:
    base = ["adjust", "--partner", "harbor-hotel", "--amount-minor", "-1500"]
    code, _, err = await coalition(
        ctx, *base, "--reason", "missed fee", "--period", "2026-03", cwd=tmp_path
    )
    assert code == 2 and "PERIOD_CLOSED" in err
    code, out, err = await coalition(
        ctx,
        *base,
        "--reason",
        "missed fee",
        "--reference",
        "TICKET-7",
        "--period",
        "2026-04",
        cwd=tmp_path,
    )
    assert code == 0, err
    assert "settlementPeriods/2026-04/adjustments/" in out and "-1,500" in out
