"""`coalition ledger verify`: recompute what can be recomputed and check every invariant."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import func, select

from gateway.adapters import repository as repo
from gateway.adapters.migrate import SchemaState, schema_state
from gateway.domain import donations as dd
from gateway.domain import ledger as dl
from gateway.domain.members import luhn_check_digit
from gateway.service import donations
from gateway.service.campaigns import AWARDS, CAMPAIGNS
from gateway.service.context import AppContext
from gateway.service.ledger import BALANCES, POSTINGS, TXNS
from gateway.service.lots import DRAWS
from gateway.service.tiers import QUALIFYING

VERIFY_BATCH_ROWS = 1_000
VERIFY_PROBLEMS_MAX = 100
"""Stop listing after this many; one is enough to fail, a hundred are enough to diagnose."""


@dataclass
class Report:
    checked: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def problem(self, text: str) -> None:
        if len(self.problems) < VERIFY_PROBLEMS_MAX:
            self.problems.append(text)


async def verify(ctx: AppContext) -> Report:
    report = Report()
    state, revision = await schema_state(ctx.database)
    if state is not SchemaState.CURRENT:
        report.problem(f"schema is {state.value} (revision {revision}); run `coalition db upgrade`")
        return report
    await _members(ctx, report)
    await _ledger(ctx, report)
    await _lots(ctx, report)
    await _campaigns(ctx, report)
    await _tiers(ctx, report)
    await _donations(ctx, report)
    return report


async def _members(ctx: AppContext, report: Report) -> None:
    m = repo.MEMBERS
    last, count = "", 0
    while True:
        async with ctx.database.connect() as conn:
            rows = (
                await conn.execute(
                    select(m.c.id, m.c.loyalty_number, m.c.phone_hash, m.c.phone_ciphertext)
                    .where(m.c.id > last)
                    .order_by(m.c.id)
                    .limit(VERIFY_BATCH_ROWS)
                )
            ).all()
        for row in rows:
            number = row.loyalty_number
            if (
                len(number) != 12
                or not number.isdigit()
                or luhn_check_digit(number[:-1]) != number[-1]
            ):
                report.problem(f"members/{row.id}: loyalty number {number} fails its check digit")
            if (row.phone_hash is None) != (row.phone_ciphertext is None):
                report.problem(f"members/{row.id}: phone hash and encrypted phone disagree")
            elif row.phone_ciphertext is not None:
                try:
                    phone = ctx.vault.decrypt(row.phone_ciphertext)
                except Exception:  # cryptography raises InvalidTag for a wrong key or bad bytes
                    report.problem(f"members/{row.id}: phone does not decrypt (wrong secret key?)")
                    continue
                if ctx.vault.phone_hash(phone) != row.phone_hash:
                    report.problem(f"members/{row.id}: phone lookup hash is stale")
        count += len(rows)
        if len(rows) < VERIFY_BATCH_ROWS:
            break
        last = rows[-1].id
    report.checked["members"] = count


async def _ledger(ctx: AppContext, report: Report) -> None:
    """Double entry holds, and every materialized balance equals what the postings say."""
    async with ctx.database.connect() as conn:
        unbalanced = (
            await conn.execute(
                select(POSTINGS.c.transaction_seq, POSTINGS.c.asset, func.sum(POSTINGS.c.amount))
                .group_by(POSTINGS.c.transaction_seq, POSTINGS.c.asset)
                .having(func.sum(POSTINGS.c.amount) != 0)
                .limit(VERIFY_PROBLEMS_MAX)
            )
        ).all()
        for seq, asset, total in unbalanced:
            report.problem(f"transaction #{seq}: {asset} postings sum to {total}, not 0")

        # What the postings say each member account holds.
        from_postings: dict[str, int] = defaultdict(int)
        rows = await conn.stream(
            select(POSTINGS.c.account, func.sum(POSTINGS.c.amount))
            .where(POSTINGS.c.account.like("member:%"), POSTINGS.c.asset == dl.POINTS)
            .group_by(POSTINGS.c.account)
        )
        async for account, total in rows:
            from_postings[account] = int(total)

        # What the open transactions say is pending and held.
        open_points: dict[tuple[str, str], int] = defaultdict(int)
        open_rows = await conn.stream(
            select(TXNS.c.member_id, TXNS.c.type, func.sum(TXNS.c.open_points))
            .where(TXNS.c.state == dl.TxnState.PENDING.value)
            .group_by(TXNS.c.member_id, TXNS.c.type)
        )
        async for member_id, kind, total in open_rows:
            open_points[(member_id, kind)] = int(total)

        overreversed = await conn.scalar(
            select(func.count())
            .select_from(TXNS)
            .where((TXNS.c.reversed_points > func.abs(TXNS.c.points)) | (TXNS.c.open_points < 0))
        )
        if overreversed:
            report.problem(f"{overreversed} transactions reversed or open beyond their points")

        balances = await conn.stream(
            select(BALANCES.c.member_id, BALANCES.c.available, BALANCES.c.pending, BALANCES.c.held)
        )
        count = 0
        async for member_id, available, pending, held in balances:
            count += 1
            expected = dl.Balance(
                from_postings.get(dl.available(member_id), 0),
                from_postings.get(dl.pending(member_id), 0),
                from_postings.get(dl.held(member_id), 0),
            )
            if (available, pending, held) != (expected.available, expected.pending, expected.held):
                report.problem(
                    f"members/{member_id}: balance {available}/{pending}/{held} "
                    f"(available/pending/held) but postings say "
                    f"{expected.available}/{expected.pending}/{expected.held}"
                )
            if pending != open_points.get((member_id, dl.TxnType.EARN.value), 0):
                report.problem(f"members/{member_id}: pending points disagree with pending earns")
            if held != open_points.get((member_id, dl.TxnType.AUTHORIZATION.value), 0):
                report.problem(f"members/{member_id}: held points disagree with open holds")
        report.checked["balances"] = count
        report.checked["transactions"] = int(
            await conn.scalar(select(func.count()).select_from(TXNS)) or 0
        )


async def _lots(ctx: AppContext, report: Report) -> None:
    """Lots hold exactly the positive part of each available balance, and no lot is overdrawn
    or owes more back than its debits took."""
    async with ctx.database.connect() as conn:
        bad_lots = await conn.scalar(
            select(func.count())
            .select_from(TXNS)
            .where(
                (TXNS.c.unspent_points < 0)
                | (TXNS.c.expired_points < 0)
                | (TXNS.c.donated_points < 0)
                | ((TXNS.c.unspent_points > 0) & (TXNS.c.unspent_points > TXNS.c.points))
            )
        )
        if bad_lots:
            report.problem(f"{bad_lots} lots with unspent points outside 0..their points")
        negative_draws = (
            await conn.execute(
                select(DRAWS.c.debit_seq, DRAWS.c.lot_seq)
                .group_by(DRAWS.c.debit_seq, DRAWS.c.lot_seq)
                .having(func.sum(DRAWS.c.points) < 0)
                .limit(VERIFY_PROBLEMS_MAX)
            )
        ).all()
        for debit, lot in negative_draws:
            report.problem(f"transaction #{debit} gave lot #{lot} back more than it drew")
        unspent = (
            select(TXNS.c.member_id, func.sum(TXNS.c.unspent_points).label("unspent"))
            .where(TXNS.c.unspent_points != 0)
            .group_by(TXNS.c.member_id)
            .subquery()
        )
        rows = await conn.stream(
            select(BALANCES.c.member_id, BALANCES.c.available, unspent.c.unspent).outerjoin(
                unspent, unspent.c.member_id == BALANCES.c.member_id
            )
        )
        count = 0
        async for member_id, available, in_lots in rows:
            count += 1
            if int(in_lots or 0) != max(available, 0):
                report.problem(
                    f"members/{member_id}: lots hold {int(in_lots or 0)} points but "
                    f"{max(available, 0)} are available"
                )
        report.checked["members' lots"] = count

        # Breakage: each partner's expired account holds exactly what its lots say expired.
        breakage: dict[str, int] = defaultdict(int)
        postings = await conn.stream(
            select(POSTINGS.c.account, func.sum(POSTINGS.c.amount))
            .where(POSTINGS.c.account.like("partner:%:expired"), POSTINGS.c.asset == dl.POINTS)
            .group_by(POSTINGS.c.account)
        )
        async for account, total in postings:
            breakage[account.split(":")[1]] = int(total)
        expired_lots = await conn.stream(
            select(TXNS.c.partner_id, func.sum(TXNS.c.expired_points))
            .where(TXNS.c.expired_points != 0)
            .group_by(TXNS.c.partner_id)
        )
        async for partner_id, total in expired_lots:
            if breakage.pop(partner_id, 0) != int(total):
                report.problem(f"partners/{partner_id}: breakage postings disagree with its lots")
        for partner_id, total in breakage.items():
            if total:
                report.problem(f"partners/{partner_id}: {total} breakage points without lots")


async def _campaigns(ctx: AppContext, report: Report) -> None:
    """Budgets: the guarded counter equals the awards, and no budget is exceeded."""
    async with ctx.database.connect() as conn:
        paid = dict(
            (
                await conn.execute(
                    select(AWARDS.c.campaign_id, func.sum(AWARDS.c.points)).group_by(
                        AWARDS.c.campaign_id
                    )
                )
            ).all()
        )
        rows = (
            await conn.execute(
                select(
                    CAMPAIGNS.c.id,
                    CAMPAIGNS.c.partner_id,
                    CAMPAIGNS.c.total_budget_points,
                    CAMPAIGNS.c.budget_spent_points,
                    CAMPAIGNS.c.member_budget_points,
                )
            )
        ).all()
        for row in rows:
            name = f"partners/{row.partner_id}/campaigns/{row.id}"
            total = int(paid.get(row.id, 0))
            if row.total_budget_points and total != row.budget_spent_points:
                report.problem(f"{name}: budget counter {row.budget_spent_points}, awards {total}")
            if row.total_budget_points and total > row.total_budget_points:
                report.problem(f"{name}: paid {total} over a budget of {row.total_budget_points}")
        over_member = (
            await conn.execute(
                select(AWARDS.c.campaign_id, AWARDS.c.member_id)
                .join(CAMPAIGNS, CAMPAIGNS.c.id == AWARDS.c.campaign_id)
                .where(CAMPAIGNS.c.member_budget_points > 0)
                .group_by(
                    AWARDS.c.campaign_id, AWARDS.c.member_id, CAMPAIGNS.c.member_budget_points
                )
                .having(func.sum(AWARDS.c.points) > CAMPAIGNS.c.member_budget_points)
                .limit(VERIFY_PROBLEMS_MAX)
            )
        ).all()
        for campaign_id, member_id in over_member:
            report.problem(f"campaign {campaign_id}: members/{member_id} paid over its budget")
    report.checked["campaigns"] = len(rows)


async def _tiers(ctx: AppContext, report: Report) -> None:
    """Tiers are on the ladder, only raised tiers have a review, and no earn is netted below 0."""
    m = repo.MEMBERS
    codes = [t.code for t in ctx.ladder.tiers]
    async with ctx.database.connect() as conn:
        off_ladder = (
            await conn.execute(
                select(m.c.id, m.c.tier).where(m.c.tier.not_in(codes)).limit(VERIFY_PROBLEMS_MAX)
            )
        ).all()
        for member_id, tier in off_ladder:
            report.problem(f"members/{member_id}: tier {tier} is not on the ladder")
        base = ctx.ladder.base.code
        review_mismatch = await conn.scalar(
            select(func.count())
            .select_from(m)
            .where((m.c.tier == base) != m.c.tier_review_time.is_(None))
        )
        if review_mismatch:
            report.problem(
                f"{review_mismatch} members: a review time must be set exactly above {base}"
            )
        negative = await conn.scalar(
            select(func.count()).select_from(
                select(QUALIFYING.c.member_id, QUALIFYING.c.earn_time)
                .group_by(QUALIFYING.c.member_id, QUALIFYING.c.earn_time)
                .having(func.sum(QUALIFYING.c.points) < 0)
                .subquery()
            )
        )
        if negative:
            report.problem(f"{negative} earns have more qualifying points reversed than earned")


async def _donations(ctx: AppContext, report: Report) -> None:
    """What each charity's account received is what its donations say, and every matching
    campaign's guarded counter is the matches paid, within its budget."""
    d, mc = donations.DONATIONS, donations.CAMPAIGNS
    async with ctx.database.connect() as conn:
        received: dict[str, int] = defaultdict(int)
        postings = await conn.stream(
            select(POSTINGS.c.account, func.sum(POSTINGS.c.amount))
            .where(POSTINGS.c.account.like("charity:%:donated"), POSTINGS.c.asset == dl.POINTS)
            .group_by(POSTINGS.c.account)
        )
        async for account, total in postings:
            received[account.split(":")[1]] = int(total)
        given = await conn.stream(
            select(d.c.charity_id, func.sum(d.c.points + d.c.matched_points)).group_by(
                d.c.charity_id
            )
        )
        async for charity_id, total in given:
            if received.pop(charity_id, 0) != int(total):
                report.problem(f"charities/{charity_id}: donated postings disagree with donations")
        for charity_id, total in received.items():
            if total:
                report.problem(f"charities/{charity_id}: {total} points without a donation")
        matched = dict(
            (
                await conn.execute(
                    select(d.c.matching_campaign_id, func.sum(d.c.matched_points))
                    .where(d.c.matching_campaign_id.is_not(None))
                    .group_by(d.c.matching_campaign_id)
                )
            ).all()
        )
        campaigns = (
            await conn.execute(
                select(mc.c.id, mc.c.charity_id, mc.c.budget_points, mc.c.spent_points)
            )
        ).all()
        for row in campaigns:
            name = f"charities/{row.charity_id}/matchingCampaigns/{row.id}"
            paid = int(matched.get(row.id, 0))
            if paid != row.spent_points:
                report.problem(f"{name}: budget counter {row.spent_points}, matches {paid}")
            if paid > row.budget_points:
                report.problem(f"{name}: matched {paid} over a budget of {row.budget_points}")
        # Clawbacks of earns whose points a pledge gave away as they expired are absorbed by
        # the coalition: what it absorbed is what the lots no longer say was given.
        on_expiry = await conn.scalar(
            select(func.coalesce(func.sum(d.c.points), 0)).where(
                d.c.kind == dd.DonationKind.EXPIRING_PLEDGE.value
            )
        )
        still_given = await conn.scalar(select(func.coalesce(func.sum(TXNS.c.donated_points), 0)))
        absorbed = await conn.scalar(
            select(func.coalesce(func.sum(POSTINGS.c.amount), 0)).where(
                POSTINGS.c.account == dl.ADJUSTMENTS, POSTINGS.c.asset == dl.POINTS
            )
        )
        if int(on_expiry or 0) - int(still_given or 0) != -int(absorbed or 0):
            report.problem(
                f"{dl.ADJUSTMENTS}: {-int(absorbed or 0)} points absorbed, but the lots say "
                f"{int(on_expiry or 0) - int(still_given or 0)} given on expiry were clawed back"
            )
    report.checked["matching campaigns"] = len(campaigns)
