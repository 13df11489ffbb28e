"""Settlement of a generated month, proved against the raw ledger recomputed by hand.

A seeded random month (March 2026, with January and February before it) at partners of every
type: a hotel (USD, pending stays, holds, a price change on the 15th), a ride-share company
(USD, rewards, the sponsor of a donation match), an airline (EUR, conversions into miles,
bookings submitted by a travel agency), a retailer (JPY, rewards), the travel agency (USD) and
two charities (USD, matched; EUR). Earns, redemptions, holds captured in part or voided, refunds,
clawbacks (one of points that had already expired), a cancelled pending earn, rewards (one
voucher refunded when it expired), conversions (one rejected by the airline), donations and a
fixed-term expiry run. February is closed first (it settles January too), then March, then
April, with late transactions and adjustments.

The expected figures never come from settlement code: the test reads the raw export (ledger
transactions, postings, price lists, FX rates, adjustments) with SQLAlchemy Core and applies the
documented rules (settlement/domain/pricing.py, settlement/service/periods.py, the proto) in
plain Python with Decimal. A second, coarser oracle is the scenario's own book of the points it
moved, per period, partner and component.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from typing import Any

import pytest
from sqlalchemy import func, select

from gateway.adapters.models import (
    AdjustmentRow,
    FxRateRow,
    LedgerTransactionRow,
    PostingRow,
    PriceListRow,
    VoucherRow,
    table_of,
)
from gateway.clock import FixedClock
from gateway.domain import donations as dd
from gateway.domain import ledger as dl
from gateway.domain import programs
from gateway.domain import rewards as drw
from gateway.domain.errors import FailedPrecondition
from gateway.domain.expiry import ExpiryKind, ExpiryPolicy
from gateway.domain.links import LinkKind
from gateway.domain.members import ContactDetails
from gateway.domain.partners import Partner, PartnerSettings, PartnerType
from gateway.service import conversions as conversion_service
from gateway.service import donations, earning, expiry, ledger, links, rewards
from gateway.service import members as members_service
from gateway.service import partners as partner_service
from gateway.service.context import AppContext
from settlement.domain.periods import Period
from settlement.domain.pricing import PriceList
from settlement.service import periods, prices

TXNS = table_of(LedgerTransactionRow)
POSTINGS = table_of(PostingRow)
PRICE_LISTS = table_of(PriceListRow)
FX_RATES = table_of(FxRateRow)
ADJUSTMENTS = table_of(AdjustmentRow)
VOUCHERS = table_of(VoucherRow)

SEED = 20260301
MEMBERS = 36
BASE = "USD"
EXPONENTS = {"USD": 2, "EUR": 2, "JPY": 0}
"""Digits of the minor unit (ISO 4217), written out so the test does not ask babel."""
JAN, FEB, MARCH, APRIL = Period(2026, 1), Period(2026, 2), Period(2026, 3), Period(2026, 4)

HOTEL, RIDE, AIRLINE, RETAIL = "harbor-hotel", "swift-ride", "aurora-air", "maple-market"
AGENCY, OCEAN, FOREST = "wander-travel", "ocean-fund", "forest-trust"
CURRENCY = {
    HOTEL: "USD",
    RIDE: "USD",
    AIRLINE: "EUR",
    RETAIL: "JPY",
    AGENCY: "USD",
    OCEAN: "USD",
    FOREST: "EUR",
}

# The documented mapping of accounts to a partner's statement components.
COMPONENT_OF = {
    ("partner", "issued"): "ISSUED",
    ("partner", "redeemed"): "REDEEMED",
    ("partner", "converted"): "CONVERTED",
    ("program", "issued"): "CONVERTED",  # the miles the airline credits
    ("partner", "matched"): "MATCHED",
    ("partner", "expired"): "EXPIRED",
    ("charity", "donated"): "DONATED",
}
FEE_TYPES = {"EARN", "REDEEM", "CAPTURE", "REWARD"}
FEE_COMPONENTS = {"ISSUED", "REDEEMED"}


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


@dataclass(frozen=True)
class Version:
    """A price list version as the test loads it: decimal strings, major units."""

    valid_from: datetime
    issue: str = ""
    redeem: str = ""
    conversion: str = ""
    charity: str = ""
    fee_minor: int = 0
    fee_percent: str = ""


PRICES: dict[str, tuple[Version, ...]] = {
    HOTEL: (
        Version(utc(2026, 1, 1), "0.012345678901", "0.0093", fee_minor=3, fee_percent="0.75"),
        # The mid-month price change: from the 15th at 00:00:00.
        Version(utc(2026, 3, 15), "0.0131", "0.009551", fee_minor=4, fee_percent="1.1"),
        Version(utc(2026, 4, 1), "0.013377", "0.0096", fee_minor=5, fee_percent="1.05"),
    ),
    RIDE: (Version(utc(2026, 1, 1), "0.0101", "0.008765432", fee_minor=1, fee_percent="0.5"),),
    AIRLINE: (
        Version(
            utc(2026, 1, 1),
            "0.011111",
            "0.0087",
            conversion="0.0137777",
            fee_minor=2,
            fee_percent="0.25",
        ),
    ),
    RETAIL: (Version(utc(2026, 1, 1), "1.234567", "0.987654321", fee_minor=5, fee_percent="1.25"),),
    AGENCY: (Version(utc(2026, 1, 1), "0.01", "0.0088", fee_minor=2, fee_percent="0.3"),),
    # Fees that must never be charged: a charity makes no fee-bearing transaction.
    OCEAN: (Version(utc(2026, 1, 1), charity="0.0099987", fee_minor=7, fee_percent="2"),),
    FOREST: (Version(utc(2026, 1, 1), charity="0.00947"),),
}
FX = {
    FEB: {"EUR": "0.9187", "JPY": "150.03"},
    MARCH: {"EUR": "0.92", "JPY": "149.37"},
    # 1 / 0.8 and 100 / 160 are exact: conversions that end in a half cent round to even.
    APRIL: {"EUR": "0.8", "JPY": "160"},
}
FX_FIRST_SET = {(MARCH, "EUR"): "0.9"}
"""Set first, then replaced by FX: the close must use the rate in force."""


# -- the scenario ----------------------------------------------------------------------------


@dataclass
class Book:
    """What the scenario moved: points (member view) and miles per period, partner, component."""

    points: dict[tuple[str, str, str], int] = field(default_factory=lambda: defaultdict(int))
    units: dict[tuple[str, str, str], int] = field(default_factory=lambda: defaultdict(int))
    txn_ids: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))

    def add(
        self, period: Period, partner: str, component: str, points: int, units: int = 0
    ) -> None:
        self.points[(period.id, partner, component)] += points
        if units:
            self.units[(period.id, partner, component)] += units

    def of(self, period: Period) -> tuple[dict[tuple[str, str], int], dict[tuple[str, str], int]]:
        pts = {(p, c): v for (i, p, c), v in self.points.items() if i == period.id and v}
        miles = {(p, c): v for (i, p, c), v in self.units.items() if i == period.id and v}
        return pts, miles


@dataclass
class Month:
    """The generated activity and what the test needs to find its parts again."""

    ctx: AppContext
    rng: random.Random
    partners: dict[str, Partner] = field(default_factory=dict)
    members: list[str] = field(default_factory=list)
    linked: list[str] = field(default_factory=list)
    """Members with an Aurora number, in enrollment order (ids are random: never sort them)."""
    book: Book = field(default_factory=Book)
    settles_in: Period | None = None
    """Overrides the period the next transactions settle in (stragglers)."""
    posted_earns: list[dl.Transaction] = field(default_factory=list)
    pending_earns: list[dl.Transaction] = field(default_factory=list)
    debits: list[dl.Transaction] = field(default_factory=list)
    """Redemptions and captures that may still be refunded."""
    holds: list[dl.Transaction] = field(default_factory=list)
    vouchers: list[tuple[drw.Voucher, str]] = field(default_factory=list)
    conversions: list[dl.Transaction] = field(default_factory=list)
    rewards: dict[str, drw.Reward] = field(default_factory=dict)
    welcome: dict[str, dl.Transaction] = field(default_factory=dict)
    clawed: set[str] = field(default_factory=set)
    closes: list[tuple[Period, datetime, int]] = field(default_factory=list)
    """(period, close time, highest transaction seq when it closed) in close order."""
    refs: Counter[str] = field(default_factory=Counter)

    @property
    def clock(self) -> FixedClock:
        clock = self.ctx.clock
        assert isinstance(clock, FixedClock)
        return clock

    def period(self) -> Period:
        if self.settles_in is not None:
            return self.settles_in
        now = Period.of(self.clock.now())
        return FEB if now < FEB else now  # the first close (February) settles all history

    def ref(self, prefix: str) -> str:
        self.refs[prefix] += 1
        return f"{prefix}-{self.refs[prefix]:04d}"

    def note(self, txn: dl.Transaction) -> None:
        self.book.txn_ids[self.period().id].add(txn.id)

    # -- partners, prices, members ---------------------------------------------------------

    async def setup(self) -> None:
        self.clock.set(utc(2026, 1, 2, 9))
        specs: list[tuple[str, PartnerType, PartnerSettings]] = [
            (HOTEL, PartnerType.HOTEL, PartnerSettings("Harbor Hotel", Decimal(10))),
            (RIDE, PartnerType.RIDE_SHARE, PartnerSettings("Swift Ride", Decimal(5))),
            (
                AIRLINE,
                PartnerType.AIRLINE,
                PartnerSettings(
                    "Aurora Air",
                    Decimal(2),
                    earn_currency_code="EUR",
                    settlement_currency_code="EUR",
                    webhook_url="https://aurora.example/coalition",
                    program=programs.Program(unit="MILES", conversion_rate=Decimal("0.8")),
                ),
            ),
            (
                RETAIL,
                PartnerType.RETAIL,
                PartnerSettings("Maple Market", Decimal(3), settlement_currency_code="JPY"),
            ),
            (
                OCEAN,
                PartnerType.CHARITY,
                PartnerSettings(
                    "Ocean Fund",
                    charity=dd.CharityProfile(
                        minimum_donation_points=100, value_per_thousand_minor=1_000
                    ),
                ),
            ),
            (
                FOREST,
                PartnerType.CHARITY,
                PartnerSettings(
                    "Forest Trust",
                    settlement_currency_code="EUR",
                    charity=dd.CharityProfile(
                        minimum_donation_points=100, value_per_thousand_minor=947
                    ),
                ),
            ),
        ]
        async with self.ctx.database.begin() as conn:
            for pid, kind, settings in specs:
                self.partners[pid] = await partner_service.create(
                    conn, self.ctx, pid, kind, settings
                )
            self.partners[AGENCY] = await partner_service.create(
                conn,
                self.ctx,
                AGENCY,
                PartnerType.TRAVEL_AGENCY,
                PartnerSettings("Wander Travel", Decimal(1), authorized_airlines=(AIRLINE,)),
            )
            for pid, versions in PRICES.items():
                for v in versions:
                    await prices.create_price_list(
                        conn,
                        self.ctx,
                        PriceList(
                            "",
                            pid,
                            v.valid_from,
                            "",
                            issue_price=Decimal(v.issue or 0),
                            redemption_rate=Decimal(v.redeem or 0),
                            conversion_price=Decimal(v.conversion or 0),
                            charity_value=Decimal(v.charity or 0),
                            fee_per_transaction_minor=v.fee_minor,
                            fee_percent=Decimal(v.fee_percent or 0),
                        ),
                    )
            for period, rates in FX.items():
                for currency, rate in rates.items():
                    first = FX_FIRST_SET.get((period, currency))
                    if first is not None:
                        await prices.set_fx_rate(conn, self.ctx, period, currency, first)
                    await prices.set_fx_rate(conn, self.ctx, period, currency, rate)
            for i in range(MEMBERS):
                member = await members_service.enroll(conn, self.ctx, ContactDetails(f"M {i}"))
                self.members.append(member.id)
            for i in range(0, MEMBERS, 3):  # a third of the members fly Aurora
                await links.link(
                    conn,
                    self.ctx,
                    self.members[i],
                    AIRLINE,
                    LinkKind.PROGRAM,
                    f"AU{700000 + i}",
                )
                self.linked.append(self.members[i])
            for pid, kind, price, days in (
                (RIDE, drw.RewardKind.RIDE_CREDIT, 1_500, 30),
                (RETAIL, drw.RewardKind.GIFT, 2_500, 5),
            ):
                self.rewards[pid] = await rewards.create(
                    conn,
                    self.ctx,
                    pid,
                    drw.RewardDraft(
                        f"{pid} reward", "", kind, price, 0, None, None, timedelta(days=days)
                    ),
                )
            await donations.create_matching(
                conn,
                self.ctx,
                dd.MatchingDraft(RIDE, OCEAN, 50, 4_000, utc(2026, 3, 5), utc(2026, 3, 25)),
            )

    # -- one use case each, in its own database transaction ---------------------------------

    async def earn(
        self,
        partner_id: str,
        member: str,
        points: int | None = None,
        *,
        vest_days: int = 0,
        occur_time: datetime | None = None,
        via_agency: bool = False,
    ) -> dl.Transaction:
        partner = self.partners[partner_id]
        basis: earning.Purchase | earning.Action
        if points is None:
            currency = "EUR" if partner_id == AIRLINE else "USD"
            basis = earning.Purchase(self.rng.randint(800, 60_000), currency)
        else:
            basis = earning.Action("BONUS", points)
        now = self.clock.now()
        vest = now + timedelta(days=vest_days) if vest_days else None
        async with self.ctx.database.begin() as conn:
            txn, _ = await earning.earn(
                conn,
                self.ctx,
                partner,
                member,
                basis,
                self.ref("AGY" if via_agency else partner_id[:3].upper()),
                vest_time=vest,
                occur_time=occur_time,
                channel=self.partners[AGENCY] if via_agency else None,
            )
        if txn.points:
            self.book.add(self.period(), partner_id, "ISSUED", txn.points)
            self.note(txn)
            (self.pending_earns if vest else self.posted_earns).append(txn)
        return txn

    async def available(self, member: str) -> int:
        async with self.ctx.database.connect() as conn:
            return (await ledger.balance_of(conn, member)).available

    async def redeem(self, partner_id: str, member: str, want: int) -> dl.Transaction | None:
        points = min(want, await self.available(member))
        if points < 50:
            return None
        async with self.ctx.database.begin() as conn:
            txn = await ledger.redeem(
                conn, self.ctx, partner_id, member, points, self.ref(f"R{partner_id[:3]}")
            )
        self.book.add(self.period(), partner_id, "REDEEMED", -points)
        self.note(txn)
        self.debits.append(txn)
        return txn

    async def authorize(self, partner_id: str, member: str, want: int) -> None:
        points = min(want, await self.available(member))
        if points < 50:
            return
        seconds = self.rng.choice((2 * 86_400, 4 * 86_400))
        async with self.ctx.database.begin() as conn:
            hold = await ledger.authorize(
                conn, self.ctx, partner_id, member, points, seconds, self.ref("HOLD")
            )
        self.holds.append(hold)

    async def settle_hold(self) -> None:
        now = self.clock.now()
        open_holds = [h for h in self.holds if h.due_time is not None and h.due_time > now]
        if not open_holds:
            return
        hold = self.rng.choice(open_holds)
        self.holds.remove(hold)
        async with self.ctx.database.begin() as conn:
            if self.rng.random() < 0.3:
                await ledger.void(conn, self.ctx, hold.partner_id, hold.name)
                return
            held = -hold.points
            points = self.rng.randint(held // 2, held - 1) if held > 1 else 0  # partial
            txn = await ledger.capture(conn, self.ctx, hold.partner_id, hold.name, points)
        self.book.add(self.period(), hold.partner_id, "REDEEMED", txn.points)
        self.note(txn)
        self.debits.append(txn)

    async def refund(self) -> None:
        if not self.debits:
            return
        debit = self.debits.pop(self.rng.randrange(len(self.debits)))
        size = -debit.points
        points = 0 if debit.type is dl.TxnType.CAPTURE else self.rng.randint(1, size - 1)
        async with self.ctx.database.begin() as conn:
            txn = await ledger.reverse(
                conn, self.ctx, debit.partner_id, debit.name, points, "refund"
            )
        assert txn.points == (points or size)
        self.book.add(self.period(), debit.partner_id, "REDEEMED", txn.points)
        self.note(txn)

    async def claw_back(self, earn: dl.Transaction, points: int, by: str) -> dl.Transaction:
        async with self.ctx.database.begin() as conn:
            txn = await ledger.reverse(conn, self.ctx, by, earn.name, points, "clawback")
        amount = points or earn.points
        # What the member did not give back came back from breakage (the expired points).
        self.book.add(self.period(), earn.partner_id, "ISSUED", -amount)
        restored = amount + txn.points
        if restored:
            self.book.add(self.period(), earn.partner_id, "EXPIRED", restored)
        self.note(txn)
        return txn

    async def random_claw_back(self) -> None:
        # Each earn is clawed back once at most, the welcome bonuses never (one is, in full).
        welcome = {e.id for e in self.welcome.values()}
        earns = [e for e in self.posted_earns if e.points >= 10 and e.id not in self.clawed]
        earns = [e for e in earns if e.id not in welcome]
        if not earns:
            return
        earn = self.rng.choice(earns)
        self.clawed.add(earn.id)
        by = AGENCY if earn.channel_partner_id == AGENCY else earn.partner_id
        await self.claw_back(earn, self.rng.randint(1, earn.points - 1), by)

    async def reward(self, partner_id: str, member: str) -> None:
        reward = self.rewards[partner_id]
        if await self.available(member) < reward.points_price:
            return
        async with self.ctx.database.begin() as conn:
            voucher, txn = await rewards.redeem(conn, self.ctx, member, reward.name)
            if self.rng.random() < 0.5:
                await rewards.consume(conn, self.ctx, partner_id, voucher.code)
            else:
                self.vouchers.append((voucher, partner_id))
        self.book.add(self.period(), partner_id, "REDEEMED", -reward.points_price)
        self.note(txn)

    async def refund_expired_vouchers(self) -> None:
        now = self.clock.now()
        due = [(v, p) for v, p in self.vouchers if v.expire_time <= now]
        refunded = await rewards.refund_expired(self.ctx)
        assert refunded == len(due) > 0
        async with self.ctx.database.connect() as conn:
            for voucher, partner_id in due:
                self.vouchers.remove((voucher, partner_id))
                self.book.add(self.period(), partner_id, "REDEEMED", voucher.points)
                refund_id = await conn.scalar(
                    select(VOUCHERS.c.refund_transaction_id).where(VOUCHERS.c.code == voucher.code)
                )
                self.book.txn_ids[self.period().id].add(refund_id)

    async def convert(self, member: str) -> None:
        points = min(self.rng.randint(1_000, 4_000), await self.available(member))
        if points < 100:
            return
        async with self.ctx.database.begin() as conn:
            member_row = await members_service.get(conn, self.ctx, f"members/{member}")
            done = await conversion_service.convert(conn, self.ctx, AIRLINE, member_row, points)
        assert done.units == int(points * Decimal("0.8"))
        self.book.add(self.period(), AIRLINE, "CONVERTED", -points, done.units)
        self.note(done.transaction)
        self.conversions.append(done.transaction)

    async def reject_conversion(self) -> None:
        txn = self.conversions.pop(0)
        (component,) = txn.breakdown
        units = int(str(component["units"]))
        async with self.ctx.database.begin() as conn:
            back = await ledger.reverse(conn, self.ctx, AIRLINE, txn.name, 0, "number closed")
        self.book.add(self.period(), AIRLINE, "CONVERTED", back.points, -units)
        self.note(back)

    async def donate(self, charity: str, member: str) -> None:
        points = min(self.rng.randint(100, 1_500), await self.available(member))
        if points < 100:
            return
        async with self.ctx.database.begin() as conn:
            donation, txn = await donations.donate(conn, self.ctx, member, charity, points)
        self.book.add(self.period(), charity, "DONATED", -(points + donation.matched_points))
        if donation.matched_points:
            assert donation.sponsor_id == RIDE
            self.book.add(self.period(), RIDE, "MATCHED", donation.matched_points)
        self.note(txn)

    async def cancel_pending(self) -> None:
        now = self.clock.now()
        earn = next(e for e in self.pending_earns if e.due_time and e.due_time > now)
        self.pending_earns.remove(earn)
        async with self.ctx.database.begin() as conn:
            txn = await ledger.reverse(conn, self.ctx, earn.partner_id, earn.name, 0, "no-show")
        assert txn.points == -earn.points
        self.book.add(self.period(), earn.partner_id, "ISSUED", -earn.points)
        self.note(txn)

    async def run_expiry(self) -> int:
        expired = 0
        for member in self.members:
            async with self.ctx.database.begin() as conn:
                for txn in await expiry.expire_member(conn, self.ctx, member):
                    assert txn.type is dl.TxnType.EXPIRY
                    self.book.add(self.period(), txn.partner_id, "EXPIRED", txn.points)
                    self.note(txn)
                    expired -= txn.points
        return expired

    async def settle_due(self) -> None:
        async with self.ctx.database.begin() as conn:
            await ledger.settle_due(conn, self.ctx)

    async def close(self, period: Period, when: datetime) -> None:
        self.clock.set(when)
        async with self.ctx.database.begin() as conn:
            closed = await periods.close(conn, self.ctx, period)
        assert closed.close_time == when
        async with self.ctx.database.connect() as conn:
            mark = await conn.scalar(select(func.max(TXNS.c.seq)))
        self.closes.append((period, when, int(mark or 0)))

    # -- a random day's activity -------------------------------------------------------------

    async def random_event(self) -> None:
        rng = self.rng
        member = rng.choice(self.members)
        kind = rng.choices(
            (
                "earn",
                "pending",
                "agency",
                "redeem",
                "hold",
                "settle",
                "refund",
                "claw",
                "reward",
                "convert",
                "donate",
            ),
            weights=(30, 4, 7, 17, 6, 6, 5, 3, 5, 5, 9),
        )[0]
        match kind:
            case "earn":
                await self.earn(rng.choice((HOTEL, HOTEL, RIDE, RETAIL)), member)
            case "pending":
                await self.earn(HOTEL, member, vest_days=rng.randint(2, 9))
            case "agency":
                await self.earn(AIRLINE, member, via_agency=True)
            case "redeem":
                partner = rng.choice((HOTEL, RIDE, RIDE, RETAIL, AGENCY, AIRLINE))
                await self.redeem(partner, member, rng.randint(100, 2_500))
            case "hold":
                await self.authorize(rng.choice((HOTEL, RIDE)), member, rng.randint(300, 3_000))
            case "settle":
                await self.settle_hold()
            case "refund":
                await self.refund()
            case "claw":
                await self.random_claw_back()
            case "reward":
                await self.reward(rng.choice((RIDE, RETAIL)), member)
            case "convert":
                await self.convert(rng.choice(self.linked))
            case "donate":
                await self.donate(rng.choice((OCEAN, OCEAN, FOREST)), member)

    async def activity(self, start: datetime, end: datetime, count: int, *special: Any) -> None:
        """`count` random events between start and end, and the special (time, coroutine
        function) ones at their times."""
        span = (end - start).total_seconds()
        times = sorted(start + timedelta(seconds=self.rng.uniform(0, span)) for _ in range(count))
        events: list[tuple[datetime, int, Any]] = [(t, 1, self.random_event) for t in times]
        events += [(t, 0, action) for t, action in special]
        for when, _, action in sorted(events, key=lambda e: (e[0], e[1])):
            self.clock.set(when)
            await action()


async def generate(ctx: AppContext) -> Month:
    """January and February, closed; March, closed; returns the month for April to continue."""
    month = Month(ctx, random.Random(SEED))
    await month.setup()
    m = month.members

    # January: a few earns the first close (February) settles as history.
    for i in range(10, 15):
        month.clock.set(utc(2026, 1, 10 + i))
        await month.earn(HOTEL, m[i], 2_000 + 111 * i)

    # February: everyone gets a welcome bonus; the first eight under a one-month expiry.
    month.clock.set(utc(2026, 2, 2, 8))
    ctx.expiry = ExpiryPolicy(ExpiryKind.FIXED, 1)
    for i in range(8):
        month.welcome[m[i]] = await month.earn(HOTEL, m[i], 9_000 + i)
    ctx.expiry = ExpiryPolicy()
    for i in range(8, MEMBERS):
        await month.earn(month.rng.choice((HOTEL, RIDE, RETAIL)), m[i], 4_000 + 7 * i)
    await month.activity(utc(2026, 2, 3), utc(2026, 2, 27), 60)
    month.clock.set(utc(2026, 2, 28, 23, 59, 59, 999_999))  # February's last instant
    await month.earn(RIDE, m[20], 321)
    month.clock.set(utc(2026, 3, 1))  # March's first instant, recorded before February closes
    await month.earn(RETAIL, m[21], 654)

    await month.close(FEB, utc(2026, 3, 1, 6))

    # A straggler: stamped in February, committed after its close; settled late in March.
    month.clock.set(utc(2026, 2, 28, 23, 59, 59, 500_000))
    month.settles_in = MARCH
    await month.redeem(RIDE, m[22], 777)
    month.settles_in = None

    async def dated_in_february() -> None:
        # Alone in its bucket (late): 10,000 x 1.01 cents = 10,100; the 0.5% fee is 50.5 -> 50.
        await month.earn(RIDE, m[23], 10_000, occur_time=utc(2026, 2, 26, 18))

    async def old_price() -> None:
        await month.earn(HOTEL, m[24], 4_321)

    async def pending_then_cancelled() -> None:
        await month.earn(HOTEL, m[25], 2_500, vest_days=10)

    async def claw_back_expired() -> None:
        # The welcome earn of a member whose welcome points expired: those come from breakage.
        await month.claw_back(month.welcome[m[0]], 0, HOTEL)

    async def expire() -> None:
        assert await month.run_expiry() > 0, "the fixed-term lots expired"

    await month.activity(
        utc(2026, 3, 1, 7),
        utc(2026, 3, 31, 22),
        250,
        (utc(2026, 3, 4, 10), month.reject_conversion),
        (utc(2026, 3, 10, 12), expire),
        (utc(2026, 3, 11, 9), claw_back_expired),
        (utc(2026, 3, 12, 15), dated_in_february),
        (utc(2026, 3, 14, 23, 59, 59, 999_999), old_price),
        (utc(2026, 3, 15), old_price),  # the new price's first instant
        (utc(2026, 3, 16, 9), pending_then_cancelled),
        (utc(2026, 3, 18, 9), month.cancel_pending),
        (utc(2026, 3, 20, 5), month.settle_due),
        (utc(2026, 3, 28, 5), month.refund_expired_vouchers),
    )
    month.clock.set(utc(2026, 3, 31, 23, 59, 59, 999_999))
    await month.earn(AIRLINE, m[26], 888, via_agency=True)
    month.clock.set(utc(2026, 4, 1))  # April's first instant, recorded before March closes
    await month.earn(HOTEL, m[27], 999)

    await month.close(MARCH, utc(2026, 4, 1, 2))
    return month


# -- the raw export and the rules, recomputed ------------------------------------------------


@dataclass(frozen=True)
class RawTxn:
    seq: int
    id: str
    member_id: str
    partner_id: str
    type: str
    partner_reference: str
    create_time: datetime
    occur_time: datetime | None
    related_id: str | None


@dataclass(frozen=True)
class RawPrice:
    id: str
    partner_id: str
    valid_from: datetime
    currency: str
    issue: Decimal
    redeem: Decimal
    conversion: Decimal
    charity: Decimal
    fee_minor: int
    fee_percent: Decimal

    @property
    def name(self) -> str:
        return f"partners/{self.partner_id}/priceLists/{self.id}"


@dataclass(frozen=True)
class ExpectedLine:
    partner: str
    kind: str
    component: str
    txn: RawTxn
    points: int
    units: int
    price: RawPrice
    reason: str
    value: Decimal
    """The component's money for the partner, exact minor units."""
    percent_fee: Decimal
    fixed_fee: int

    @property
    def exact(self) -> Decimal:
        return self.value - self.percent_fee - self.fixed_fee

    @property
    def late(self) -> bool:
        return self.kind == "LATE_TRANSACTION"


@dataclass(frozen=True)
class RawAdjustment:
    id: str
    period: str
    partner_id: str
    points: int
    amount_minor: int
    currency: str
    reason: str
    reference: str
    create_time: datetime


@dataclass
class Export:
    txns: dict[int, RawTxn]
    parts: dict[int, dict[tuple[str, str], list[int]]]
    """seq -> (partner, component) -> [points, units], from the postings."""
    prices: dict[str, list[RawPrice]]
    fx: dict[str, dict[str, Decimal]]
    adjustments: list[RawAdjustment]


async def export(ctx: AppContext) -> Export:
    async with ctx.database.connect() as conn:
        txns = {
            r.seq: RawTxn(
                r.seq,
                r.id,
                r.member_id,
                r.partner_id,
                r.type,
                r.partner_reference,
                r.create_time,
                r.occur_time,
                r.related_id,
            )
            for r in await conn.execute(select(TXNS))
        }
        parts: dict[int, dict[tuple[str, str], list[int]]] = defaultdict(dict)
        for p in await conn.execute(select(POSTINGS).order_by(POSTINGS.c.id)):
            words = p.account.split(":")  # "kind:{owner id}:account"
            component = COMPONENT_OF.get((words[0], words[-1])) if len(words) == 3 else None
            if component is None:
                continue
            owner = words[1]
            sums = parts[p.transaction_seq].setdefault((owner, component), [0, 0])
            if p.asset == dl.POINTS:
                sums[0] -= p.amount  # member view: minus the partner account's postings
            else:
                sums[1] -= p.amount  # program units credited
        price_lists: dict[str, list[RawPrice]] = defaultdict(list)
        for r in await conn.execute(select(PRICE_LISTS).order_by(PRICE_LISTS.c.valid_from)):
            price_lists[r.partner_id].append(
                RawPrice(
                    r.id,
                    r.partner_id,
                    r.valid_from,
                    r.currency,
                    Decimal(r.issue_price),
                    Decimal(r.redemption_rate),
                    Decimal(r.conversion_price),
                    Decimal(r.charity_value),
                    r.fee_per_transaction_minor,
                    Decimal(r.fee_percent),
                )
            )
        fx: dict[str, dict[str, Decimal]] = defaultdict(lambda: {BASE: Decimal(1)})
        for r in await conn.execute(select(FX_RATES).where(FX_RATES.c.base_currency == BASE)):
            fx[r.period][r.currency] = Decimal(r.rate)
        adjustments = [
            RawAdjustment(
                r.id,
                r.period,
                r.partner_id,
                r.points,
                r.amount_minor,
                r.currency,
                r.reason,
                r.reference,
                r.create_time,
            )
            for r in await conn.execute(select(ADJUSTMENTS))
        ]
    return Export(txns, dict(parts), dict(price_lists), fx, adjustments)


def half_even(exact: Decimal) -> int:
    return int(exact.to_integral_value(rounding=ROUND_HALF_EVEN))


def price_at(versions: list[RawPrice], when: datetime) -> RawPrice:
    """The version valid at `when`: the latest valid_from at or before it."""
    valid = [v for v in versions if v.valid_from <= when]
    assert valid, f"no price list of {versions[0].partner_id} covers {when}"
    return max(valid, key=lambda v: v.valid_from)


def value_of(component: str, points: int, units: int, p: RawPrice) -> Decimal:
    """Money for the partner (+ it receives), major units; points are member-view."""
    match component:
        case "ISSUED" | "MATCHED":
            return -points * p.issue  # the partner pays for the points it issues or adds
        case "REDEEMED":
            return -points * p.redeem  # redeemed points are negative: the partner is paid
        case "CONVERTED":
            return units * p.conversion  # per mile credited
        case "DONATED":
            return -points * p.charity
        case _:
            return Decimal(0)  # EXPIRED: breakage moves no money


LATE_RECORDED = periods.LATE_RECORDED
LATE_DATED = periods.LATE_DATED


def expected_lines(ex: Export, closes: list[tuple[Period, datetime, int]]) -> dict[str, list]:
    """Every line of every close, by period id: which close settles which transaction."""
    settled: set[int] = set()
    out: dict[str, list[ExpectedLine]] = defaultdict(list)
    by_id = {t.id: t for t in ex.txns.values()}
    with localcontext() as exact:
        exact.prec = 80
        for i, (period, _, mark) in enumerate(closes):
            for seq in sorted(ex.txns):
                t = ex.txns[seq]
                # Recorded before the period's end, committed before its close, never settled.
                if seq in settled or seq > mark or t.create_time >= period.end:
                    continue
                if seq not in ex.parts:
                    continue  # touched no partner account (a hold, a void): nothing to settle
                settled.add(seq)
                recorded_late = i > 0 and t.create_time < period.start
                dated_late = i > 0 and t.occur_time is not None and t.occur_time < period.start
                kind = "LATE_TRANSACTION" if recorded_late or dated_late else "TRANSACTION"
                reason = LATE_RECORDED if recorded_late else LATE_DATED if dated_late else ""
                # A reversal moves money back at the price of what it reverses.
                reversed_ = by_id.get(t.related_id or "") if t.type == "REVERSAL" else None
                priced_at = reversed_.create_time if reversed_ else t.create_time
                for (partner, component), (points, units) in sorted(ex.parts[seq].items()):
                    p = price_at(ex.prices[partner], priced_at)
                    scale = Decimal(10) ** EXPONENTS[p.currency]
                    value = value_of(component, points, units, p) * scale
                    size = -value if component == "ISSUED" else value
                    percent = size * p.fee_percent / 100 if component in FEE_COMPONENTS else 0
                    fee_bearing = (
                        t.partner_id == partner
                        and t.type in FEE_TYPES
                        and component in FEE_COMPONENTS
                    )
                    out[period.id].append(
                        ExpectedLine(
                            partner,
                            kind,
                            component,
                            t,
                            points,
                            units,
                            p,
                            reason,
                            value,
                            Decimal(percent),
                            p.fee_minor if fee_bearing else 0,
                        )
                    )
    return out


@dataclass
class Bucket:
    points: int = 0
    units: int = 0
    value: Decimal = Decimal(0)
    percent_fee: Decimal = Decimal(0)
    fixed_fee: int = 0
    breakage: Decimal = Decimal(0)

    @property
    def exact(self) -> Decimal:
        return self.value - self.percent_fee - self.fixed_fee


def buckets_of(lines: Iterable[ExpectedLine]) -> dict[tuple[str, str, str, bool], Bucket]:
    """(partner, component, price list, late) -> the exact sums of its lines."""
    out: dict[tuple[str, str, str, bool], Bucket] = defaultdict(Bucket)
    with localcontext() as exact:
        exact.prec = 80
        for x in lines:
            b = out[(x.partner, x.component, x.price.id, x.late)]
            b.points += x.points
            b.units += x.units
            b.value += x.value
            b.percent_fee += x.percent_fee
            b.fixed_fee += x.fixed_fee
            if x.component == "EXPIRED":  # memo: what the expired points were sold for
                b.breakage += -x.points * x.price.issue * Decimal(10) ** EXPONENTS[x.price.currency]
    return out


def to_base(minor: int, currency: str, rate: Decimal) -> int:
    with localcontext() as exact:
        exact.prec = 80
        shift = Decimal(10) ** (EXPONENTS[BASE] - EXPONENTS[currency])
        return half_even(Decimal(minor) * shift / rate)


def expected_statements(
    ex: Export, period: Period, lines: list[ExpectedLine], close_time: datetime
) -> dict[str, dict[str, Any]]:
    """Every partner's statement, field by field (the names of settlement's Statement)."""
    by_partner: dict[str, dict[str, Any]] = {}

    def statement(partner: str) -> dict[str, Any]:
        if partner not in by_partner:
            currency = CURRENCY[partner]
            by_partner[partner] = {
                "period": period.id,
                "partner_id": partner,
                "currency": currency,
                "exponent": EXPONENTS[currency],
                "fx_rate": ex.fx[period.id][currency],
                "create_time": close_time,
                "line_count": 0,
                "breakage": 0,
                "manual": [],
                **dict.fromkeys(
                    (
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
                        "late_minor",
                    ),
                    0,
                ),
            }
        return by_partner[partner]

    for x in lines:
        statement(x.partner)["line_count"] += 1
    for (partner, component, _, late), b in buckets_of(lines).items():
        s = statement(partner)
        value, fee = half_even(b.value), half_even(b.percent_fee) + b.fixed_fee
        s["fee_minor"] += fee
        s["breakage"] += half_even(b.breakage)
        if late:
            s["late_minor"] += value - fee
        match component:
            case "ISSUED":
                s["points_issued"] += b.points
                s["issue_minor"] -= value
            case "MATCHED":
                s["points_matched"] += b.points
                s["issue_minor"] -= value
            case "REDEEMED":
                s["points_redeemed"] -= b.points
                s["redemption_minor"] += value
            case "CONVERTED":
                s["points_converted"] -= b.points
                s["units_converted"] += b.units
                s["conversion_minor"] += value
            case "DONATED":
                s["points_donated"] -= b.points
                s["donation_minor"] += value
            case "EXPIRED":
                s["points_expired"] -= b.points
    for a in ex.adjustments:
        if a.period == period.id:
            s = statement(a.partner_id)
            s["line_count"] += 1
            s["manual"].append(a.amount_minor)
    for s in by_partner.values():
        manual = s.pop("manual")
        breakage = s.pop("breakage")
        due_manual = sum(a for a in manual if a > 0)
        owed_manual = -sum(a for a in manual if a < 0)
        s["adjustment_minor"] = due_manual - owed_manual + s["late_minor"]
        s["owed_minor"] = s["issue_minor"] + s["fee_minor"] + owed_manual
        s["due_minor"] = (
            s["redemption_minor"] + s["conversion_minor"] + s["donation_minor"] + due_manual
        )
        s["net_minor"] = s["due_minor"] - s["owed_minor"]
        s["net_base_minor"] = to_base(s["net_minor"], s["currency"], s["fx_rate"])
        s["breakage_base_minor"] = to_base(breakage, s["currency"], s["fx_rate"])
    return by_partner


def expected_margin(statements: Iterable[dict[str, Any]]) -> dict[str, int]:
    st = list(statements)

    def base(s: dict[str, Any], minor: int) -> int:
        return to_base(minor, s["currency"], s["fx_rate"])

    margin = {
        "total": -sum(s["net_base_minor"] for s in st),
        "issue_revenue": sum(base(s, s["issue_minor"]) for s in st),
        "fee_revenue": sum(base(s, s["fee_minor"]) for s in st),
        "redemption_cost": -sum(base(s, s["redemption_minor"]) for s in st),
        "conversion_cost": -sum(base(s, s["conversion_minor"]) for s in st),
        "charity_payouts": -sum(base(s, s["donation_minor"]) for s in st),
        # Manual adjustments only: late transactions are in the parts above already.
        "adjustments": -sum(base(s, s["adjustment_minor"] - s["late_minor"]) for s in st),
        "breakage": sum(s["breakage_base_minor"] for s in st),
    }
    parts = ("issue_revenue", "fee_revenue", "redemption_cost", "conversion_cost")
    parts += ("charity_payouts", "adjustments")
    margin["fx_rounding"] = margin["total"] - sum(margin[p] for p in parts)
    return margin


# -- checking a closed period against the recomputation --------------------------------------


def fields_of(obj: Any, names: Iterable[str]) -> dict[str, Any]:
    return {n: getattr(obj, n) for n in names}


async def check_period(
    ctx: AppContext, month: Month, period: Period
) -> tuple[dict[str, dict[str, Any]], list[ExpectedLine]]:
    """Assert the closed period's statements, netting and lines equal the recomputation."""
    ex = await export(ctx)
    lines = expected_lines(ex, month.closes)[period.id]
    (close_time,) = [t for p, t, _ in month.closes if p == period]
    expected = expected_statements(ex, period, lines, close_time)
    assert expected, f"{period} has activity"

    # The scenario's own book agrees with the raw ledger (a shared mistake would show here).
    booked_points, booked_units = month.book.of(period)
    raw_points: dict[tuple[str, str], int] = defaultdict(int)
    raw_units: dict[tuple[str, str], int] = defaultdict(int)
    for x in lines:
        raw_points[(x.partner, x.component)] += x.points
        raw_units[(x.partner, x.component)] += x.units
    assert {k: v for k, v in raw_points.items() if v} == booked_points
    assert {k: v for k, v in raw_units.items() if v} == booked_units
    assert {x.txn.id for x in lines} == month.book.txn_ids[period.id]

    async with ctx.database.connect() as conn:
        statements = await periods.all_statements(conn, period)
        assert [s.partner_id for s in statements] == sorted(expected)
        for s in statements:
            assert fields_of(s, expected[s.partner_id]) == expected[s.partner_id], s.partner_id
            one = await periods.get_statement(conn, period, s.partner_id)
            assert one == s
            assert s.name == f"settlementPeriods/{period.id}/statements/{s.partner_id}"
            await check_lines(conn, period, s, [x for x in lines if x.partner == s.partner_id], ex)

        report = await periods.netting_report(conn, period)
        closed = await periods.get_period(conn, period)
    margin = expected_margin(expected.values())
    assert fields_of(report.margin, margin) == margin
    assert report.margin.total + sum(p.net_base_minor for p in report.positions) == 0
    parts = report.margin
    assert parts.total == (
        parts.issue_revenue
        + parts.fee_revenue
        + parts.redemption_cost
        + parts.conversion_cost
        + parts.charity_payouts
        + parts.adjustments
        + parts.fx_rounding
    )
    assert [p.partner_id for p in report.positions] == sorted(expected)
    assert list(report.positions) == statements
    by_currency: dict[str, int] = defaultdict(int)
    for s in expected.values():
        by_currency[s["currency"]] -= s["net_minor"]
    assert list(report.margins_by_currency) == sorted(by_currency.items())
    assert (report.period, report.base_currency, report.base_exponent) == (period.id, BASE, 2)
    assert report.create_time == close_time == closed.close_time
    assert closed.statement_count == len(expected)
    assert closed.totals is not None and closed.totals["margin"] == margin
    return expected, lines


async def check_lines(
    conn: Any, period: Period, statement: Any, expected: list[ExpectedLine], ex: Export
) -> None:
    """The statement's lines trace to the ledger's transactions, with their exact amounts."""
    partner_id, currency = statement.partner_id, statement.currency
    found = [x async for x in periods.stream_lines(conn, period, partner_id, currency)]
    assert len(found) == statement.line_count
    assert [x.create_time for x in found] == sorted(x.create_time for x in found), "proto order"
    adjustments = [a for a in ex.adjustments if a.period == period.id]
    adjustments = [a for a in adjustments if a.partner_id == statement.partner_id]
    assert len(found) == len(expected) + len(adjustments)

    def key(x: ExpectedLine) -> tuple[Any, ...]:
        t = x.txn
        return (
            "KIND_" + x.kind,
            x.component,
            f"members/{t.member_id}/transactions/{t.id}",
            t.type,
            x.points,
            x.units,
            x.exact,
            half_even(x.exact),
            x.price.name,
            t.partner_reference,
            x.reason,
            t.create_time,
            t.occur_time,
            "",
        )

    def found_key(line: Any) -> tuple[Any, ...]:
        return (
            "KIND_" + line.kind,
            line.component,
            line.transaction_name,
            line.txn_type,
            line.points,
            line.units,
            line.exact_minor,
            line.amount_minor,
            line.price_list,
            line.partner_reference,
            line.reason,
            line.create_time,
            line.occur_time,
            line.adjustment_name,
        )

    def adjustment_key(a: RawAdjustment) -> tuple[Any, ...]:
        name = f"settlementPeriods/{period.id}/adjustments/{a.id}"
        return (
            "KIND_ADJUSTMENT",
            "ADJUSTMENT",
            "",
            "ADJUSTMENT",
            a.points,
            0,
            Decimal(a.amount_minor),
            a.amount_minor,
            "",
            a.reference,
            a.reason,
            a.create_time,
            None,
            name,
        )

    want = sorted([key(x) for x in expected] + [adjustment_key(a) for a in adjustments], key=repr)
    assert sorted((found_key(x) for x in found), key=repr) == want
    for line in found:
        assert (line.period, line.partner_id, line.currency) == (
            period.id,
            statement.partner_id,
            statement.currency,
        )
        assert line.amount_minor == half_even(line.exact_minor)

    # Per bucket, the exact lines add up to what the statement rounded once.
    exact_by_bucket: dict[tuple[str, str, bool], Decimal] = defaultdict(Decimal)
    for line in found:
        if line.kind != "ADJUSTMENT":
            bucket = (line.component, line.price_list, line.kind == "LATE_TRANSACTION")
            exact_by_bucket[bucket] += line.exact_minor
    buckets = {
        (c, f"partners/{p}/priceLists/{v}", late): b
        for (p, c, v, late), b in buckets_of(expected).items()
    }
    assert exact_by_bucket == {k: b.exact for k, b in buckets.items()}
    rounded = sum(
        half_even(b.value) - half_even(b.percent_fee) - b.fixed_fee for b in buckets.values()
    )
    manual = sum(a.amount_minor for a in adjustments)
    assert statement.net_minor == rounded + manual
    # Rounding once per bucket differs from rounding the exact total by under a unit a bucket.
    total_exact = sum((line.exact_minor for line in found), Decimal(0))
    assert abs(statement.net_minor - total_exact) <= len(buckets)

    # Paging through the lines gives the same lines, each once.
    paged, token = [], ""
    while True:
        page, token = await periods.list_lines(conn, period, statement.partner_id, 7, token)
        paged += page
        if not token:
            break
    assert paged == found


async def snapshot(ctx: AppContext, period: Period) -> tuple[Any, ...]:
    async with ctx.database.connect() as conn:
        closed = await periods.get_period(conn, period)
        statements = await periods.all_statements(conn, period)
        lines = [
            [x async for x in periods.stream_lines(conn, period, s.partner_id, s.currency)]
            for s in statements
        ]
        report = await periods.netting_report(conn, period)
    return closed, statements, lines, report


# -- the tests -------------------------------------------------------------------------------


@pytest.fixture
async def month(ctx: AppContext) -> Month:
    return await generate(ctx)


async def expected_of(ctx: AppContext, month: Month) -> dict[str, list[ExpectedLine]]:
    return expected_lines(await export(ctx), month.closes)


async def test_february_and_march_statements_equal_the_ledger_recomputed(
    ctx: AppContext, month: Month
) -> None:
    await check_period(ctx, month, FEB)
    march, lines = await check_period(ctx, month, MARCH)

    # The month really has every part the rules price (or the proof would prove little).
    assert set(march) == set(CURRENCY), "every partner type has a March statement"
    components = {(x.partner, x.component) for x in lines}
    for needed in (
        (HOTEL, "ISSUED"),
        (HOTEL, "REDEEMED"),
        (HOTEL, "EXPIRED"),
        (RIDE, "MATCHED"),
        (AIRLINE, "CONVERTED"),
        (AIRLINE, "ISSUED"),
        (RETAIL, "REDEEMED"),
        (AGENCY, "REDEEMED"),
        (OCEAN, "DONATED"),
        (FOREST, "DONATED"),
    ):
        assert needed in components, needed
    types = Counter(x.txn.type for x in lines)
    for t in ("EARN", "REDEEM", "CAPTURE", "REVERSAL", "REWARD", "CONVERSION", "DONATION"):
        assert types[t] > 0, t
    assert types["EXPIRY"] > 0
    raw_types = Counter(t.type for t in (await export(ctx)).txns.values())
    assert raw_types["AUTHORIZATION"] > raw_types["CAPTURE"] > 0 and raw_types["VOID"] > 0
    assert len({x.txn.id for x in lines}) >= 200, "a few hundred transactions"
    hotel_versions = {x.price.valid_from for x in lines if x.partner == HOTEL}
    assert hotel_versions == {utc(2026, 1, 1), utc(2026, 3, 15)}, "both March prices used"
    boundary = {x.txn.create_time: x.price.valid_from for x in lines if x.partner == HOTEL}
    assert boundary[utc(2026, 3, 14, 23, 59, 59, 999_999)] == utc(2026, 1, 1)
    assert boundary[utc(2026, 3, 15)] == utc(2026, 3, 15)
    # One clawback gave expired points back to the hotel's issue: two lines, one transaction.
    both = Counter(x.txn.id for x in lines if x.partner == HOTEL and x.txn.type == "REVERSAL")
    assert 2 in both.values()
    # Late in March: the straggler recorded in February, the earn dated in February.
    late = {(x.partner, x.reason) for x in lines if x.late}
    assert late == {(RIDE, periods.LATE_RECORDED), (RIDE, periods.LATE_DATED)}
    # A tie, by design: the late earn's percentage fee is exactly half a cent over 50.
    (dated,) = [x for x in lines if x.late and x.component == "ISSUED"]
    assert (dated.value, dated.percent_fee) == (Decimal(-10_100), Decimal("50.5"))
    # The boundaries: 23:59:59.999999 belongs to its month, midnight to the next.
    feb_times = {x.txn.create_time for x in (await expected_of(ctx, month))[FEB.id]}
    assert utc(2026, 2, 28, 23, 59, 59, 999_999) in feb_times
    assert utc(2026, 3, 1) not in feb_times
    assert utc(2026, 1, 20) in feb_times, "the first close settles January's history"
    march_times = {x.txn.create_time for x in lines}
    assert {utc(2026, 3, 1), utc(2026, 3, 31, 23, 59, 59, 999_999)} <= march_times
    assert utc(2026, 4, 1) not in march_times
    # Charities pay no fee, whatever their price list says.
    assert march[OCEAN]["fee_minor"] == 0 and march[OCEAN]["donation_minor"] > 0
    # The March EUR rate in force is the one set last.
    assert march[AIRLINE]["fx_rate"] == Decimal("0.92")

    # Closing again changes nothing (February's too, though March closed after it).
    before = [await snapshot(ctx, p) for p in (FEB, MARCH)]
    month.clock.set(utc(2026, 4, 9))
    async with ctx.database.begin() as conn:
        again = [await periods.close(conn, ctx, p) for p in (FEB, MARCH)]
    assert [c.close_time for c in again] == [utc(2026, 3, 1, 6), utc(2026, 4, 1, 2)]
    assert [await snapshot(ctx, p) for p in (FEB, MARCH)] == before


async def test_late_transactions_and_adjustments_settle_in_april(
    ctx: AppContext, month: Month
) -> None:
    march_before = await snapshot(ctx, MARCH)
    m = month.members
    month.clock.set(utc(2026, 4, 3, 10))
    # Alone in its bucket (late): 5,000 x 1.3377 cents = 6,688.5 -> 6,688 (half to even).
    dated = await month.earn(HOTEL, m[30], 5_000, occur_time=utc(2026, 3, 28, 19))
    # Stamped in March after March closed (a write that committed late).
    month.clock.set(utc(2026, 3, 31, 23, 59))
    month.settles_in = APRIL
    recorded = await month.earn(RETAIL, m[31], 2_345)
    month.settles_in = None

    month.clock.set(utc(2026, 4, 6, 12))
    async with ctx.database.begin() as conn:
        missed_fee = await periods.create_adjustment(
            conn, ctx, HOTEL, None, 0, -1_500, "USD", "missed fee", "TICKET-7"
        )
        goodwill = await periods.create_adjustment(
            conn, ctx, FOREST, APRIL, 250, 1_234, "EUR", "goodwill", "TICKET-8"
        )
    assert missed_fee.period == APRIL
    with pytest.raises(FailedPrecondition) as refused:
        async with ctx.database.begin() as conn:
            await periods.create_adjustment(
                conn, ctx, HOTEL, MARCH, 0, 100, "USD", "too late", "TICKET-9"
            )
    assert refused.value.reason == "PERIOD_CLOSED"

    await month.activity(utc(2026, 4, 7), utc(2026, 4, 29), 25)
    month.clock.set(utc(2026, 4, 30, 23, 59, 59, 999_999))
    with pytest.raises(FailedPrecondition) as early:
        async with ctx.database.begin() as conn:
            await periods.close(conn, ctx, APRIL)
    assert early.value.reason == "PERIOD_NOT_ENDED"
    await month.close(APRIL, utc(2026, 5, 1, 1))

    april, lines = await check_period(ctx, month, APRIL)
    late = {x.txn.id: (x.partner, x.kind, x.reason) for x in lines if x.late}
    assert late == {
        dated.id: (HOTEL, "LATE_TRANSACTION", periods.LATE_DATED),
        recorded.id: (RETAIL, "LATE_TRANSACTION", periods.LATE_RECORDED),
    }
    # Each is priced as of when it was recorded: the dated one at April's hotel price.
    (tie,) = [x for x in lines if x.txn.id == dated.id]
    assert tie.value == Decimal("-6688.5"), "a tie by design, rounded to 6,688 (even)"
    # Manual adjustments in the margin, converted each: -(-1,500 + 1,234 / 0.8 = 1,542.5 -> 1,542).
    async with ctx.database.connect() as conn:
        assert (await periods.netting_report(conn, APRIL)).margin.adjustments == -42
    prices_of = {x.txn.id: x.price.valid_from for x in lines}
    assert prices_of[dated.id] == utc(2026, 4, 1)
    assert prices_of[recorded.id] == utc(2026, 1, 1)
    assert april[HOTEL]["late_minor"] != 0 and april[RETAIL]["late_minor"] != 0
    assert april[HOTEL]["adjustment_minor"] == april[HOTEL]["late_minor"] - 1_500
    assert april[FOREST]["adjustment_minor"] == april[FOREST]["late_minor"] + 1_234

    async with ctx.database.connect() as conn:
        for partner, adjustment in ((HOTEL, missed_fee), (FOREST, goodwill)):
            s = await periods.get_statement(conn, APRIL, partner)
            found = [x async for x in periods.stream_lines(conn, APRIL, partner, s.currency)]
            (line,) = [x for x in found if x.kind == "ADJUSTMENT"]
            assert line.adjustment_name == adjustment.name
            assert (line.amount_minor, line.points, line.reason, line.partner_reference) == (
                adjustment.amount_minor,
                adjustment.points,
                adjustment.reason,
                adjustment.reference,
            )
            assert line.transaction_name == ""
        # Nothing of it is on March's statements, which did not change.
        march_ids = {
            x.transaction_id
            for s in await periods.all_statements(conn, MARCH)
            async for x in periods.stream_lines(conn, MARCH, s.partner_id, s.currency)
        }
    assert not march_ids & {dated.id, recorded.id, missed_fee.id, goodwill.id}
    assert await snapshot(ctx, MARCH) == march_before


async def test_statement_lines_are_listed_in_create_time_order(ctx: AppContext) -> None:
    """The proto's order, also for an adjustment booked between two transactions (lines are
    inserted transactions first, adjustments last)."""
    clock = ctx.clock
    assert isinstance(clock, FixedClock)
    clock.set(utc(2026, 4, 1))
    async with ctx.database.begin() as conn:
        hotel = await partner_service.create(
            conn, ctx, HOTEL, PartnerType.HOTEL, PartnerSettings("Harbor Hotel", Decimal(10))
        )
        await prices.create_price_list(
            conn, ctx, PriceList("", HOTEL, utc(2026, 1, 1), "", issue_price=Decimal("0.01"))
        )
        member = await members_service.enroll(conn, ctx, ContactDetails("Ada"))
    for when, points in ((utc(2026, 4, 2), 100), (utc(2026, 4, 10), 200)):
        clock.set(when)
        async with ctx.database.begin() as conn:
            await earning.earn(conn, ctx, hotel, member.id, earning.Action("BONUS", points))
        if points == 100:
            clock.set(utc(2026, 4, 5))
            async with ctx.database.begin() as conn:
                await periods.create_adjustment(
                    conn, ctx, HOTEL, None, 0, -500, "USD", "missed fee", "TICKET-1"
                )
    clock.set(utc(2026, 5, 1))
    async with ctx.database.begin() as conn:
        await periods.close(conn, ctx, APRIL)
    async with ctx.database.connect() as conn:
        lines, _ = await periods.list_lines(conn, APRIL, HOTEL, 0, "")
    assert [(x.kind, x.create_time) for x in lines] == [
        ("TRANSACTION", utc(2026, 4, 2)),
        ("ADJUSTMENT", utc(2026, 4, 5)),
        ("TRANSACTION", utc(2026, 4, 10)),
    ]
