"""Earning: the partner's rules, the member's tier and live campaigns decide; the ledger posts.

One earn, one database transaction, in this order (the lock order every writer follows):

    lock the member's balance row          serializes with every other change of this member
    apply a tier review that fell due      so the tier bonus uses the tier the member has now
    quote, locking budgeted campaigns      budgets cannot be overspent by concurrent earns
    post the points, record the awards, count qualifying points, upgrade if a threshold is crossed

QuoteEarn runs the same evaluation without locks and writes nothing.

Travel agencies earn on behalf of an airline: the airline's rules decide and it issues the
points; the agency is the channel. An airline number no member has linked yet parks the earn
(gateway.service.links) with the airline's base points: tier and campaign bonuses need a member.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from babel.numbers import get_currency_precision, is_currency
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.domain import ledger as dl
from gateway.domain import rules as dr
from gateway.domain.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from gateway.domain.links import ParkedEarn
from gateway.domain.partners import Partner, PartnerType, parse_partner_name
from gateway.domain.tiers import Tier, TierStatus
from gateway.service import campaigns, ledger, links, partners, rates, tiers
from gateway.service.context import AppContext


@dataclass(frozen=True)
class Purchase:
    amount_minor: int
    currency_code: str
    category: str = ""


@dataclass(frozen=True)
class Action:
    code: str
    points: int
    """The partner's own points for the action; 0 when only a campaign rewards it."""


def currency_exponent(code: str, field: str = "purchase.currency_code") -> int:
    # get_currency_precision answers 2 for codes it does not know, so ask first.
    if not is_currency(code):
        raise InvalidArgument.on_field(field, "INVALID_CURRENCY_CODE", "an ISO 4217 code like USD")
    return int(get_currency_precision(code))


def earn_rules(partner: Partner) -> dr.EarnRules:
    s = partner.settings
    return dr.EarnRules(
        partner=partner.name,
        currency=s.earn_currency_code,
        currency_exponent=currency_exponent(s.earn_currency_code),
        base_rate=s.base_earn_rate,
        category_rates=dict(s.category_rates),
        rounding=s.earn_rounding,
        minimum_spend_minor=s.minimum_spend_minor,
        transaction_cap_points=s.transaction_cap_points,
    )


def check_basis(basis: Purchase | Action) -> Purchase | Action:
    """Input rules that need no database: fail before any work."""
    if isinstance(basis, Action):
        dr.parse_action(basis.code)
        dl.check_points(basis.points, "points", allow_zero=True)
        return basis
    dl.check_purchase(basis.amount_minor)
    currency_exponent(basis.currency_code)
    return Purchase(
        basis.amount_minor, basis.currency_code, dr.parse_purchase_category(basis.category)
    )


def _checked(
    ctx: AppContext,
    basis: Purchase | Action,
    reference: str,
    vest_time: datetime | None,
    occur_time: datetime | None,
) -> tuple[datetime, Purchase | Action]:
    """The input rules of an earn (or a parked one): when it happened, and the checked basis."""
    now = ctx.clock.now()
    dl.check_reference(reference)
    dl.check_vest_time(now, vest_time)
    return dl.check_occur_time(now, occur_time), check_basis(basis)


async def quote(
    conn: AsyncConnection,
    ctx: AppContext,
    partner: Partner,
    member_id: str | None,
    tier: Tier,
    basis: Purchase | Action,
    at: datetime,
    lock: bool = False,
) -> tuple[dr.Quote, list[dr.Offer]]:
    """The evaluation shared by quote_only, earn and park; `basis` has passed check_basis.

    Without a member (a parked earn), no campaign applies.
    """
    if isinstance(basis, Action):
        offered = (
            await campaigns.offers(
                conn, partner, member_id, at, "", basis.code, lock, ctx.clock.now()
            )
            if member_id
            else []
        )
        result = dr.quote_action(
            partner.name, basis.code, basis.points, offered, partner.settings.earn_rounding
        )
        if not basis.points and not offered:
            raise FailedPrecondition(
                "ACTION_NOT_REWARDED",
                f"no live campaign of {partner.name} rewards {basis.code}; "
                "give the points the action earns",
                {"action": basis.code},
            )
        return result, offered
    rules = earn_rules(partner)
    spend = dr.Spend(
        basis.amount_minor,
        basis.currency_code,
        currency_exponent(basis.currency_code),
        basis.category,
    )
    conversion = None
    if spend.currency != rules.currency:
        conversion = await rates.conversion(conn, spend.currency, rules.currency, at)
    offered = (
        await campaigns.offers(
            conn, partner, member_id, at, spend.category, "", lock, ctx.clock.now()
        )
        if member_id
        else []
    )
    result = dr.quote_purchase(rules, spend, conversion, tier, offered)
    if result.points > dl.POINTS_PER_TRANSACTION_MAX:
        # A sane rate times the largest purchase can still exceed what one movement may
        # hold (and, repeated, a balance's int64): refuse rather than credit it.
        raise InvalidArgument.on_field(
            "purchase.amount_minor",
            "EARN_TOO_LARGE",
            f"this purchase would earn {result.points:,} points, more than one transaction "
            f"may credit ({dl.POINTS_PER_TRANSACTION_MAX:,}): split it",
        )
    return result, offered


async def quote_only(
    conn: AsyncConnection,
    ctx: AppContext,
    partner: Partner,
    member_id: str,
    basis: Purchase | Action,
    occur_time: datetime | None,
) -> tuple[dr.Quote, Tier]:
    """What an earn would give now (or at occur_time); writes nothing."""
    at = dl.check_occur_time(ctx.clock.now(), occur_time, future_ok=True)
    basis = check_basis(basis)
    tier = (await tiers.status(conn, ctx, member_id)).tier  # with a due review applied
    result, _ = await quote(conn, ctx, partner, member_id, tier, basis, at)
    return result, tier


async def earn(
    conn: AsyncConnection,
    ctx: AppContext,
    partner: Partner,
    member_id: str,
    basis: Purchase | Action,
    reference: str = "",
    vest_time: datetime | None = None,
    occur_time: datetime | None = None,
    channel: Partner | None = None,
) -> tuple[dl.Transaction, TierStatus]:
    """The posted earn and where the member stands after it (tier, progress).

    channel: the travel agency submitting for `partner`, an airline (see airline_for).
    """
    at, basis = _checked(ctx, basis, reference, vest_time, occur_time)
    held = await tiers.lock_standing(conn, ctx, member_id)
    held = await tiers.review_member(conn, ctx, member_id, held)
    result, offered = await quote(conn, ctx, partner, member_id, held.tier, basis, at, lock=True)
    txn = await ledger.earn(
        conn,
        ctx,
        partner.id,
        member_id,
        result.points,
        result.breakdown(),
        reference,
        vest_time,
        occur_time,
        channel_partner_id=channel.id if channel else None,
    )
    await campaigns.record_awards(conn, ctx, offered, member_id, txn.id, result.awards)
    standing = await tiers.record_earn(conn, ctx, txn, result.qualifying_points, held)
    return txn, standing


# -- travel agencies -------------------------------------------------------------------------


async def airline_for(conn: AsyncConnection, agency: Partner, on_behalf_of: str) -> Partner:
    """The airline a travel agency earns for; only the airlines it is authorized for."""
    if agency.type is not PartnerType.TRAVEL_AGENCY:
        raise PermissionDenied(
            "ON_BEHALF_OF_AGENCIES_ONLY",
            "only travel agencies earn on behalf of an airline; leave on_behalf_of empty",
            {"field": "on_behalf_of"},
        )
    airline_id = parse_partner_name(on_behalf_of, "on_behalf_of")
    if airline_id not in agency.settings.authorized_airlines:
        raise PermissionDenied(
            "AIRLINE_NOT_AUTHORIZED",
            f"{agency.name} is not authorized to submit bookings for {on_behalf_of}",
            {"airline": on_behalf_of, "field": "on_behalf_of"},
        )
    return await partners.get(conn, airline_id)


async def park(
    conn: AsyncConnection,
    ctx: AppContext,
    agency: Partner,
    airline: Partner,
    number: str,
    basis: Purchase | Action,
    reference: str = "",
    vest_time: datetime | None = None,
    occur_time: datetime | None = None,
) -> ParkedEarn:
    """Keep an agency earn for an airline number nobody has linked: base points, no member.

    The caller holds the number's lock (links.lock_external), so a link cannot slip between
    the lookup that found no member and this.
    """
    at, basis = _checked(ctx, basis, reference, vest_time, occur_time)
    result, _ = await quote(conn, ctx, airline, None, ctx.ladder.base, basis, at)
    return await links.park(
        conn,
        ctx,
        airline_id=airline.id,
        agency_id=agency.id,
        number=number,
        points=result.points,
        qualifying_points=result.qualifying_points,
        breakdown=result.breakdown(),
        reference=reference,
        vest_time=dl.check_vest_time(ctx.clock.now(), vest_time),
        occur_time=at,  # the booking's time, also when credited much later
    )
