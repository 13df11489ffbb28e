"""Smoke: a tiny month closes, its statements add up, closing twice changes nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from gateway.clock import FixedClock
from gateway.domain.members import ContactDetails
from gateway.domain.partners import PartnerSettings, PartnerType
from gateway.service import earning, ledger
from gateway.service import members as members_service
from gateway.service import partners as partner_service
from gateway.service.context import AppContext
from settlement.domain.periods import Period
from settlement.domain.pricing import PriceList
from settlement.service import periods, prices


async def test_close_a_small_month(ctx: AppContext) -> None:
    clock = ctx.clock
    assert isinstance(clock, FixedClock)
    clock.set(datetime(2026, 3, 1, tzinfo=UTC))
    async with ctx.database.begin() as conn:
        hotel = await partner_service.create(
            conn, ctx, "grand-hotel", PartnerType.HOTEL, PartnerSettings("Grand Hotel", Decimal(1))
        )
        taxi = await partner_service.create(
            conn, ctx, "city-taxi", PartnerType.RIDE_SHARE, PartnerSettings("Taxi", Decimal(1))
        )
        for p, issue, redeem in ((hotel, "0.01", "0.008"), (taxi, "0.012", "0.009")):
            await prices.create_price_list(
                conn,
                ctx,
                PriceList(
                    "",
                    p.id,
                    datetime(2026, 1, 1, tzinfo=UTC),
                    "",
                    issue_price=Decimal(issue),
                    redemption_rate=Decimal(redeem),
                    fee_per_transaction_minor=2,
                    fee_percent=Decimal("1.5"),
                ),
            )
        member = await members_service.enroll(conn, ctx, ContactDetails("Ada"))
    clock.set(datetime(2026, 3, 5, tzinfo=UTC))
    async with ctx.database.begin() as conn:
        await earning.earn(conn, ctx, hotel, member.id, earning.Action("BONUS", 1_000), "h-1")
        await ledger.redeem(conn, ctx, taxi.id, member.id, 400, "t-1")
    clock.set(datetime(2026, 4, 2, tzinfo=UTC))
    async with ctx.database.begin() as conn:
        closed = await periods.close(conn, ctx, Period(2026, 3))
    assert closed.statement_count == 2
    async with ctx.database.connect() as conn:
        h = await periods.get_statement(conn, Period(2026, 3), "grand-hotel")
        t = await periods.get_statement(conn, Period(2026, 3), "city-taxi")
        report = await periods.netting_report(conn, Period(2026, 3))
        lines, _ = await periods.list_lines(conn, Period(2026, 3), "city-taxi", 0, "")
    # 1,000 points at 1 cent = 1000 cents owed, fee 2 + 1.5% of 1000 = 17
    assert (h.points_issued, h.issue_minor, h.fee_minor, h.net_minor) == (1000, 1000, 17, -1017)
    # 400 points at 0.9 cents = 360 due, fee 2 + 1.5% of 360 = 5.4 -> 5; net 360 - 7
    assert (t.points_redeemed, t.redemption_minor, t.fee_minor, t.net_minor) == (400, 360, 7, 353)
    assert report.margin.total == 1017 - 353
    assert [(x.points, x.amount_minor, x.partner_reference) for x in lines] == [(-400, 353, "t-1")]
    async with ctx.database.begin() as conn:
        again = await periods.close(conn, ctx, Period(2026, 3))
    assert again.close_time == closed.close_time


async def test_a_reversal_goes_back_at_the_price_it_came_at(ctx: AppContext) -> None:
    """An earn at one price, clawed back after a new price starts: nothing issued, nothing
    paid for it but the earn's fixed fee (the helper's reproduction, from review)."""
    clock = ctx.clock
    assert isinstance(clock, FixedClock)
    clock.set(datetime(2026, 3, 1, tzinfo=UTC))
    async with ctx.database.begin() as conn:
        hotel = await partner_service.create(
            conn, ctx, "grand-hotel", PartnerType.HOTEL, PartnerSettings("Grand Hotel", Decimal(1))
        )
        for valid_from, price in (
            (datetime(2026, 1, 1, tzinfo=UTC), "0.012345678901"),
            (datetime(2026, 3, 15, tzinfo=UTC), "0.0131"),
        ):
            await prices.create_price_list(
                conn,
                ctx,
                PriceList(
                    "",
                    hotel.id,
                    valid_from,
                    "",
                    issue_price=Decimal(price),
                    fee_per_transaction_minor=2,
                    fee_percent=Decimal(1),
                ),
            )
        member = await members_service.enroll(conn, ctx, ContactDetails("Ada"))
    clock.set(datetime(2026, 3, 10, tzinfo=UTC))
    async with ctx.database.begin() as conn:
        earn, _ = await earning.earn(conn, ctx, hotel, member.id, earning.Action("STAY", 1_000))
    clock.set(datetime(2026, 3, 16, tzinfo=UTC))
    async with ctx.database.begin() as conn:
        await ledger.reverse(conn, ctx, hotel.id, earn.name, 0)
    clock.set(datetime(2026, 4, 2, tzinfo=UTC))
    async with ctx.database.begin() as conn:
        await periods.close(conn, ctx, Period(2026, 3))
    async with ctx.database.connect() as conn:
        s = await periods.get_statement(conn, Period(2026, 3), "grand-hotel")
        lines, _ = await periods.list_lines(conn, Period(2026, 3), "grand-hotel", 0, "")
    assert (s.points_issued, s.issue_minor, s.fee_minor, s.net_minor) == (0, 0, 2, -2)
    assert lines[0].price_list == lines[1].price_list, "both at the earn's price"
