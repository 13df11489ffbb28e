"""A partner's side of settlement through the SDK: its statement, its lines, its file."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from conftest import Gateway

from gateway.clock import FixedClock
from gateway.domain.members import ContactDetails
from gateway.service import earning
from gateway.service import members as members_service
from gateway.service import partners as partner_service
from partners.sdk import CoalitionClient, PermissionDeniedError
from settlement.domain.periods import Period
from settlement.domain.pricing import PriceList
from settlement.service import periods, prices


async def test_partner_reads_its_own_settlement_and_nobody_elses(gateway: Gateway) -> None:
    ctx = gateway.ctx
    clock = ctx.clock
    assert isinstance(clock, FixedClock)
    clock.set(datetime(2026, 3, 2, tzinfo=UTC))
    _, hotel_key = await gateway.create_partner("sea-hotel")
    _, rival_key = await gateway.create_partner("rival-inn")
    async with ctx.database.begin() as conn:
        for pid in ("sea-hotel", "rival-inn"):
            draft = PriceList(
                "", pid, datetime(2026, 1, 1, tzinfo=UTC), "", issue_price=Decimal("0.01")
            )
            await prices.create_price_list(conn, ctx, draft)
        member = await members_service.enroll(conn, ctx, ContactDetails("Sam"))
        hotel = await partner_service.get(conn, "sea-hotel")
        rival = await partner_service.get(conn, "rival-inn")
        for reference in ("R-1", "R-2"):
            await earning.earn(conn, ctx, hotel, member.id, earning.Action("STAY", 100), reference)
        await earning.earn(conn, ctx, rival, member.id, earning.Action("STAY", 50), "X-1")
    clock.set(datetime(2026, 4, 2, tzinfo=UTC))
    async with ctx.database.begin() as conn:
        await periods.close(conn, ctx, Period(2026, 3))

    async with CoalitionClient(gateway.target, hotel_key) as client:
        statement = await client.get_statement("2026-03", "partners/sea-hotel")
        assert (statement.points_issued, statement.net_amount.amount_minor) == (200, -200)
        page = await client.list_statement_lines("2026-03", "sea-hotel", page_size=1)
        assert len(page.statement_lines) == 1 and page.next_page_token
        assert page.statement_lines[0].partner_reference == "R-1"
        result = await client.reconcile_file("2026-03", b"partner_reference,points\nR-1,100\n")
        assert (result.matched_count, result.discrepancy_count) == (1, 1)
        assert result.discrepancies[0].partner_reference == "R-2"
        with pytest.raises(PermissionDeniedError) as caught:
            await client.get_statement("2026-03", "rival-inn")
        assert caught.value.reason == "PARTNER_NOT_AUTHORIZED"
        with pytest.raises(PermissionDeniedError):
            await client.reconcile_file(
                "2026-03", b"partner_reference,points\n", partner="partners/rival-inn"
            )
    async with CoalitionClient(gateway.target, rival_key) as client:
        assert (await client.get_statement("2026-03", "rival-inn")).points_issued == 50
