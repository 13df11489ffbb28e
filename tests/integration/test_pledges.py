"""Pledges against a real database: monthly donations run by `run_pledges`, expiring points
given to a charity by the expiry run, and the limits on a member's pledges.

Members earn through gateway.service.earning (BONUS actions, so the points are exactly those
asked for) and the clock travels with ctx.clock. It starts on Monday 2026-01-05 12:00 UTC.
The ctx fixture runs `coalition ledger verify` after every test: the charity accounts equal
the donations, campaign counters equal their matches, and the member lots equal what is
available.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from gateway.clock import FixedClock
from gateway.domain import donations as dd
from gateway.domain import ledger as dl
from gateway.domain.errors import FailedPrecondition
from gateway.domain.expiry import ExpiryKind, ExpiryPolicy
from gateway.domain.members import ContactDetails, Member
from gateway.domain.notices import DONATION_MADE, PLEDGE_SKIPPED
from gateway.domain.partners import Partner, PartnerSettings, PartnerType
from gateway.domain.tiers import add_months
from gateway.service import donations, earning, expiry, ledger, outbox
from gateway.service import members as members_service
from gateway.service import partners as partner_service
from gateway.service.context import AppContext
from gateway.service.expiry import RunReport

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
FIXED_12 = ExpiryPolicy(ExpiryKind.FIXED, 12, reminder_days=30)
INACTIVE_12 = ExpiryPolicy(ExpiryKind.INACTIVITY, 12, reminder_days=30)
HOLD_S = 2.0
"""How long a racing transaction stays open after its work, waiting for the others to reach
the same point (they never do if the work takes a lock the first one holds)."""
MONTHLY = dd.PledgeKind.MONTHLY
EXPIRING = dd.PledgeKind.EXPIRING
NONE_PAID = donations.PledgeRunReport(0, 0, 0)
COMMAND_TIMEOUT_S = 60
CLI_SECRET = "pledges-test-secret-key-0123456789abcdef"


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


# -- helpers ---------------------------------------------------------------------------------


def charity_settings(
    name: str, currency: str = "USD", minimum: int = 100, per_thousand: int = 1_000
) -> PartnerSettings:
    return PartnerSettings(
        name,
        settlement_currency_code=currency,
        charity=dd.CharityProfile(
            description=f"{name} helps.",
            causes=("HEALTH",),
            minimum_donation_points=minimum,
            value_per_thousand_minor=per_thousand,
        ),
    )


async def new_charity(ctx: AppContext, charity_id: str, **settings: Any) -> Partner:
    async with ctx.database.begin() as conn:
        return await partner_service.create(
            conn,
            ctx,
            charity_id,
            PartnerType.CHARITY,
            charity_settings(charity_id.replace("-", " ").title(), **settings),
        )


async def set_profile(ctx: AppContext, charity: Partner, **changes: Any) -> Partner:
    """Change the charity's profile (pause it, raise its minimum) as the operator would."""
    async with ctx.database.begin() as conn:
        current = await partner_service.get(conn, charity.id)
        assert current.settings.charity is not None
        settings = replace(current.settings, charity=replace(current.settings.charity, **changes))
        return await partner_service.update_settings(conn, ctx, charity.id, settings, ["charity"])


async def enroll(ctx: AppContext, name: str = "Ada Lovelace") -> Member:
    async with ctx.database.begin() as conn:
        return await members_service.enroll(conn, ctx, ContactDetails(name))


async def earn(ctx: AppContext, partner: Partner, member: Member, points: int) -> dl.Transaction:
    async with ctx.database.begin() as conn:
        txn, _ = await earning.earn(conn, ctx, partner, member.id, earning.Action("BONUS", points))
    assert txn.points == points
    return txn


async def available(ctx: AppContext, member: Member) -> int:
    async with ctx.database.connect() as conn:
        return (await ledger.balance_of(conn, member.id)).available


async def pledge(
    ctx: AppContext,
    member: Member,
    charity: Partner,
    kind: dd.PledgeKind = MONTHLY,
    points: int = 1_000,
    start: datetime | None = None,
) -> dd.Pledge:
    async with ctx.database.begin() as conn:
        return await donations.create_pledge(
            conn, ctx, member.id, charity.id, kind, points if kind is MONTHLY else 0, start, None
        )


async def refused_pledge(
    ctx: AppContext, member: Member, charity: Partner, kind: dd.PledgeKind = MONTHLY
) -> str:
    with pytest.raises(FailedPrecondition) as caught:
        await pledge(ctx, member, charity, kind)
    return caught.value.reason


async def cancel(ctx: AppContext, made: dd.Pledge) -> dd.Pledge:
    async with ctx.database.begin() as conn:
        return await donations.cancel_pledge(conn, ctx, made.name, None)


async def reread(ctx: AppContext, made: dd.Pledge) -> dd.Pledge:
    async with ctx.database.connect() as conn:
        return await donations.get_pledge(conn, made.name)


async def matching(
    ctx: AppContext, sponsor: Partner, charity: Partner, percent: int = 100, budget: int = 50_000
) -> dd.MatchingCampaign:
    now = ctx.clock.now()
    async with ctx.database.begin() as conn:
        return await donations.create_matching(
            conn,
            ctx,
            dd.MatchingDraft(
                sponsor.id, charity.id, percent, budget, now, now + timedelta(days=700)
            ),
        )


async def given(ctx: AppContext, member: Member) -> list[tuple[str, int, int, str | None]]:
    """(kind, points, matched points, pledge id) of the member's donations, oldest first."""
    d = donations.DONATIONS
    async with ctx.database.connect() as conn:
        rows = await conn.execute(
            select(d.c.kind, d.c.points, d.c.matched_points, d.c.pledge_id)
            .where(d.c.member_id == member.id)
            .order_by(d.c.seq)
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]


async def run_times(ctx: AppContext, made: dd.Pledge) -> list[datetime]:
    """The due dates the pledge's donations paid, in order."""
    d = donations.DONATIONS
    async with ctx.database.connect() as conn:
        rows = await conn.scalars(
            select(d.c.pledge_run_time).where(d.c.pledge_id == made.id).order_by(d.c.seq)
        )
        return [r for r in rows if r is not None]


async def account(ctx: AppContext, name: str) -> int:
    """What the postings say an account holds, in points."""
    p = ledger.POSTINGS
    async with ctx.database.connect() as conn:
        total = await conn.scalar(
            select(func.coalesce(func.sum(p.c.amount), 0)).where(
                p.c.account == name, p.c.asset == dl.POINTS
            )
        )
    return int(total or 0)


async def events(ctx: AppContext, member: Member, type_: str) -> list[outbox.Event]:
    async with ctx.database.connect() as conn:
        return await outbox.events(conn, subject=member.name, type_=type_)


async def transactions(ctx: AppContext, member: Member, kind: dl.TxnType) -> list[int]:
    async with ctx.database.connect() as conn:
        page, _ = await ledger.history(conn, member.id, 100, "", kind=kind)
    return sorted(txn.points for txn in page)


@pytest.fixture
def clock(ctx: AppContext) -> FixedClock:
    assert isinstance(ctx.clock, FixedClock)
    assert ctx.clock.now() == T0
    return ctx.clock


@pytest.fixture
async def hotel(ctx: AppContext) -> Partner:
    async with ctx.database.begin() as conn:
        return await partner_service.create(
            conn, ctx, "grand-hotel", PartnerType.HOTEL, PartnerSettings("Grand", Decimal(1))
        )


@pytest.fixture
async def charity(ctx: AppContext) -> Partner:
    return await new_charity(ctx, "red-cross")


@pytest.fixture
async def member(ctx: AppContext) -> Member:
    return await enroll(ctx)


# -- MONTHLY: once a month from the start ----------------------------------------------------


async def test_a_monthly_pledge_gives_on_its_start_date_then_every_month_once(
    ctx: AppContext, clock: FixedClock, hotel: Partner, charity: Partner, member: Member
) -> None:
    await earn(ctx, hotel, member, 10_000)
    start = utc(2026, 1, 31, 9, 30)
    made = await pledge(ctx, member, charity, points=1_000, start=start)
    assert made.next_run_time == start

    assert await donations.run_pledges(ctx) == NONE_PAID, "not due before its start"
    clock.set(start - timedelta(seconds=1))
    assert await donations.run_pledges(ctx) == NONE_PAID

    clock.set(start)
    assert await donations.run_pledges(ctx) == donations.PledgeRunReport(1, 1_000, 0)
    assert await donations.run_pledges(ctx) == NONE_PAID, "the month is paid once"
    clock.set(utc(2026, 2, 20))
    assert await donations.run_pledges(ctx) == NONE_PAID, "the same month, later"
    assert (await reread(ctx, made)).next_run_time == utc(2026, 2, 28, 9, 30)

    for due in (utc(2026, 2, 28, 9, 30), utc(2026, 3, 31, 9, 30)):
        clock.set(due)
        assert await donations.run_pledges(ctx) == donations.PledgeRunReport(1, 1_000, 0)
        assert await donations.run_pledges(ctx) == NONE_PAID

    assert await available(ctx, member) == 7_000
    assert await run_times(ctx, made) == [
        utc(2026, 1, 31, 9, 30),
        utc(2026, 2, 28, 9, 30),
        utc(2026, 3, 31, 9, 30),
    ]
    assert await given(ctx, member) == [("MONTHLY_PLEDGE", 1_000, 0, made.id)] * 3
    assert (await reread(ctx, made)).next_run_time == utc(2026, 4, 30, 9, 30)
    assert await account(ctx, dl.donated(charity.id)) == 3_000
    assert await transactions(ctx, member, dl.TxnType.DONATION) == [-1_000] * 3
    made_events = await events(ctx, member, DONATION_MADE)
    assert [(e.payload["kind"], e.payload["points"]) for e in made_events] == [
        ("MONTHLY_PLEDGE", 1_000)
    ] * 3
    assert made_events[0].payload["value_minor"] == 1_000


async def test_a_pledge_without_a_start_gives_at_the_next_run(
    ctx: AppContext, clock: FixedClock, hotel: Partner, charity: Partner, member: Member
) -> None:
    await earn(ctx, hotel, member, 1_500)
    made = await pledge(ctx, member, charity, points=500)
    assert made.next_run_time == T0
    assert await donations.run_pledges(ctx) == donations.PledgeRunReport(1, 500, 0)
    assert (await reread(ctx, made)).next_run_time == utc(2026, 2, 5, 12, 0)


async def test_a_start_in_the_past_counts_from_now(
    ctx: AppContext, clock: FixedClock, hotel: Partner, charity: Partner, member: Member
) -> None:
    await earn(ctx, hotel, member, 1_500)
    made = await pledge(ctx, member, charity, points=500, start=T0 - timedelta(days=60))
    assert made.next_run_time == T0, "nothing is owed for months before the pledge"
    assert await donations.run_pledges(ctx) == donations.PledgeRunReport(1, 500, 0)
    assert await available(ctx, member) == 1_000


async def test_months_missed_by_the_runner_are_not_made_up(
    ctx: AppContext, clock: FixedClock, hotel: Partner, charity: Partner, member: Member
) -> None:
    await earn(ctx, hotel, member, 10_000)
    start = utc(2026, 1, 31, 9, 30)
    made = await pledge(ctx, member, charity, points=1_000, start=start)

    clock.set(utc(2026, 5, 15))  # the runner did not run for months
    assert await donations.run_pledges(ctx) == donations.PledgeRunReport(1, 1_000, 0)
    assert await donations.run_pledges(ctx) == NONE_PAID
    assert (await reread(ctx, made)).next_run_time == utc(2026, 5, 31, 9, 30), "no drift"
    assert await available(ctx, member) == 9_000


async def test_a_month_the_member_cannot_afford_is_skipped_and_they_are_told(
    ctx: AppContext, clock: FixedClock, hotel: Partner, charity: Partner, member: Member
) -> None:
    await earn(ctx, hotel, member, 1_500)
    start = utc(2026, 1, 10)
    made = await pledge(ctx, member, charity, points=1_000, start=start)

    clock.set(start)
    assert await donations.run_pledges(ctx) == donations.PledgeRunReport(1, 1_000, 0)
    clock.set(utc(2026, 2, 10))
    assert await donations.run_pledges(ctx) == donations.PledgeRunReport(0, 0, 1)
    assert await donations.run_pledges(ctx) == NONE_PAID, "a skipped month is not retried"
    assert await available(ctx, member) == 500, "nothing was taken"

    (skipped,) = await events(ctx, member, PLEDGE_SKIPPED)
    assert skipped.payload["reason"] == "INSUFFICIENT_POINTS"
    assert skipped.payload["pledge"] == made.name
    assert skipped.payload["charity"] == f"charities/{charity.id}"
    assert skipped.payload["points"] == 1_000
    assert datetime.fromisoformat(skipped.payload["due_time"]) == utc(2026, 2, 10)

    await earn(ctx, hotel, member, 1_000)
    clock.set(utc(2026, 3, 10))
    assert await donations.run_pledges(ctx) == donations.PledgeRunReport(1, 1_000, 0)
    assert await available(ctx, member) == 500
    assert await run_times(ctx, made) == [utc(2026, 1, 10), utc(2026, 3, 10)]
    assert len(await events(ctx, member, DONATION_MADE)) == 2


async def test_a_member_in_debt_after_a_clawback_skips_the_month(
    ctx: AppContext, clock: FixedClock, hotel: Partner, charity: Partner, member: Member
) -> None:
    earned = await earn(ctx, hotel, member, 1_000)
    async with ctx.database.begin() as conn:
        await ledger.redeem(conn, ctx, hotel.id, member.id, 800)
        await ledger.reverse(conn, ctx, None, earned.name, 1_000, "chargeback")
    assert await available(ctx, member) == -800
    await pledge(ctx, member, charity, points=100)

    assert await donations.run_pledges(ctx) == donations.PledgeRunReport(0, 0, 1)
    (skipped,) = await events(ctx, member, PLEDGE_SKIPPED)
    assert skipped.payload["reason"] == "NEGATIVE_BALANCE"
    assert await available(ctx, member) == -800


async def test_a_cancelled_pledge_gives_nothing(
    ctx: AppContext, clock: FixedClock, hotel: Partner, charity: Partner, member: Member
) -> None:
    await earn(ctx, hotel, member, 5_000)
    start = utc(2026, 1, 10)
    made = await pledge(ctx, member, charity, points=1_000, start=start)
    clock.set(start)
    assert await donations.run_pledges(ctx) == donations.PledgeRunReport(1, 1_000, 0)

    clock.set(utc(2026, 1, 20))
    cancelled = await cancel(ctx, made)
    assert (cancelled.cancel_time, cancelled.next_run_time) == (utc(2026, 1, 20), None)
    for month in (2, 3, 4):
        clock.set(utc(2026, month, 10))
        assert await donations.run_pledges(ctx) == NONE_PAID
    assert await available(ctx, member) == 4_000
    assert await events(ctx, member, PLEDGE_SKIPPED) == []

    with pytest.raises(FailedPrecondition) as caught:
        await cancel(ctx, made)
    assert caught.value.reason == "PLEDGE_CANCELLED"


async def test_a_pledge_cancelled_before_its_start_never_gives(
    ctx: AppContext, clock: FixedClock, hotel: Partner, charity: Partner, member: Member
) -> None:
    await earn(ctx, hotel, member, 5_000)
    made = await pledge(ctx, member, charity, points=1_000, start=utc(2026, 1, 10))
    await cancel(ctx, made)
    clock.set(utc(2026, 1, 10))
    assert await donations.run_pledges(ctx) == NONE_PAID
    assert await given(ctx, member) == []


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        pytest.param({"paused": True}, "CHARITY_NOT_ACCEPTING", id="charity-paused"),
        pytest.param(
            {"minimum_donation_points": 2_000}, "BELOW_MINIMUM_DONATION", id="minimum-raised"
        ),
    ],
)
async def test_a_month_the_charity_does_not_take_the_gift_is_skipped(
    ctx: AppContext,
    clock: FixedClock,
    hotel: Partner,
    charity: Partner,
    member: Member,
    change: dict[str, Any],
    reason: str,
) -> None:
    await earn(ctx, hotel, member, 5_000)
    start = utc(2026, 1, 10)
    made = await pledge(ctx, member, charity, points=1_000, start=start)
    clock.set(start)
    await donations.run_pledges(ctx)

    await set_profile(ctx, charity, **change)
    clock.set(utc(2026, 2, 10))
    assert await donations.run_pledges(ctx) == donations.PledgeRunReport(0, 0, 1)
    (skipped,) = await events(ctx, member, PLEDGE_SKIPPED)
    assert skipped.payload["reason"] == reason
    assert await available(ctx, member) == 4_000
    assert (await reread(ctx, made)).next_run_time == utc(2026, 3, 10), "the pledge continues"

    await set_profile(ctx, charity, paused=False, minimum_donation_points=100)
    clock.set(utc(2026, 3, 10))
    assert await donations.run_pledges(ctx) == donations.PledgeRunReport(1, 1_000, 0)
    assert await available(ctx, member) == 3_000


async def test_a_monthly_pledge_is_matched_by_a_live_campaign(
    ctx: AppContext, clock: FixedClock, hotel: Partner, charity: Partner, member: Member
) -> None:
    await earn(ctx, hotel, member, 5_000)
    campaign = await matching(ctx, hotel, charity, percent=50, budget=700)
    await pledge(ctx, member, charity, points=1_000)
    assert await donations.run_pledges(ctx) == donations.PledgeRunReport(1, 1_000, 0)
    clock.set(utc(2026, 2, 5, 12))
    assert await donations.run_pledges(ctx) == donations.PledgeRunReport(1, 1_000, 0)
    assert [(kind, matched) for kind, _, matched, _ in await given(ctx, member)] == [
        ("MONTHLY_PLEDGE", 500),
        ("MONTHLY_PLEDGE", 200),
    ]
    assert await account(ctx, dl.matched(hotel.id)) == -700
    assert await account(ctx, dl.donated(charity.id)) == 2_700
    async with ctx.database.connect() as conn:
        assert (await donations.get_matching(conn, campaign.name)).spent_points == 700


async def test_each_pledge_of_a_member_is_paid_on_its_own_day(
    ctx: AppContext, clock: FixedClock, hotel: Partner, charity: Partner, member: Member
) -> None:
    other = await new_charity(ctx, "save-the-owls", currency="GBP", per_thousand=800)
    await earn(ctx, hotel, member, 5_000)
    first = await pledge(ctx, member, charity, points=300, start=utc(2026, 1, 10))
    second = await pledge(ctx, member, other, points=700, start=utc(2026, 1, 20))

    clock.set(utc(2026, 1, 15))
    assert await donations.run_pledges(ctx) == donations.PledgeRunReport(1, 300, 0)
    clock.set(utc(2026, 1, 25))
    assert await donations.run_pledges(ctx) == donations.PledgeRunReport(1, 700, 0)
    assert await run_times(ctx, first) == [utc(2026, 1, 10)]
    assert await run_times(ctx, second) == [utc(2026, 1, 20)]
    assert await account(ctx, dl.donated(other.id)) == 700


@pytest.mark.postgres
async def test_two_runners_at_once_pay_each_month_once(
    ctx: AppContext, clock: FixedClock, hotel: Partner, charity: Partner
) -> None:
    members = [await enroll(ctx, f"Member {i}") for i in range(30)]
    for m in members:
        await earn(ctx, hotel, m, 1_000)
        await pledge(ctx, m, charity, points=400)
    runs = await asyncio.gather(*(donations.run_pledges(ctx) for _ in range(3)))
    assert sum(r.donations for r in runs) == len(members)
    assert sum(r.skipped for r in runs) == 0
    for m in members:
        assert await available(ctx, m) == 600


async def test_the_run_pledges_command_pays_what_is_due(
    ctx: AppContext, clock: FixedClock, hotel: Partner, charity: Partner, tmp_path: Path
) -> None:
    """`coalition donations run-pledges` on the system clock: pledges made in 2020 are due."""
    clock.set(utc(2020, 1, 15))
    payer, short = await enroll(ctx, "Payer"), await enroll(ctx, "Short")
    await earn(ctx, hotel, payer, 1_000)
    await earn(ctx, hotel, short, 100)
    paid = await pledge(ctx, payer, charity, points=700)
    await pledge(ctx, short, charity, points=700)

    env = {k: v for k, v in os.environ.items() if not k.startswith("COALITION_")}
    env |= {
        "COALITION_DATABASE_URL": ctx.database.engine.url.render_as_string(hide_password=False),
        "COALITION_SECRET_KEY": CLI_SECRET,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway.entrypoints.cli",
        "donations",
        "run-pledges",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), COMMAND_TIMEOUT_S)
    assert process.returncode == 0, err.decode()
    assert out.decode().startswith("monthly pledges: 1 donations of 700 points in all, 1 skipped")
    assert await available(ctx, payer) == 300
    assert await available(ctx, short) == 100
    assert [r.date() for r in await run_times(ctx, paid)] == [date(2020, 1, 15)]
    (skipped,) = await events(ctx, short, PLEDGE_SKIPPED)
    assert skipped.payload["reason"] == "INSUFFICIENT_POINTS"


# -- EXPIRING: what would expire goes to the charity -----------------------------------------


@pytest.fixture
def fixed(ctx: AppContext) -> ExpiryPolicy:
    ctx.expiry = FIXED_12
    return FIXED_12


async def test_expiring_points_go_to_the_pledged_charity_instead_of_breakage(
    ctx: AppContext,
    clock: FixedClock,
    fixed: ExpiryPolicy,
    hotel: Partner,
    charity: Partner,
    member: Member,
) -> None:
    await earn(ctx, hotel, member, 1_000)  # expires 2027-01-06
    clock.set(utc(2026, 2, 10, 9))
    await earn(ctx, hotel, member, 600)  # expires 2027-02-11
    async with ctx.database.begin() as conn:
        await ledger.redeem(conn, ctx, hotel.id, member.id, 300)  # from the oldest lot
    made = await pledge(ctx, member, charity, EXPIRING)
    assert (made.points, made.next_run_time) == (0, None)

    clock.set(utc(2027, 1, 6))
    assert await expiry.expire_due(ctx) == RunReport(0, 1, 0, 700)
    assert await expiry.expire_due(ctx) == RunReport(), "nothing goes twice"

    assert await account(ctx, dl.expired(hotel.id)) == 0, "no breakage"
    assert await account(ctx, dl.donated(charity.id)) == 700
    assert await available(ctx, member) == 600
    assert await given(ctx, member) == [("EXPIRING_PLEDGE", 700, 0, made.id)]
    assert await transactions(ctx, member, dl.TxnType.EXPIRY) == []
    assert await transactions(ctx, member, dl.TxnType.DONATION) == [-700]
    assert await events(ctx, member, expiry.POINTS_EXPIRED) == []
    (gift,) = await events(ctx, member, DONATION_MADE)
    assert (gift.payload["kind"], gift.payload["points"]) == ("EXPIRING_PLEDGE", 700)
    assert gift.payload["value_minor"] == 700

    clock.set(utc(2027, 2, 11))
    assert await expiry.expire_due(ctx) == RunReport(0, 1, 0, 600)
    assert await available(ctx, member) == 0
    assert await account(ctx, dl.donated(charity.id)) == 1_300
    assert await account(ctx, dl.expired(hotel.id)) == 0


async def test_expiring_points_are_given_whatever_the_minimum_and_never_matched(
    ctx: AppContext,
    clock: FixedClock,
    fixed: ExpiryPolicy,
    hotel: Partner,
    member: Member,
) -> None:
    charity = await new_charity(ctx, "red-cross", minimum=5_000)
    await earn(ctx, hotel, member, 40)
    made = await pledge(ctx, member, charity, EXPIRING)
    clock.set(utc(2027, 1, 1))
    campaign = await matching(ctx, hotel, charity)

    clock.set(utc(2027, 1, 6))
    assert await expiry.expire_due(ctx) == RunReport(0, 1, 0, 40)
    assert await given(ctx, member) == [("EXPIRING_PLEDGE", 40, 0, made.id)]
    assert await account(ctx, dl.matched(hotel.id)) == 0
    async with ctx.database.connect() as conn:
        assert (await donations.get_matching(conn, campaign.name)).spent_points == 0


async def test_under_inactivity_a_lapsed_account_gives_its_points_to_the_charity(
    ctx: AppContext, clock: FixedClock, hotel: Partner, charity: Partner, member: Member
) -> None:
    ctx.expiry = INACTIVE_12
    await earn(ctx, hotel, member, 900)
    clock.set(utc(2026, 3, 1))
    await earn(ctx, hotel, member, 100)  # activity: the account lapses a year after this
    await pledge(ctx, member, charity, EXPIRING)

    clock.set(utc(2027, 3, 1, 23, 59))
    assert await expiry.expire_due(ctx) == RunReport()
    clock.set(utc(2027, 3, 2))
    assert await expiry.expire_due(ctx) == RunReport(0, 1, 0, 1_000)
    assert await expiry.expire_due(ctx) == RunReport()
    assert await available(ctx, member) == 0
    assert await account(ctx, dl.donated(charity.id)) == 1_000
    assert await account(ctx, dl.expired(hotel.id)) == 0

    await earn(ctx, hotel, member, 50)  # a new lot, a new year
    clock.set(utc(2028, 3, 3))
    assert await expiry.expire_due(ctx) == RunReport(0, 1, 0, 50)


@pytest.mark.parametrize(
    "undo",
    [
        pytest.param("none", id="no-pledge"),
        pytest.param("cancel", id="pledge-cancelled"),
        pytest.param("pause", id="charity-paused"),
    ],
)
async def test_without_a_live_pledge_expiring_points_are_breakage_as_before(
    ctx: AppContext,
    clock: FixedClock,
    fixed: ExpiryPolicy,
    hotel: Partner,
    charity: Partner,
    member: Member,
    undo: str,
) -> None:
    await earn(ctx, hotel, member, 1_000)
    if undo != "none":
        made = await pledge(ctx, member, charity, EXPIRING)
        if undo == "cancel":
            await cancel(ctx, made)
        else:
            await set_profile(ctx, charity, paused=True)

    clock.set(utc(2027, 1, 6))
    assert await expiry.expire_due(ctx) == RunReport(0, 1, 1_000, 0)
    assert await account(ctx, dl.expired(hotel.id)) == 1_000
    assert await account(ctx, dl.donated(charity.id)) == 0
    assert await available(ctx, member) == 0
    assert await given(ctx, member) == []
    assert await transactions(ctx, member, dl.TxnType.EXPIRY) == [-1_000]
    assert len(await events(ctx, member, expiry.POINTS_EXPIRED)) == 1
    assert await events(ctx, member, DONATION_MADE) == []


async def test_a_paused_charity_gets_expiring_points_again_once_resumed(
    ctx: AppContext,
    clock: FixedClock,
    fixed: ExpiryPolicy,
    hotel: Partner,
    charity: Partner,
    member: Member,
) -> None:
    await earn(ctx, hotel, member, 1_000)
    clock.set(utc(2026, 3, 1))
    await earn(ctx, hotel, member, 200)
    await pledge(ctx, member, charity, EXPIRING)
    await set_profile(ctx, charity, paused=True)
    clock.set(utc(2027, 1, 6))
    assert await expiry.expire_due(ctx) == RunReport(0, 1, 1_000, 0)

    await set_profile(ctx, charity, paused=False)
    clock.set(utc(2027, 3, 2))
    assert await expiry.expire_due(ctx) == RunReport(0, 1, 0, 200)
    assert await account(ctx, dl.expired(hotel.id)) == 1_000
    assert await account(ctx, dl.donated(charity.id)) == 200


async def test_each_member_gives_only_their_own_expiring_points(
    ctx: AppContext,
    clock: FixedClock,
    fixed: ExpiryPolicy,
    hotel: Partner,
    charity: Partner,
) -> None:
    giver, keeper = await enroll(ctx, "Giver"), await enroll(ctx, "Keeper")
    await earn(ctx, hotel, giver, 800)
    await earn(ctx, hotel, keeper, 500)
    await pledge(ctx, giver, charity, EXPIRING)

    clock.set(utc(2027, 1, 6))
    report = await expiry.expire_due(ctx)
    assert (report.expired_members, report.expired_points, report.donated_points) == (2, 500, 800)
    assert await account(ctx, dl.donated(charity.id)) == 800
    assert await account(ctx, dl.expired(hotel.id)) == 500


# -- limits ----------------------------------------------------------------------------------


async def test_a_member_has_one_live_expiring_pledge(
    ctx: AppContext, charity: Partner, member: Member
) -> None:
    other = await new_charity(ctx, "save-the-owls")
    first = await pledge(ctx, member, charity, EXPIRING)
    assert await refused_pledge(ctx, member, charity, EXPIRING) == "PLEDGE_EXISTS"
    assert await refused_pledge(ctx, member, other, EXPIRING) == "PLEDGE_EXISTS"

    await cancel(ctx, first)
    second = await pledge(ctx, member, other, EXPIRING)
    async with ctx.database.connect() as conn:
        assert await donations.expiring_pledge(conn, member.id) == second

    someone_else = await enroll(ctx, "Grace Hopper")
    await pledge(ctx, someone_else, charity, EXPIRING)  # one per member, not per charity


async def test_a_member_has_a_bounded_number_of_monthly_pledges(
    ctx: AppContext, charity: Partner, member: Member
) -> None:
    made = [
        await pledge(ctx, member, charity, points=100 + i)
        for i in range(dd.MONTHLY_PLEDGES_PER_MEMBER_MAX)
    ]
    assert await refused_pledge(ctx, member, charity) == "TOO_MANY_PLEDGES"
    await pledge(ctx, member, charity, EXPIRING)  # an EXPIRING pledge is not a monthly one

    await cancel(ctx, made[0])
    await pledge(ctx, member, charity, points=500)
    assert await refused_pledge(ctx, member, charity) == "TOO_MANY_PLEDGES"
    async with ctx.database.connect() as conn:
        live, _ = await donations.list_pledges(conn, member.id, False, 100, "")
        every, _ = await donations.list_pledges(conn, member.id, True, 100, "")
    assert len(live) == dd.MONTHLY_PLEDGES_PER_MEMBER_MAX + 1
    assert len(every) == dd.MONTHLY_PLEDGES_PER_MEMBER_MAX + 2


@pytest.mark.postgres
async def test_monthly_pledges_made_at_once_stop_at_the_limit(
    ctx: AppContext, charity: Partner, member: Member
) -> None:
    """Five requests race for the last place. Each keeps its transaction open after
    create_pledge until all five have been through it (or HOLD_S passes): the interleaving of
    concurrent requests whose counts all run before any commit. A create_pledge that locks
    something per member makes the others wait for the first commit instead."""
    limit, racers = dd.MONTHLY_PLEDGES_PER_MEMBER_MAX, 5
    for _ in range(limit - 1):
        await pledge(ctx, member, charity, points=100)
    through, everyone = 0, asyncio.Event()

    async def race() -> str:
        nonlocal through
        async with ctx.database.begin() as conn:
            try:
                await donations.create_pledge(
                    conn, ctx, member.id, charity.id, MONTHLY, 100, None, None
                )
            except FailedPrecondition as refused:
                return refused.reason
            finally:
                through += 1
                if through == racers:
                    everyone.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(everyone.wait(), HOLD_S)
        return "OK"

    outcomes = await asyncio.gather(*(race() for _ in range(racers)))
    async with ctx.database.connect() as conn:
        live, _ = await donations.list_pledges(conn, member.id, False, 100, "")
    assert len(live) == limit
    assert sorted(outcomes) == ["OK"] + ["TOO_MANY_PLEDGES"] * (racers - 1)


async def test_a_paused_charity_takes_no_new_pledge(
    ctx: AppContext, charity: Partner, member: Member
) -> None:
    await set_profile(ctx, charity, paused=True)
    assert await refused_pledge(ctx, member, charity) == "CHARITY_NOT_ACCEPTING"
    assert await refused_pledge(ctx, member, charity, EXPIRING) == "CHARITY_NOT_ACCEPTING"


# -- what the review found: clawbacks, activity, unpriced charities --------------------------


async def test_a_clawback_of_points_given_on_expiry_costs_the_member_nothing(
    ctx: AppContext,
    clock: FixedClock,
    fixed: ExpiryPolicy,
    hotel: Partner,
    charity: Partner,
    member: Member,
) -> None:
    january = await earn(ctx, hotel, member, 1_000)  # expires 2027-01-06
    clock.set(utc(2026, 6, 1))
    await earn(ctx, hotel, member, 500)
    await pledge(ctx, member, charity, EXPIRING)
    clock.set(utc(2027, 1, 6))
    assert await expiry.expire_due(ctx) == RunReport(0, 1, 0, 1_000)

    async with ctx.database.begin() as conn:  # the hotel refunds the January stay in full
        clawback = await ledger.reverse(conn, ctx, hotel.id, january.name, 0, "stay refunded")

    assert clawback.points == 0, "the member lost those points already: nothing more is taken"
    assert await available(ctx, member) == 500
    assert await account(ctx, dl.donated(charity.id)) == 1_000, "the charity keeps its gift"
    assert await account(ctx, dl.ADJUSTMENTS) == -1_000, "the coalition absorbs it"
    assert await account(ctx, dl.issued(hotel.id)) == -500


async def test_a_monthly_pledge_is_not_the_members_activity(
    ctx: AppContext, clock: FixedClock, hotel: Partner, charity: Partner, member: Member
) -> None:
    ctx.expiry = INACTIVE_12
    await earn(ctx, hotel, member, 10_000)
    await pledge(ctx, member, charity, MONTHLY, 100)
    for month in range(13):  # 5 January 2026 to 5 January 2027
        clock.set(add_months(utc(2026, 1, 5, 13), month))
        await donations.run_pledges(ctx)
    assert len(await given(ctx, member)) == 13

    clock.set(utc(2027, 1, 6))  # a year after the earn, the member's last own act
    report = await expiry.expire_due(ctx)
    assert report.expired_points == 10_000 - 13 * 100, "the account lapsed all the same"
    assert await available(ctx, member) == 0


async def test_a_charity_nobody_priced_takes_no_donation(
    ctx: AppContext, hotel: Partner, member: Member
) -> None:
    unpriced = await new_charity(ctx, "unpriced", per_thousand=0)
    await earn(ctx, hotel, member, 1_000)
    async with ctx.database.begin() as conn:
        with pytest.raises(FailedPrecondition) as caught:
            await donations.donate(conn, ctx, member.id, unpriced.id, 500)
    assert caught.value.reason == "CHARITY_NOT_ACCEPTING"
    async with ctx.database.connect() as conn:
        listed, _ = await donations.list_charities(conn, ctx, "", 100, "")
    assert unpriced.id not in [c.partner.id for c in listed]
    assert await available(ctx, member) == 1_000
