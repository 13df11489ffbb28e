"""Donation use cases: charities, donations and receipts, matching campaigns, pledges, totals.

The rules are in gateway.domain.donations. Locks are taken in one order: a matching campaign's
row (its budget), then the member's balance row (the points). Only donations lock a campaign,
and they all take it first, so nothing waits in a cycle; the donation that finds a campaign's
budget spent does not lock it at all, so a spent campaign stops serializing its charity.
Donations of expiring points are never matched: they lock only the balance, as expiry does.
"""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from babel.numbers import get_currency_precision
from sqlalchemy import Date, cast, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.adapters import repository as repo
from gateway.adapters.models import DonationRow, MatchingCampaignRow, PledgeRow, table_of
from gateway.domain import donations as dd
from gateway.domain import ledger as dl
from gateway.domain import paging
from gateway.domain.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from gateway.domain.notices import DONATION_MADE, PLEDGE_SKIPPED
from gateway.domain.partners import Partner, PartnerType
from gateway.domain.tiers import add_months
from gateway.service import ledger, outbox
from gateway.service import members as member_service
from gateway.service import partners as partner_service
from gateway.service.context import AppContext

DONATION_MATCHED = "DonationMatched"
"""To the sponsor of the campaign that matched a donation (DonationMade goes to the charity)."""
DONATIONS = table_of(DonationRow)
CAMPAIGNS = table_of(MatchingCampaignRow)
PLEDGES = table_of(PledgeRow)
PARTNERS = repo.PARTNERS
BALANCES = ledger.BALANCES
ID_BYTES = 12
CHARITIES_SCAN_ROWS = 200
"""Charities read per round trip while filling a ListCharities page (paused ones skipped)."""
CHARITIES_SCAN_ROWS_MAX = 10_000
"""A ListCharities page stops scanning here, however few charities matched the filter."""
PLEDGE_RUN_BATCH = 200

_PERIOD = re.compile(r"([0-9]{4})-(0[1-9]|1[0-2])")

log = logging.getLogger("coalition.donations")


# -- charities -------------------------------------------------------------------------------


def charity_not_found(charity_id: str) -> NotFound:
    return NotFound(
        "CHARITY_NOT_FOUND", f"no charity charities/{charity_id}", {"charity": charity_id}
    )


async def get_charity(conn: AsyncConnection, charity_id: str) -> Partner:
    """One read: a charity acts for no airline, so the agencies' table is not asked."""
    row = (
        await conn.execute(
            select(PARTNERS).where(
                PARTNERS.c.id == charity_id, PARTNERS.c.type == PartnerType.CHARITY.value
            )
        )
    ).first()
    if row is None:
        raise charity_not_found(charity_id)
    return repo.partner_from_row(row)


def _profile(charity: Partner) -> dd.CharityProfile:
    assert charity.settings.charity is not None, "every charity has a profile"
    return charity.settings.charity


def _accepting(charity: Partner) -> dd.CharityProfile:
    profile = _profile(charity)
    if not profile.accepting:
        raise FailedPrecondition(
            "CHARITY_NOT_ACCEPTING",
            f"{charity.settings.display_name} is not taking donations now",
            {"charity": f"charities/{charity.id}"},
        )
    return profile


@dataclass(frozen=True)
class ListedCharity:
    partner: Partner
    matching: dd.MatchingCampaign | None
    """The campaign matching donations now, if any."""


async def list_charities(
    conn: AsyncConnection, ctx: AppContext, cause: str, size: int, token: str
) -> tuple[list[ListedCharity], str]:
    """Charities taking donations, by display name; those not accepting donations and, with
    `cause`, those not supporting it are skipped. A page scans at most CHARITIES_SCAN_ROWS_MAX
    charities: it may then come back short, with a token to go on from where it stopped."""
    limit = paging.page_size(size)
    position = paging.decode_token(token, ("n", "id"))
    after = (str(position["n"]), str(position["id"])) if position else None
    found: list[Partner] = []
    scanned, more = 0, True
    while more and len(found) < limit and scanned < CHARITIES_SCAN_ROWS_MAX:
        query = select(PARTNERS).where(PARTNERS.c.type == PartnerType.CHARITY.value)
        if after is not None:
            query = query.where(
                (PARTNERS.c.display_name > after[0])
                | ((PARTNERS.c.display_name == after[0]) & (PARTNERS.c.id > after[1]))
            )
        rows = (
            await conn.execute(
                query.order_by(PARTNERS.c.display_name, PARTNERS.c.id).limit(CHARITIES_SCAN_ROWS)
            )
        ).all()
        taken = 0
        for row in rows:
            taken += 1
            partner = repo.partner_from_row(row)  # a charity acts for no airline
            after = (partner.settings.display_name, partner.id)
            profile = _profile(partner)
            if profile.accepting and (not cause or cause in profile.causes):
                found.append(partner)
                if len(found) == limit:
                    break
        scanned += taken
        more = len(rows) == CHARITIES_SCAN_ROWS or taken < len(rows)
    next_token = ""
    if more and after is not None:
        next_token = paging.encode_token({"n": after[0], "id": after[1]})
    live = await _live_campaigns(conn, [p.id for p in found], ctx.clock.now())
    return [ListedCharity(p, live.get(p.id)) for p in found], next_token


# -- matching campaigns ----------------------------------------------------------------------


def _campaign(row: Any) -> dd.MatchingCampaign:
    return dd.MatchingCampaign(
        id=row.id,
        sponsor_id=row.sponsor_id,
        charity_id=row.charity_id,
        percent=row.percent,
        budget_points=row.budget_points,
        spent_points=row.spent_points,
        start_time=row.start_time,
        end_time=row.end_time,
        stop_time=row.stop_time,
        create_time=row.create_time,
    )


def _live_at(at: datetime) -> Any:
    return (
        (CAMPAIGNS.c.start_time <= at)
        & (CAMPAIGNS.c.end_time > at)
        & CAMPAIGNS.c.stop_time.is_(None)
    )


async def _live_campaigns(
    conn: AsyncConnection, charity_ids: list[str], at: datetime
) -> dict[str, dd.MatchingCampaign]:
    if not charity_ids:
        return {}
    rows = await conn.execute(
        select(CAMPAIGNS).where(
            CAMPAIGNS.c.charity_id.in_(charity_ids),
            _live_at(at),
            CAMPAIGNS.c.spent_points < CAMPAIGNS.c.budget_points,  # a spent one matches nothing
        )
    )
    return {row.charity_id: _campaign(row) for row in rows}


async def create_matching(
    conn: AsyncConnection, ctx: AppContext, draft: dd.MatchingDraft
) -> dd.MatchingCampaign:
    now = ctx.clock.now()
    draft = dd.validate_matching(draft, now)
    await get_charity(conn, draft.charity_id)
    sponsor = await partner_service.get(conn, draft.sponsor_id)
    if sponsor.type is PartnerType.CHARITY:
        raise InvalidArgument.on_field(
            "matching_campaign.sponsor", "SPONSOR_IS_CHARITY", "charities receive, not sponsor"
        )
    # Campaigns for one charity are created one at a time, so two cannot both miss the other.
    await conn.execute(
        select(PARTNERS.c.id).where(PARTNERS.c.id == draft.charity_id).with_for_update()
    )
    overlapping = (
        await conn.execute(
            select(CAMPAIGNS.c.id, CAMPAIGNS.c.sponsor_id).where(
                CAMPAIGNS.c.charity_id == draft.charity_id,
                CAMPAIGNS.c.stop_time.is_(None),
                CAMPAIGNS.c.start_time < draft.end_time,
                CAMPAIGNS.c.end_time > draft.start_time,
            )
        )
    ).first()
    if overlapping is not None:
        name = f"charities/{draft.charity_id}/matchingCampaigns/{overlapping.id}"
        raise FailedPrecondition(
            "MATCHING_OVERLAP",
            f"{name} (partners/{overlapping.sponsor_id}) matches this charity at that time",
            {"matching_campaign": name},
        )
    campaign = dd.MatchingCampaign(
        id=secrets.token_hex(ID_BYTES),
        sponsor_id=draft.sponsor_id,
        charity_id=draft.charity_id,
        percent=draft.percent,
        budget_points=draft.budget_points,
        spent_points=0,
        start_time=draft.start_time,
        end_time=draft.end_time,
        stop_time=None,
        create_time=now,
    )
    await conn.execute(insert(CAMPAIGNS).values(**vars(campaign)))
    return campaign


async def get_matching(
    conn: AsyncConnection, name: str, sponsor_id: str | None = None
) -> dd.MatchingCampaign:
    """The campaign; with sponsor_id, only if that partner sponsors it."""
    charity_id, campaign_id = dd.parse_matching_name(name)
    query = select(CAMPAIGNS).where(
        CAMPAIGNS.c.id == campaign_id, CAMPAIGNS.c.charity_id == charity_id
    )
    if sponsor_id is not None:
        query = query.where(CAMPAIGNS.c.sponsor_id == sponsor_id)
    row = (await conn.execute(query)).first()
    if row is None:
        raise NotFound(
            "MATCHING_CAMPAIGN_NOT_FOUND", f"no campaign {name}", {"matching_campaign": name}
        )
    return _campaign(row)


async def end_matching(
    conn: AsyncConnection, ctx: AppContext, name: str, sponsor_id: str | None
) -> dd.MatchingCampaign:
    campaign = await get_matching(conn, name, sponsor_id)
    now = ctx.clock.now()
    if campaign.stop_time is not None or campaign.end_time <= now:
        raise FailedPrecondition(
            "CAMPAIGN_ENDED",
            f"the campaign ended at {(campaign.stop_time or campaign.end_time).isoformat()}",
            {"matching_campaign": name},
        )
    end_time = max(now, campaign.start_time)
    stopped = await conn.execute(
        update(CAMPAIGNS)
        .where(CAMPAIGNS.c.id == campaign.id, CAMPAIGNS.c.stop_time.is_(None))
        .values(stop_time=now, end_time=end_time)
    )
    if stopped.rowcount != 1:
        raise FailedPrecondition("CAMPAIGN_ENDED", "the campaign was ended meanwhile")
    return await get_matching(conn, name)


async def list_matching(
    conn: AsyncConnection, charity_id: str, sponsor_id: str | None, size: int, token: str
) -> tuple[list[dd.MatchingCampaign], str]:
    """Newest first; with sponsor_id, only that sponsor's."""
    await get_charity(conn, charity_id)
    limit = paging.page_size(size)
    position = paging.decode_token(token, ("t", "id"))
    query = select(CAMPAIGNS).where(CAMPAIGNS.c.charity_id == charity_id)
    if sponsor_id is not None:
        query = query.where(CAMPAIGNS.c.sponsor_id == sponsor_id)
    if position is not None:
        after = paging.time_of(position, "t")
        query = query.where(
            (CAMPAIGNS.c.create_time < after)
            | ((CAMPAIGNS.c.create_time == after) & (CAMPAIGNS.c.id < str(position["id"])))
        )
    rows = (
        await conn.execute(
            query.order_by(CAMPAIGNS.c.create_time.desc(), CAMPAIGNS.c.id.desc()).limit(limit + 1)
        )
    ).all()
    page = [_campaign(r) for r in rows[:limit]]
    next_token = ""
    if len(rows) > limit:
        next_token = paging.encode_token({"t": page[-1].create_time.isoformat(), "id": page[-1].id})
    return page, next_token


async def _take_match(
    conn: AsyncConnection, charity_id: str, points: int, at: datetime
) -> tuple[dd.MatchingCampaign, int] | None:
    """Lock the live campaign with budget left and spend its match of `points` from it."""
    live = (
        select(CAMPAIGNS)
        .where(
            CAMPAIGNS.c.charity_id == charity_id,
            _live_at(at),
            CAMPAIGNS.c.spent_points < CAMPAIGNS.c.budget_points,
        )
        .limit(1)
    )
    if (await conn.execute(live)).first() is None:
        return None  # nothing to match: no lock taken, nothing serialized
    row = (await conn.execute(live.with_for_update())).first()
    if row is None:
        return None  # spent or ended while we looked
    campaign = _campaign(row)
    points = dd.matched_points(points, campaign, at)
    if points == 0:
        return None
    spent = await conn.execute(
        update(CAMPAIGNS)
        .where(
            CAMPAIGNS.c.id == campaign.id,
            CAMPAIGNS.c.spent_points + points <= CAMPAIGNS.c.budget_points,
        )
        .values(spent_points=CAMPAIGNS.c.spent_points + points)
    )
    assert spent.rowcount == 1, "the campaign row is locked: its budget cannot move"
    return campaign, points


# -- donating --------------------------------------------------------------------------------


def _donation(row: Any) -> dd.Donation:
    return dd.Donation(
        id=row.id,
        seq=row.seq,
        charity_id=row.charity_id,
        member_id=row.member_id,
        kind=dd.DonationKind(row.kind),
        points=row.points,
        matched_points=row.matched_points,
        sponsor_id=row.sponsor_id,
        matching_campaign_id=row.matching_campaign_id,
        value_minor=row.value_minor,
        matched_value_minor=row.matched_value_minor,
        currency=row.currency,
        transaction_id=row.transaction_id,
        create_time=row.create_time,
        pledge_id=row.pledge_id,
    )


def _exponent(currency: str) -> int:
    """Digits after the point in the currency's minor unit (2 for a code babel does not know:
    a charity's currency was only checked to look like ISO 4217)."""
    return int(get_currency_precision(currency))


def _breakdown(
    charity: Partner, points: int, match: tuple[dd.MatchingCampaign, int] | None
) -> tuple[dict[str, object], ...]:
    components: list[dict[str, object]] = [
        {
            "kind": "DONATION",
            "description": f"{points:,} points to {charity.settings.display_name}",
            "points": -points,
            "source": f"charities/{charity.id}",
        }
    ]
    if match is not None:
        campaign, matched = match
        components.append(
            {
                "kind": "MATCH",
                "description": f"{matched:,} points added by partners/{campaign.sponsor_id}",
                "points": 0,  # the sponsor's points, not the member's
                "matched_points": matched,
                "source": campaign.name,
            }
        )
    return tuple(components)


async def donate(
    conn: AsyncConnection,
    ctx: AppContext,
    member_id: str,
    charity_id: str,
    points: int,
    *,
    kind: dd.DonationKind = dd.DonationKind.ONE_OFF,
    pledge: dd.Pledge | None = None,
    run_time: datetime | None = None,
    expiring: list[tuple[int, int]] | None = None,
) -> tuple[dd.Donation, dl.Transaction]:
    """Give `points` of the member's to the charity, matched if a campaign runs, in the
    caller's transaction.

    An EXPIRING_PLEDGE donation names the expiring lots it takes, skips the charity's minimum
    and is not matched; the others spend the member's oldest points and must reach it.
    """
    charity = await get_charity(conn, charity_id)
    profile = _accepting(charity)
    now = ctx.clock.now()
    if kind is not dd.DonationKind.EXPIRING_PLEDGE:
        dd.check_donation(points, profile)
    match = None if expiring is not None else await _take_match(conn, charity_id, points, now)
    txn = await ledger.donate(
        conn,
        ctx,
        charity_id,
        member_id,
        points,
        _breakdown(charity, points, match),
        match=(match[0].sponsor_id, match[1]) if match else None,
        by_member=kind is dd.DonationKind.ONE_OFF,
        expiring=expiring,
    )
    matched = match[1] if match else 0
    values = {
        "id": secrets.token_hex(ID_BYTES),
        "charity_id": charity_id,
        "member_id": member_id,
        "kind": kind.value,
        "points": points,
        "matched_points": matched,
        "sponsor_id": match[0].sponsor_id if match else None,
        "matching_campaign_id": match[0].id if match else None,
        "value_minor": dd.value_minor(points, profile.value_per_thousand_minor),
        "matched_value_minor": dd.value_minor(matched, profile.value_per_thousand_minor),
        "currency": charity.settings.settlement_currency_code,
        "transaction_id": txn.id,
        "pledge_id": pledge.id if pledge else None,
        "pledge_run_time": run_time,
        "create_time": now,
    }
    seq = await conn.scalar(insert(DONATIONS).values(**values).returning(DONATIONS.c.seq))
    assert seq is not None
    donation = _donation(SimpleNamespace(**values, seq=seq))
    await _announce(conn, ctx, donation, charity, txn)
    if match is not None:
        await _tell_sponsor(conn, ctx, donation, match[0])
    return donation, txn


async def _announce(
    conn: AsyncConnection,
    ctx: AppContext,
    donation: dd.Donation,
    charity: Partner,
    txn: dl.Transaction,
) -> None:
    exponent = _exponent(donation.currency)
    await outbox.emit(
        conn,
        ctx,
        DONATION_MADE,
        f"members/{donation.member_id}",
        {
            "donation": donation.name,
            "member": f"members/{donation.member_id}",
            "charity": f"charities/{charity.id}",
            "charity_display_name": charity.settings.display_name,
            "kind": donation.kind.value,
            "points": donation.points,
            "matched_points": donation.matched_points,
            "sponsor": f"partners/{donation.sponsor_id}" if donation.sponsor_id else "",
            "value_minor": donation.value_minor,
            "matched_value_minor": donation.matched_value_minor,
            "currency": donation.currency,
            "currency_exponent": exponent,
            "receipt_number": donation.receipt_number,
            "transaction": txn.name,
            "create_time": donation.create_time.isoformat(),
        },
        member_id=donation.member_id,
        partner_ids=(charity.id,),
    )


async def _tell_sponsor(
    conn: AsyncConnection, ctx: AppContext, donation: dd.Donation, campaign: dd.MatchingCampaign
) -> None:
    """What the sponsor funds, without who gave: donors are the charity's business."""
    await outbox.emit(
        conn,
        ctx,
        DONATION_MATCHED,
        campaign.name,
        {
            "donation": donation.name,
            "charity": f"charities/{donation.charity_id}",
            "matching_campaign": campaign.name,
            "points": donation.points,
            "matched_points": donation.matched_points,
            "matched_value_minor": donation.matched_value_minor,
            "currency": donation.currency,
            "currency_exponent": _exponent(donation.currency),
            "create_time": donation.create_time.isoformat(),
        },
        partner_ids=(campaign.sponsor_id,),
    )


# -- reading donations and receipts ----------------------------------------------------------


async def get_donation(
    conn: AsyncConnection, name: str, charity_id: str | None = None
) -> dd.Donation:
    """The donation; with charity_id (a charity calling), only one made to that charity."""
    named_charity, donation_id = dd.parse_donation_name(name)
    row = (
        await conn.execute(
            select(DONATIONS).where(
                DONATIONS.c.id == donation_id, DONATIONS.c.charity_id == named_charity
            )
        )
    ).first()
    if row is None or (charity_id is not None and row.charity_id != charity_id):
        raise NotFound("DONATION_NOT_FOUND", f"no donation {name}", {"donation": name})
    return _donation(row)


async def receipt(conn: AsyncConnection, ctx: AppContext, donation: dd.Donation) -> dd.Receipt:
    charity = await get_charity(conn, donation.charity_id)
    member = await member_service.get(conn, ctx, f"members/{donation.member_id}")
    sponsor = ""
    if donation.sponsor_id:
        sponsor = (await partner_service.get(conn, donation.sponsor_id)).settings.display_name
    return dd.Receipt(
        receipt_number=donation.receipt_number,
        donation=donation.name,
        charity=f"charities/{charity.id}",
        charity_display_name=charity.settings.display_name,
        donor_name=member.contact.display_name,
        donate_time=donation.create_time,
        points=donation.points,
        matched_points=donation.matched_points,
        value_minor=donation.value_minor,
        matched_value_minor=donation.matched_value_minor,
        currency=donation.currency,
        currency_exponent=_exponent(donation.currency),
        sponsor_display_name=sponsor,
        kind=donation.kind,
    )


async def list_donations(
    conn: AsyncConnection,
    *,
    charity_id: str | None = None,
    member_id: str | None = None,
    size: int,
    token: str,
) -> tuple[list[dd.Donation], str]:
    """One charity's or one member's donations, newest first."""
    assert (charity_id is None) != (member_id is None), "one parent"
    limit = paging.page_size(size)
    position = paging.decode_token(token, ("seq",))
    query = select(DONATIONS)
    if charity_id is not None:
        query = query.where(DONATIONS.c.charity_id == charity_id)
    else:
        query = query.where(DONATIONS.c.member_id == member_id)
    if position is not None:
        if not isinstance(position["seq"], int):
            raise paging.invalid_token()
        query = query.where(DONATIONS.c.seq < position["seq"])
    rows = (await conn.execute(query.order_by(DONATIONS.c.seq.desc()).limit(limit + 1))).all()
    page = [_donation(r) for r in rows[:limit]]
    next_token = paging.encode_token({"seq": page[-1].seq}) if len(rows) > limit else ""
    return page, next_token


# -- pledges ---------------------------------------------------------------------------------


def _pledge(row: Any) -> dd.Pledge:
    return dd.Pledge(
        id=row.id,
        member_id=row.member_id,
        charity_id=row.charity_id,
        kind=dd.PledgeKind(row.kind),
        points=row.points,
        next_run_time=row.next_run_time,
        create_time=row.create_time,
        cancel_time=row.cancel_time,
        partner_id=row.partner_id,
    )


async def create_pledge(
    conn: AsyncConnection,
    ctx: AppContext,
    member_id: str,
    charity_id: str,
    kind: dd.PledgeKind,
    points: int,
    start_time: datetime | None,
    partner_id: str | None,
) -> dd.Pledge:
    charity = await get_charity(conn, charity_id)
    points = dd.check_pledge(kind, points, _accepting(charity))
    now = ctx.clock.now()
    start = max(start_time or now, now)
    if kind is dd.PledgeKind.MONTHLY and start - now > dd.PLEDGE_START_AHEAD_MAX:
        raise InvalidArgument.on_field(
            "pledge.start_time",
            "INVALID_TIME_RANGE",
            f"a pledge starts within {dd.PLEDGE_START_AHEAD_MAX.days} days",
        )
    if kind is dd.PledgeKind.MONTHLY:
        # The member's balance row serializes their pledges, so two cannot both pass the count.
        await conn.execute(
            select(BALANCES.c.member_id).where(BALANCES.c.member_id == member_id).with_for_update()
        )
        live = await conn.scalar(
            select(func.count())
            .select_from(PLEDGES)
            .where(
                PLEDGES.c.member_id == member_id,
                PLEDGES.c.kind == kind.value,
                PLEDGES.c.cancel_time.is_(None),
            )
        )
        if (live or 0) >= dd.MONTHLY_PLEDGES_PER_MEMBER_MAX:
            raise FailedPrecondition(
                "TOO_MANY_PLEDGES",
                f"a member has at most {dd.MONTHLY_PLEDGES_PER_MEMBER_MAX} monthly pledges",
                {"member": f"members/{member_id}"},
            )
    pledge = dd.Pledge(
        id=secrets.token_hex(ID_BYTES),
        member_id=member_id,
        charity_id=charity_id,
        kind=kind,
        points=points,
        next_run_time=start if kind is dd.PledgeKind.MONTHLY else None,
        create_time=now,
        cancel_time=None,
        partner_id=partner_id,
    )
    try:
        async with conn.begin_nested():
            await conn.execute(
                insert(PLEDGES).values(**{**vars(pledge), "kind": kind.value}, start_time=start)
            )
    except IntegrityError:  # the partial unique index: one live EXPIRING pledge per member
        raise FailedPrecondition(
            "PLEDGE_EXISTS",
            "the member's expiring points are pledged already; cancel that pledge first",
            {"member": f"members/{member_id}"},
        ) from None
    return pledge


async def get_pledge(conn: AsyncConnection, name: str) -> dd.Pledge:
    member_id, pledge_id = dd.parse_pledge_name(name)
    row = (
        await conn.execute(
            select(PLEDGES).where(PLEDGES.c.id == pledge_id, PLEDGES.c.member_id == member_id)
        )
    ).first()
    if row is None:
        raise NotFound("PLEDGE_NOT_FOUND", f"no pledge {name}", {"pledge": name})
    return _pledge(row)


async def cancel_pledge(
    conn: AsyncConnection, ctx: AppContext, name: str, partner_id: str | None
) -> dd.Pledge:
    """Cancel a pledge: the operator's or, for a partner, one it took."""
    pledge = await get_pledge(conn, name)
    if partner_id is not None and pledge.partner_id != partner_id:
        raise PermissionDenied(
            "PARTNER_NOT_AUTHORIZED",
            "a partner cancels only the pledges it took",
            {"pledge": name},
        )
    now = ctx.clock.now()
    cancelled = await conn.execute(
        update(PLEDGES)
        .where(PLEDGES.c.id == pledge.id, PLEDGES.c.cancel_time.is_(None))
        .values(cancel_time=now, next_run_time=None)
    )
    if cancelled.rowcount != 1:
        raise FailedPrecondition("PLEDGE_CANCELLED", f"{name} was cancelled", {"pledge": name})
    return replace(pledge, cancel_time=now, next_run_time=None)


async def list_pledges(
    conn: AsyncConnection, member_id: str, show_cancelled: bool, size: int, token: str
) -> tuple[list[dd.Pledge], str]:
    """Newest first."""
    limit = paging.page_size(size)
    position = paging.decode_token(token, ("t", "id"))
    query = select(PLEDGES).where(PLEDGES.c.member_id == member_id)
    if not show_cancelled:
        query = query.where(PLEDGES.c.cancel_time.is_(None))
    if position is not None:
        after = paging.time_of(position, "t")
        query = query.where(
            (PLEDGES.c.create_time < after)
            | ((PLEDGES.c.create_time == after) & (PLEDGES.c.id < str(position["id"])))
        )
    rows = (
        await conn.execute(
            query.order_by(PLEDGES.c.create_time.desc(), PLEDGES.c.id.desc()).limit(limit + 1)
        )
    ).all()
    page = [_pledge(r) for r in rows[:limit]]
    next_token = ""
    if len(rows) > limit:
        next_token = paging.encode_token({"t": page[-1].create_time.isoformat(), "id": page[-1].id})
    return page, next_token


async def expiring_pledge(conn: AsyncConnection, member_id: str) -> dd.Pledge | None:
    """The member's live EXPIRING pledge to a charity that takes donations now, if any."""
    rows = await conn.execute(
        select(PLEDGES).where(
            PLEDGES.c.member_id == member_id,
            PLEDGES.c.kind == dd.PledgeKind.EXPIRING.value,
            PLEDGES.c.cancel_time.is_(None),
        )
    )
    row = rows.first()
    if row is None:
        return None
    charity = await get_charity(conn, row.charity_id)
    return _pledge(row) if _profile(charity).accepting else None


@dataclass
class PledgeRunReport:
    donations: int = 0
    points: int = 0
    skipped: int = 0
    failed: int = 0


async def _run_pledge(
    conn: AsyncConnection, ctx: AppContext, pledge: dd.Pledge, start: datetime
) -> tuple[dd.Donation | None, str]:
    """Pay one monthly pledge's due month, or skip it; (the donation, why it was skipped)."""
    now = ctx.clock.now()
    due = pledge.next_run_time
    assert due is not None
    claimed = await conn.execute(
        update(PLEDGES)
        .where(
            PLEDGES.c.id == pledge.id,
            PLEDGES.c.next_run_time == due,
            PLEDGES.c.cancel_time.is_(None),
        )
        .values(next_run_time=dd.next_run(due, start, now))
    )
    if claimed.rowcount != 1:
        return None, ""  # cancelled, or run by another worker
    try:
        async with conn.begin_nested():
            donation, _ = await donate(
                conn,
                ctx,
                pledge.member_id,
                pledge.charity_id,
                pledge.points,
                kind=dd.DonationKind.MONTHLY_PLEDGE,
                pledge=pledge,
                run_time=due,
            )
        return donation, ""
    except (FailedPrecondition, InvalidArgument) as refused:
        # Not enough points, the charity paused, or its minimum raised above the pledge.
        await outbox.emit(
            conn,
            ctx,
            PLEDGE_SKIPPED,
            f"members/{pledge.member_id}",
            {
                "member": f"members/{pledge.member_id}",
                "pledge": pledge.name,
                "charity": f"charities/{pledge.charity_id}",
                "charity_display_name": (
                    await get_charity(conn, pledge.charity_id)
                ).settings.display_name,
                "points": pledge.points,
                "reason": refused.reason,
                "due_time": due.isoformat(),
            },
            member_id=pledge.member_id,
        )
        return None, refused.reason


async def run_pledges(ctx: AppContext) -> PledgeRunReport:
    """Pay every monthly pledge due now, each in a transaction of its own; safe to run
    concurrently (a pledge's month is claimed by a conditional UPDATE, and a donation row is
    unique per pledge and due date)."""
    report, after = PledgeRunReport(), ""
    while True:
        async with ctx.database.connect() as conn:
            rows = (
                await conn.execute(
                    select(PLEDGES)
                    .where(
                        PLEDGES.c.cancel_time.is_(None),
                        PLEDGES.c.next_run_time <= ctx.clock.now(),
                        PLEDGES.c.id > after,
                    )
                    .order_by(PLEDGES.c.id)
                    .limit(PLEDGE_RUN_BATCH)
                )
            ).all()
        for row in rows:
            try:
                async with ctx.database.begin() as conn:
                    donation, skipped = await _run_pledge(conn, ctx, _pledge(row), row.start_time)
            except Exception:  # one pledge that cannot be paid must not stop the others
                log.exception("monthly pledge %s failed; it is tried again next run", row.id)
                report.failed += 1
                continue
            if donation is not None:
                report.donations += 1
                report.points += donation.points
            report.skipped += bool(skipped)
        if len(rows) < PLEDGE_RUN_BATCH:
            return report
        after = rows[-1].id


# -- totals ----------------------------------------------------------------------------------


def month_bounds(period: str) -> tuple[datetime, datetime]:
    """[start, end) of the UTC calendar month "YYYY-MM"."""
    found = _PERIOD.fullmatch(period)
    if found is None or found.group(1) == "9999":  # its month would end in the year 10000
        raise InvalidArgument.on_field(
            "period", "INVALID_PERIOD", 'a month written "YYYY-MM", such as "2026-11"'
        )
    start = datetime(int(found.group(1)), int(found.group(2)), 1, tzinfo=UTC)
    return start, add_months(start, 1)


def _day(conn: AsyncConnection) -> Any:
    if conn.dialect.name == "sqlite":  # stored as naive UTC text: its date is the UTC day
        return func.date(DONATIONS.c.create_time)
    return cast(func.timezone("UTC", DONATIONS.c.create_time), Date)


async def report(conn: AsyncConnection, ctx: AppContext, period: str) -> dd.DonationsReport:
    """What each charity received in the month and what the coalition owes it, aggregated in
    the database (a month of donations never comes into memory row by row)."""
    start, end = month_bounds(period)
    within = (DONATIONS.c.create_time >= start) & (DONATIONS.c.create_time < end)
    per_charity = (
        await conn.execute(
            select(
                DONATIONS.c.charity_id,
                DONATIONS.c.currency,
                func.count().label("donations"),
                func.count(DONATIONS.c.member_id.distinct()).label("donors"),
                func.sum(DONATIONS.c.points).label("points"),
                func.sum(DONATIONS.c.matched_points).label("matched_points"),
                func.sum(DONATIONS.c.value_minor).label("value"),
                func.sum(DONATIONS.c.matched_value_minor).label("matched_value"),
            )
            .where(within)
            .group_by(DONATIONS.c.charity_id, DONATIONS.c.currency)
            .order_by(DONATIONS.c.charity_id, DONATIONS.c.currency)
        )
    ).all()
    per_sponsor = (
        await conn.execute(
            select(
                DONATIONS.c.sponsor_id,
                DONATIONS.c.charity_id,
                DONATIONS.c.currency,
                func.sum(DONATIONS.c.matched_points).label("matched_points"),
                func.sum(DONATIONS.c.matched_value_minor).label("matched_value"),
            )
            .where(within, DONATIONS.c.sponsor_id.is_not(None))
            .group_by(DONATIONS.c.sponsor_id, DONATIONS.c.charity_id, DONATIONS.c.currency)
            .order_by(DONATIONS.c.sponsor_id, DONATIONS.c.charity_id)
        )
    ).all()
    day = _day(conn).label("day")
    per_day = (
        await conn.execute(
            select(
                DONATIONS.c.charity_id,
                day,
                func.sum(DONATIONS.c.points).label("points"),
                func.sum(DONATIONS.c.matched_points).label("matched_points"),
            )
            .where(within)
            .group_by(DONATIONS.c.charity_id, day)
            .order_by(DONATIONS.c.charity_id, day)
        )
    ).all()
    names = await _display_names(
        conn, {r.charity_id for r in per_charity} | {r.sponsor_id for r in per_sponsor}
    )
    return dd.DonationsReport(
        period=period,
        start_time=start,
        end_time=end,
        charities=tuple(
            dd.CharityTotal(
                charity_id=r.charity_id,
                charity_display_name=names.get(r.charity_id, r.charity_id),
                currency=r.currency,
                currency_exponent=_exponent(r.currency),
                donations=int(r.donations),
                donors=int(r.donors),
                points=int(r.points),
                matched_points=int(r.matched_points),
                value_minor=int(r.value),
                matched_value_minor=int(r.matched_value),
            )
            for r in per_charity
        ),
        sponsors=tuple(
            dd.SponsorTotal(
                sponsor_id=r.sponsor_id,
                sponsor_display_name=names.get(r.sponsor_id, r.sponsor_id),
                charity_id=r.charity_id,
                currency=r.currency,
                matched_points=int(r.matched_points),
                matched_value_minor=int(r.matched_value),
                currency_exponent=_exponent(r.currency),
            )
            for r in per_sponsor
        ),
        daily=tuple(
            dd.DailyTotal(
                charity_id=r.charity_id,
                day=_as_day(r.day),
                points=int(r.points),
                matched_points=int(r.matched_points),
            )
            for r in per_day
        ),
        generate_time=ctx.clock.now(),
    )


def _as_day(value: object) -> datetime:
    """The UTC midnight of a day the database returned (a date, or "YYYY-MM-DD" on SQLite)."""
    text = value.isoformat() if hasattr(value, "isoformat") else str(value)
    return datetime.fromisoformat(text[:10]).replace(tzinfo=UTC)


async def _display_names(conn: AsyncConnection, ids: set[str]) -> dict[str, str]:
    if not ids:
        return {}
    rows = await conn.execute(
        select(PARTNERS.c.id, PARTNERS.c.display_name).where(PARTNERS.c.id.in_(sorted(ids)))
    )
    return {pid: name for pid, name in rows}
