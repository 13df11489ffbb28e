"""The demo network: a believable coalition, seeded idempotently.

Partners and members are created once (members are recognised by phone number). API keys cannot
be shown twice, so every run revokes the previous demo keys and issues fresh ones: exactly one
demo key per partner (and one operator key) is active after each run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select, update

from gateway.adapters import repository as repo
from gateway.domain import programs
from gateway.domain.donations import CharityProfile, MatchingDraft
from gateway.domain.errors import FailedPrecondition
from gateway.domain.links import LinkKind
from gateway.domain.members import ContactDetails
from gateway.domain.partners import PartnerSettings, PartnerType
from gateway.domain.rewards import RewardDraft, RewardKind
from gateway.domain.rules import Campaign
from gateway.service import campaigns, donations, earning, ledger, links, rates, rewards
from gateway.service import members as members_service
from gateway.service import partners as partner_service
from gateway.service.context import AppContext
from settlement.domain.periods import Period
from settlement.domain.pricing import PriceList
from settlement.service import prices as price_service
from wallet.config import Wallet
from wallet.service import cards

DEMO_KEY_LABEL = "demo"


@dataclass(frozen=True)
class DemoPartner:
    id: str
    type: PartnerType
    display_name: str
    earn_rate: str
    currency: str = "USD"
    airlines: tuple[str, ...] = ()
    time_zone: str = "UTC"
    category_rates: tuple[tuple[str, Decimal], ...] = ()
    cap: int = 0
    program: programs.Program | None = None
    charity: CharityProfile | None = None


AURORA_PROGRAM = programs.Program(
    unit="MILES",
    number_format=programs.parse_format("10 digits luhn"),
    conversion_rate=Decimal("0.5"),
    conversion_minimum_points=1000,
)


def aurora_number(index: int) -> str:
    """Demo members' Aurora Airways numbers: valid Luhn, 10 digits."""
    return programs.with_check_digit(programs.CheckDigit.LUHN, f"40{index:07d}")


PARTNERS = (
    DemoPartner(
        "grand-harbor-hotels",
        PartnerType.HOTEL,
        "Grand Harbor Hotels",
        "10",
        time_zone="America/New_York",
        category_rates=(("spa", Decimal(15)), ("dining", Decimal(5))),
        cap=50_000,
    ),
    DemoPartner(
        "swiftride", PartnerType.RIDE_SHARE, "SwiftRide", "2", time_zone="America/Los_Angeles"
    ),
    DemoPartner(
        "aurora-airways", PartnerType.AIRLINE, "Aurora Airways", "5", program=AURORA_PROGRAM
    ),
    DemoPartner(
        "wanderlust-travel",
        PartnerType.TRAVEL_AGENCY,
        "Wanderlust Travel",
        "0",
        airlines=("aurora-airways",),
    ),
    DemoPartner(
        "maple-market", PartnerType.RETAIL, "Maple Market", "1", "CAD", time_zone="America/Toronto"
    ),
    DemoPartner(
        "clean-oceans",
        PartnerType.CHARITY,
        "Clean Oceans Fund",
        "0",
        charity=CharityProfile(
            "Removes plastic from coastlines and funds research on marine pollution.",
            ("ENVIRONMENT", "OCEANS"),
            minimum_donation_points=500,
            value_per_thousand_minor=10_00,  # USD 10.00 per 1,000 points
        ),
    ),
    DemoPartner(
        "open-books",
        PartnerType.CHARITY,
        "Open Books Literacy Trust",
        "0",
        "GBP",
        time_zone="Europe/London",
        charity=CharityProfile(
            "Puts books in the hands of children who have none, and teaches adults to read.",
            ("EDUCATION", "LITERACY"),
            minimum_donation_points=250,
            value_per_thousand_minor=8_00,  # GBP 8.00 per 1,000 points
        ),
    ),
)

MEMBERS = (
    ("Ava Thompson", "+12025550101", "en"),
    ("Liam Martinez", "+12025550102", "en"),
    ("Sofia Rossi", "+393491234567", "it"),
    ("Noah Williams", "+12025550104", "en"),
    ("Chloé Dubois", "+33612345678", "fr"),
    ("Mateo García", "+34612345678", "es"),
    ("Emma Schmidt", "+4915123456789", "de"),
    ("Oliver Brown", "+447911123456", "en-GB"),
    ("Yuki Tanaka", "+819012345678", "ja"),
    ("Amara Okafor", "+2348031234567", "en"),
    ("Lucas Silva", "+5511912345678", "pt-BR"),
    ("Isabella Chen", "+14155550123", "en"),
    ("Ethan Walker", "+13125550147", "en"),
    ("Mia Johansson", "+46701234567", "sv"),
    ("Arjun Patel", "+919812345678", "en-IN"),
    ("Zoe Nguyen", "+61412345678", "en-AU"),
    ("Hannah Müller", "+491701234567", "de"),
    ("Gabriel Moreau", "+33698765432", "fr"),
    ("Olivia Davis", "+16175550188", "en"),
    ("Samuel Cohen", "+972502345678", "he"),
    ("Leila Haddad", "+212612345678", "fr"),
    ("Jack O'Connor", "+353851234567", "en-IE"),
)


async def _revoke_demo_keys(ctx: AppContext, conn: Any) -> None:
    keys = repo.API_KEYS
    await conn.execute(
        update(keys)
        .where(keys.c.display_name == DEMO_KEY_LABEL, keys.c.revoke_time.is_(None))
        .values(revoke_time=ctx.clock.now())
    )


async def seed(ctx: AppContext, grpc_target: str) -> dict[str, Any]:
    """Create what is missing and return the network in API.md's --json form."""
    out: dict[str, Any] = {"grpc_target": grpc_target, "partners": [], "members": []}
    async with ctx.database.begin() as conn:
        await _revoke_demo_keys(ctx, conn)
        _, out["operator_api_key"] = await partner_service.create_api_key(
            conn, ctx, None, DEMO_KEY_LABEL
        )
        for p in PARTNERS:
            if await repo.get_partner(conn, p.id) is None:
                settings = PartnerSettings(
                    display_name=p.display_name,
                    base_earn_rate=Decimal(p.earn_rate),
                    earn_currency_code=p.currency,
                    settlement_currency_code=p.currency,
                    authorized_airlines=p.airlines,
                    time_zone=p.time_zone,
                    category_rates=p.category_rates,
                    transaction_cap_points=p.cap,
                    program=p.program,
                    charity=p.charity,
                )
                await partner_service.create(conn, ctx, p.id, p.type, settings)
            _, secret = await partner_service.create_api_key(conn, ctx, p.id, DEMO_KEY_LABEL)
            out["partners"].append(
                {
                    "name": f"partners/{p.id}",
                    "display_name": p.display_name,
                    "type": p.type.value,
                    "api_key": secret,
                }
            )
        await _seed_programme(ctx, conn)
        for display_name, phone, locale in MEMBERS:
            found = await conn.scalar(
                select(repo.MEMBERS.c.id).where(
                    repo.MEMBERS.c.phone_hash == ctx.vault.phone_hash(phone)
                )
            )
            if found is None:
                member = await members_service.enroll(
                    conn, ctx, ContactDetails(display_name, _email(display_name), phone, locale)
                )
            else:
                member = await members_service.get(conn, ctx, f"members/{found}")
            await _seed_activity(ctx, conn, member.id, len(out["members"]))
            out["members"].append(
                {
                    "name": member.name,
                    "loyalty_number": member.loyalty_number,
                    "phone_number": member.contact.phone_number,
                    "display_name": member.contact.display_name,
                }
            )
    return out


DEMO_CAMPAIGN_DAYS = 365
DEMO_RATES = (("EUR", "USD", "1.08"), ("GBP", "USD", "1.27"), ("USD", "CAD", "1.38"))


DEMO_PRICES_VALID_FROM = datetime(2026, 1, 1, tzinfo=UTC)


def _prices(
    partner_id: str,
    issue: str = "0",
    redeem: str = "0",
    convert: str = "0",
    charity: str = "0",
    fee_minor: int = 0,
    fee_percent: str = "0",
) -> PriceList:
    """Major units of the partner's settlement currency per point (per mile for conversions)."""
    return PriceList(
        "",
        partner_id,
        DEMO_PRICES_VALID_FROM,
        "",
        Decimal(issue),
        Decimal(redeem),
        Decimal(convert),
        Decimal(charity),
        fee_minor,
        Decimal(fee_percent),
    )


DEMO_PRICES = (
    _prices(
        "grand-harbor-hotels",
        issue="0.0125",
        redeem="0.0095",
        fee_minor=2,
        fee_percent="0.5",
    ),
    _prices("swiftride", issue="0.012", redeem="0.0092", fee_percent="0.5"),
    _prices("aurora-airways", issue="0.011", redeem="0.009", convert="0.014"),
    _prices("wanderlust-travel"),
    _prices("maple-market", issue="0.016", redeem="0.0125"),
    _prices("clean-oceans", charity="0.01"),
    _prices("open-books", charity="0.008"),
)
DEMO_FX_RATES = (("CAD", "1.38"), ("GBP", "0.79"))
"""Units per US dollar (the default base currency), set for the current settlement period."""


async def _seed_settlement(ctx: AppContext, conn: Any) -> None:
    """A price list per partner and this month's FX rates, so a month can be closed."""
    for draft in DEMO_PRICES:
        found, _ = await price_service.list_price_lists(conn, draft.partner_id, 1, "")
        if not found:
            await price_service.create_price_list(conn, ctx, draft)
    if ctx.base_currency != "USD":
        return  # the demo's rates are per dollar
    period = Period.of(ctx.clock.now())
    for currency, rate in DEMO_FX_RATES:
        await price_service.set_fx_rate(conn, ctx, period, currency, rate)


async def _seed_programme(ctx: AppContext, conn: Any) -> None:
    """Exchange rates, two hotel campaigns and two rewards, created once (rates: once a day)."""
    now = ctx.clock.now()
    for base, quote, rate in DEMO_RATES:
        try:
            await rates.conversion(conn, base, quote, now)
        except FailedPrecondition:
            await rates.set_rate(conn, ctx, base, quote, Decimal(rate))
    await _seed_settlement(ctx, conn)
    hotel = await partner_service.get(conn, "grand-harbor-hotels")
    existing, _ = await campaigns.list_page(conn, hotel.id, 1, "")
    if existing:
        return
    end = now + timedelta(days=DEMO_CAMPAIGN_DAYS)
    for draft in (
        Campaign(
            "", "", "Double points weekends", now, end, frozenset({6, 7}), multiplier=Decimal(2)
        ),
        Campaign(
            "",
            "",
            "Review your stay",
            now,
            end,
            bonus_points=250,
            action="REVIEW",
            member_budget_points=1_000,
            total_budget_points=100_000,
        ),
    ):
        await campaigns.create(conn, ctx, hotel, draft)
    for partner_id, reward in DEMO_REWARDS:
        await rewards.create(conn, ctx, partner_id, reward)
    # SwiftRide matches gifts to the ocean one for one, up to 100,000 points.
    await donations.create_matching(
        conn, ctx, MatchingDraft("swiftride", "clean-oceans", 100, 100_000, now, end)
    )


DEMO_REWARDS = [
    (
        "grand-harbor-hotels",
        RewardDraft(
            "Free night",
            "One night in a standard room at any Grand Harbor hotel, subject to availability.",
            RewardKind.FREE_NIGHT,
            10_000,
            50,
            None,
            None,
            timedelta(days=365),
        ),
    ),
    (
        "swiftride",
        RewardDraft(
            "$10 ride credit",
            "Ten dollars off one SwiftRide trip.",
            RewardKind.RIDE_CREDIT,
            1_200,
            0,
            None,
            None,
            timedelta(days=90),
        ),
    ),
]
"""Seeded with the campaigns, once."""

DEMO_ACTIVE_MEMBERS = 12
"""Members who get a short history: stays, rides, a purchase, a redemption, a pending stay."""


async def _seed_activity(ctx: AppContext, conn: Any, member_id: str, index: int) -> None:
    if index >= DEMO_ACTIVE_MEMBERS:
        return
    already = await conn.scalar(
        select(ledger.TXNS.c.seq).where(ledger.TXNS.c.member_id == member_id).limit(1)
    )
    if already is not None:
        return  # seeded before: the demo is idempotent
    hotel = await partner_service.get(conn, "grand-harbor-hotels")
    rides = await partner_service.get(conn, "swiftride")
    market = await partner_service.get(conn, "maple-market")
    stay = 180_00 + index * 35_00  # USD minor units
    await earning.earn(
        conn, ctx, hotel, member_id, earning.Purchase(stay, "USD", "room"), f"FOLIO-{1000 + index}"
    )
    if index < 2:  # two frequent guests: Gold and Silver
        for night in range(12 if index == 0 else 4):
            await earning.earn(
                conn,
                ctx,
                hotel,
                member_id,
                earning.Purchase(129_00, "USD", "room"),
                f"FOLIO-{5000 + 100 * index + night}",
            )
    for ride in range(index % 4 + 1):
        await earning.earn(
            conn,
            ctx,
            rides,
            member_id,
            earning.Purchase(12_50 + ride * 7_25, "USD", "ride"),
            f"RIDE-{index}-{ride}",
        )
    await earning.earn(
        conn, ctx, market, member_id, earning.Purchase(64_99, "CAD", "groceries"), f"RCPT-{index}"
    )
    if index % 3 == 0:
        await ledger.redeem(conn, ctx, market.id, member_id, 500, f"REDEEM-{index}")
    if index < 2:  # Aurora flyers: a linked number, a booking through the agency
        airline = await partner_service.get(conn, "aurora-airways")
        agency = await partner_service.get(conn, "wanderlust-travel")
        number = aurora_number(index)
        await links.link(conn, ctx, member_id, airline.id, LinkKind.PROGRAM, number)
        await earning.earn(
            conn,
            ctx,
            airline,
            member_id,
            earning.Purchase(389_00, "USD"),
            f"PNR-AUR{index}",
            channel=agency,
        )
        # A booking for the next flyer's number, who has not linked it: parked until they do.
        key = links.external_key(ctx, airline.id, LinkKind.PROGRAM, aurora_number(index + 10))
        await links.lock_external(conn, key)
        await earning.park(
            conn,
            ctx,
            agency,
            airline,
            aurora_number(index + 10),
            earning.Purchase(215_00, "USD"),
            f"PNR-AUR{index + 10}",
        )
    if index % 5 == 2:  # a gift to the ocean (matched by SwiftRide) or to the books
        charity = "clean-oceans" if index % 2 == 0 else "open-books"
        await donations.donate(conn, ctx, member_id, charity, 500)
    if index % 4 == 1:
        await earning.earn(
            conn,
            ctx,
            hotel,
            member_id,
            earning.Purchase(420_00, "USD", "room"),
            f"FOLIO-{2000 + index}",
            vest_time=ctx.clock.now() + timedelta(days=14),
        )


def _email(display_name: str) -> str:
    local = "".join(ch for ch in display_name.lower().replace(" ", ".") if ch.isascii())
    return f"{local.strip('.')}@example.com"


def example_call(network: dict[str, Any]) -> str:
    hotel = network["partners"][0]
    member = network["members"][0]
    return (
        f"grpcurl -plaintext -H 'authorization: Bearer {hotel['api_key']}' \\\n"
        f'  -d \'{{"loyalty_number": "{member["loyalty_number"]}"}}\' \\\n'
        f"  {network['grpc_target']} coalition.v1.MemberService/LookupMember"
    )


async def issue_card(ctx: AppContext, wallet: Wallet, network: dict[str, Any]) -> str:
    """Issue the first demo member's wallet card; its page URL."""
    async with ctx.database.begin() as conn:
        member = await members_service.get(conn, ctx, network["members"][0]["name"])
        card = await cards.issue(conn, ctx, wallet, member)
    return cards.page_url(ctx, wallet, card)
