"""Properties of the pure domain, for arbitrary input (hypothesis): no rule or ledger operation
ever loses or creates a point, and settlement never loses a cent.

Each test states its property in its docstring. The domain modules are gateway/domain (rules,
ledger, expiry, donations, tiers) and settlement/domain (pricing, netting); the last test runs
random sequences of ledger operations through the real service functions and database, and
checks the same invariants where they are stored.

Examples per test: a modest number by default, many more under COALITION_STRESS=full; no
deadline (a slow CI machine is not a failure); derandomized under CI=true so that a red build
replays exactly. A failure prints the example and a @reproduce_failure blob.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    rule,
)
from sqlalchemy import func, select, text
from stress import count

from gateway.adapters.models import Base
from gateway.domain import donations as dd
from gateway.domain import expiry as de
from gateway.domain import ledger as dl
from gateway.domain import rules as dr
from gateway.domain import tiers as dt
from gateway.domain.errors import CoalitionError, FailedPrecondition, InvalidArgument
from gateway.domain.members import ContactDetails
from gateway.domain.partners import PartnerSettings, PartnerType
from gateway.service import earning, ledger
from gateway.service import expiry as expiry_service
from gateway.service import members as members_service
from gateway.service import partners as partner_service
from gateway.service.context import AppContext
from gateway.service.verify import verify
from settlement.domain import netting as dn
from settlement.domain import pricing as dp

CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
settings.register_profile(
    "coalition",
    max_examples=count(100, 2_000),
    deadline=None,
    derandomize=CI,
    database=None,  # no .hypothesis/ in the checkout; a failure prints its blob instead
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
PROFILE = settings.get_profile("coalition")
"""Applied test by test (not loaded globally): other suites keep their own settings."""
STATEFUL = settings(PROFILE, max_examples=count(60, 1_000), stateful_step_count=40)
SERVICE = settings(
    PROFILE,
    max_examples=count(15, 200),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
times = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2090, 12, 31), timezones=st.just(UTC)
)


def half_even(value: Fraction) -> int:
    """Exact rounding to an integer, half to even (what round_minor promises)."""
    floor = math.floor(value)
    rest = value - floor
    if rest > Fraction(1, 2) or (rest == Fraction(1, 2) and floor % 2):
        return floor + 1
    return floor


# -- earn rules and campaigns ----------------------------------------------------------------

CURRENCIES = {"USD": 2, "JPY": 0, "KWD": 3, "EUR": 2}
rates = st.decimals(min_value=0, max_value=10_000, places=4, allow_nan=False)
multipliers = st.decimals(min_value=1, max_value=10, places=2, allow_nan=False)


@st.composite
def earn_rules(draw: st.DrawFn, rounding: dr.Rounding | None = None) -> dr.EarnRules:
    currency = draw(st.sampled_from(sorted(CURRENCIES)))
    return dr.EarnRules(
        partner="partners/grand-hotel",
        currency=currency,
        currency_exponent=CURRENCIES[currency],
        base_rate=draw(rates),
        category_rates=draw(st.dictionaries(st.sampled_from(["spa", "bar"]), rates, max_size=2)),
        rounding=rounding or draw(st.sampled_from(list(dr.Rounding))),
        minimum_spend_minor=draw(st.one_of(st.just(0), st.integers(1, 10**6))),
        transaction_cap_points=draw(st.one_of(st.just(0), st.integers(1, 10**7))),
    )


@st.composite
def spends(draw: st.DrawFn, rules: dr.EarnRules) -> tuple[dr.Spend, dr.Conversion | None]:
    currency = draw(st.sampled_from([rules.currency, rules.currency, "CHF"]))  # CHF: foreign
    conversion = None
    exponent = rules.currency_exponent
    if currency != rules.currency:
        exponent = 2
        rate = draw(st.decimals(min_value="0.0001", max_value=1_000, places=4, allow_nan=False))
        conversion = dr.Conversion(rate, T0)
    spend = dr.Spend(
        amount_minor=draw(st.integers(1, 10**9)),
        currency=currency,
        currency_exponent=exponent,
        category=draw(st.sampled_from(["", "spa", "golf"])),
    )
    return spend, conversion


@st.composite
def offers(draw: st.DrawFn, action: str = "") -> list[dr.Offer]:
    found = []
    for i in range(draw(st.integers(0, 4))):
        multiplier = draw(
            st.one_of(
                st.none(),
                st.decimals(min_value="1.0001", max_value=10, places=4, allow_nan=False),
            )
        )
        campaign = dr.Campaign(
            id=f"c{i}",
            partner_id="grand-hotel",
            display_name=f"Campaign {i}",
            start_time=T0 - timedelta(days=draw(st.integers(0, 30))),
            end_time=T0 + timedelta(days=30),
            multiplier=multiplier,
            bonus_points=draw(st.integers(0 if multiplier else 1, 10_000)),
            action=action,
        )
        left = st.one_of(st.none(), st.integers(-5, 10**6))
        found.append(dr.Offer(campaign, draw(left), draw(left)))
    return found


def tier(multiplier: Decimal) -> dt.Tier:
    return dt.Tier("GOLD", "Gold", 0, multiplier)


@st.composite
def purchases(draw: st.DrawFn, rounding: dr.Rounding | None = None) -> dict[str, Any]:
    rules = draw(earn_rules(rounding))
    spend, conversion = draw(spends(rules))
    return {
        "rules": rules,
        "spend": spend,
        "conversion": conversion,
        "tier": tier(draw(multipliers)),
        "offers": draw(offers()),
    }


def quote(case: dict[str, Any], **changes: Any) -> dr.Quote:
    merged = {**case, **changes}
    return dr.quote_purchase(
        merged["rules"], merged["spend"], merged["conversion"], merged["tier"], merged["offers"]
    )


def major_units(case: dict[str, Any]) -> Fraction:
    spend = case["spend"]
    major = Fraction(spend.amount_minor, 10**spend.currency_exponent)
    if case["conversion"] is not None:
        major *= Fraction(case["conversion"].rate)
    return major


@PROFILE
@given(purchases())
def test_a_quote_is_its_breakdown_and_creates_no_point(case: dict[str, Any]) -> None:
    """The points of a quote are exactly the sum of its components; every component is a
    whole number of points, none negative but the CAP (which only takes away); base and tier
    bonus never exceed the cap together; campaign awards are what the CAMPAIGN components pay,
    each within what is left of its budgets; qualifying points are at most the base."""
    result = quote(case)
    assert result.points == sum(c.points for c in result.components)
    assert result.points >= 0
    for c in result.components:
        assert (c.points <= 0) if c.kind == "CAP" else (c.points >= 0), c
    base = result.components[0]
    assert base.kind in ("BASE", "CATEGORY")
    assert 0 <= result.qualifying_points <= base.points
    before_campaigns = sum(c.points for c in result.components if c.kind != "CAMPAIGN")
    cap = case["rules"].transaction_cap_points
    if cap:
        assert before_campaigns <= cap
        assert result.qualifying_points <= cap
    paid = [c for c in result.components if c.kind == "CAMPAIGN"]
    assert sum(a.points for a in result.awards) == sum(c.points for c in paid)
    by_id = {o.campaign.id: o for o in case["offers"]}
    for award in result.awards:
        offer = by_id[award.campaign_id]
        assert award.points > 0
        for left in (offer.member_left, offer.total_left):
            assert left is None or award.points <= left


@PROFILE
@given(purchases(rounding=dr.Rounding.DOWN))
def test_rounding_down_never_promises_a_fraction(case: dict[str, Any]) -> None:
    """Under DOWN (the default) the base is the exact value of the purchase at the rate, cut
    to a whole point: exact - 1 < base <= exact (checked with exact fractions). A purchase
    under the minimum spend earns nothing at all."""
    result = quote(case)
    rules, spend = case["rules"], case["spend"]
    major = major_units(case)
    if major < Fraction(rules.minimum_spend_minor, 10**rules.currency_exponent):
        assert result.points == 0
        return
    rate = rules.category_rates.get(spend.category, rules.base_rate)
    exact = major * Fraction(rate)
    base = result.components[0].points
    assert exact - 1 < base <= exact


@PROFILE
@given(purchases(), st.integers(1, 10**9))
def test_spending_more_never_earns_less(case: dict[str, Any], more: int) -> None:
    """Points are monotone in the amount: the same purchase for more money (same rules, tier,
    campaigns and budgets) earns at least as many points, and as many qualifying points."""
    spend = case["spend"]
    bigger = dr.Spend(
        spend.amount_minor + more, spend.currency, spend.currency_exponent, spend.category
    )
    small, large = quote(case), quote(case, spend=bigger)
    assert small.points <= large.points
    assert small.qualifying_points <= large.qualifying_points


@PROFILE
@given(purchases())
def test_rounding_policies_are_ordered(case: dict[str, Any]) -> None:
    """For the same purchase, DOWN <= NEAREST <= UP, component by component in total."""
    totals = []
    for policy in (dr.Rounding.DOWN, dr.Rounding.NEAREST, dr.Rounding.UP):
        totals.append(quote(case, rules=replace(case["rules"], rounding=policy)).points)
    assert totals == sorted(totals)


@PROFILE
@given(
    st.lists(st.integers(1, 10**6), min_size=1, max_size=30),
    st.integers(1, 10**6),
    st.one_of(st.none(), st.integers(1, 10**5)),
    st.decimals(min_value="1.01", max_value=10, places=2, allow_nan=False),
    st.integers(0, 1_000),
)
def test_a_campaign_never_pays_past_its_budgets(
    amounts: list[int], total: int, per_member: int | None, multiplier: Decimal, bonus: int
) -> None:
    """Over any run of purchases (one member), a campaign pays at most its total budget in all
    and at most its member budget to the member: each quote is offered only what is left."""
    campaign = dr.Campaign(
        "double",
        "grand-hotel",
        "Double",
        T0,
        T0 + timedelta(days=1),
        multiplier=multiplier,
        bonus_points=bonus,
    )
    rules = dr.EarnRules("partners/grand-hotel", "USD", 2, Decimal(10))
    total_left, member_left = total, per_member
    paid = 0
    for amount in amounts:
        offer = dr.Offer(campaign, member_left, total_left)
        result = dr.quote_purchase(
            rules, dr.Spend(amount, "USD", 2), None, tier(Decimal(1)), [offer]
        )
        award = sum(a.points for a in result.awards)
        paid += award
        total_left -= award
        if member_left is not None:
            member_left -= award
        assert total_left >= 0 and (member_left is None or member_left >= 0)
    assert paid <= total
    assert per_member is None or paid <= per_member


@PROFILE
@given(st.integers(0, dl.POINTS_PER_TRANSACTION_MAX), offers(action="REVIEW"))
def test_an_action_earns_its_own_points_plus_its_bonuses(own: int, found: list[dr.Offer]) -> None:
    """An action's quote is its own points plus the campaign awards, breakdown included; it
    has no qualifying points (actions never count for tiers)."""
    result = dr.quote_action("partners/grand-hotel", "REVIEW", own, found)
    assert result.points == own + sum(a.points for a in result.awards)
    assert result.points == sum(c.points for c in result.components)
    assert result.qualifying_points == 0


# -- ledger math -----------------------------------------------------------------------------

accounts = st.sampled_from(
    [
        dl.available("m1"),
        dl.held("m1"),
        dl.pending("m1"),
        dl.issued("hotel"),
        dl.redeemed("taxi"),
        dl.expired("hotel"),
        dl.donated("cause"),
        dl.ADJUSTMENTS,
    ]
)


@PROFILE
@given(
    st.lists(
        st.tuples(accounts, accounts, st.integers(1, 10**18), st.sampled_from(["PTS", "MILES"])),
        max_size=20,
    ),
    st.integers(-(10**9), 10**9).filter(bool),
)
def test_moves_balance_per_asset_and_a_stray_posting_is_caught(
    moves: list[tuple[str, str, int, str]], stray: int
) -> None:
    """Any set of moves (points leave one account and arrive in another) sums to zero per
    asset; one stray posting makes exactly its asset unbalanced."""
    postings: list[dl.Posting] = []
    for source, target, points, asset in moves:
        out, into = dl.move(source, target, points)
        postings += [
            dl.Posting(out.account, out.amount, asset),
            dl.Posting(into.account, into.amount, asset),
        ]
    assert dl.unbalanced_assets(postings) == []
    assert dl.unbalanced_assets([*postings, dl.Posting(dl.ADJUSTMENTS, stray, "MILES")]) == [
        "MILES"
    ]


@PROFILE
@given(st.integers(-(2**63), 2**63 - 1), st.booleans())
def test_points_outside_one_movement_are_refused(points: int, allow_zero: bool) -> None:
    """check_points accepts exactly 1 (or 0 when allowed) to POINTS_PER_TRANSACTION_MAX, and
    refuses everything else with INVALID_POINTS (never another exception)."""
    low = 0 if allow_zero else 1
    if low <= points <= dl.POINTS_PER_TRANSACTION_MAX:
        assert dl.check_points(points, allow_zero=allow_zero) == points
    else:
        with pytest.raises(InvalidArgument) as refused:
            dl.check_points(points, allow_zero=allow_zero)
        assert refused.value.reason == "INVALID_POINTS"


@PROFILE
@given(times, st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)))
def test_a_hold_lasts_what_was_asked_or_is_refused(now: datetime, seconds: int | None) -> None:
    """A hold expires exactly `seconds` after now (15 minutes when unset) when 0 < seconds <=
    HOLD_DURATION_S_MAX, and is refused with INVALID_HOLD_DURATION otherwise."""
    duration = dl.HOLD_DURATION_S_DEFAULT if seconds is None else seconds
    if 0 < duration <= dl.HOLD_DURATION_S_MAX:
        assert dl.hold_expiry(now, seconds) - now == timedelta(seconds=duration)
    else:
        with pytest.raises(InvalidArgument) as refused:
            dl.hold_expiry(now, seconds)
        assert refused.value.reason == "INVALID_HOLD_DURATION"


@PROFILE
@given(times, times)
def test_occur_and_vest_times_are_bounded(now: datetime, when: datetime) -> None:
    """An occur time is accepted only within 13 months behind and 5 minutes ahead; a vest time
    in the past means "now" (None), and one more than 13 months ahead is refused."""
    try:
        assert dl.check_occur_time(now, when) == when
        assert when - now <= timedelta(seconds=dl.OCCUR_TIME_SKEW_S_MAX)
        assert now - when <= timedelta(seconds=dl.OCCUR_TIME_AGE_S_MAX)
    except InvalidArgument as refused:
        assert refused.reason == "INVALID_OCCUR_TIME"
    try:
        vest = dl.check_vest_time(now, when)
        assert vest is None if when <= now else vest == when
    except InvalidArgument as refused:
        assert refused.reason == "INVALID_VEST_TIME"
        assert when - now > timedelta(seconds=dl.VEST_DELAY_S_MAX)


# -- a member's ledger, operation by operation -----------------------------------------------


@dataclass
class ModelTxn:
    kind: dl.TxnType
    partner: str
    points: int
    """Signed as the history shows it (an earn +, a redemption -)."""
    state: dl.TxnState = dl.TxnState.POSTED
    open_points: int = 0
    reversed_points: int = 0
    expired_points: int = 0
    draws: list[list[int]] = field(default_factory=list)
    """[lot seq, points still drawn] of a debit, in the order drawn."""


class MemberLedger(RuleBasedStateMachine):
    """One member earning at two partners and spending at a third, through every operation of
    the ledger: earn (at once or vesting later), vest, cancel a pending earn, redeem,
    authorize, capture (all or part), void, let a hold expire, refund a redemption or a
    capture, claw back an earn, expire a lot. Each step posts what gateway.service.ledger posts
    for it, built from the domain's own rules (move, lot_change, spend_fifo, refund_lifo,
    reversible_points, insufficient).

    Invariants after every step:
      every transaction's postings sum to zero per asset, and so do all postings;
      available, pending and held equal the sums of the postings on the member's accounts;
      pending and held are never negative; available is negative only after a clawback, and
        then a spend is refused with NEGATIVE_BALANCE (otherwise INSUFFICIENT_POINTS);
      the unspent points of the lots equal max(available, 0), and no lot is negative
        (gateway.domain.expiry's invariant);
      no transaction is reversed beyond its points.
    """

    member = "m1"
    issuers = ("hotel", "taxi")
    acceptor = "shop"

    def __init__(self) -> None:
        super().__init__()
        self.postings: list[dl.Posting] = []
        self.available = self.pending = self.held = 0
        self.lots: dict[int, int] = {}
        self.txns: dict[int, ModelTxn] = {}
        self.seq = 0
        self.clawed = False

    # -- helpers ---------------------------------------------------------------------------

    def post(self, *postings: dl.Posting) -> None:
        assert dl.unbalanced_assets(postings) == [], postings
        self.postings += postings

    def record(self, txn: ModelTxn) -> int:
        self.seq += 1
        self.txns[self.seq] = txn
        return self.seq

    def credit_lot(self, seq: int, before: int) -> None:
        unspent = de.lot_change(before, self.available)
        if unspent:
            self.lots[seq] = unspent

    def spend_lots(self, debit: ModelTxn, points: int) -> None:
        ordered = [de.Lot(seq, self.lots[seq]) for seq in sorted(self.lots) if self.lots[seq]]
        for seq, taken in de.spend_fifo(ordered, points):
            self.lots[seq] -= taken
            debit.draws.append([seq, taken])

    def refund_lots(self, debit: ModelTxn, points: int) -> None:
        outstanding = [(seq, left) for seq, left in debit.draws]
        for seq, back in de.refund_lifo(outstanding, points):
            self.lots[seq] += back
            for draw in debit.draws:
                if draw[0] == seq:
                    taken = min(draw[1], back)
                    draw[1] -= taken
                    back -= taken

    def guard(self, points: int) -> bool:
        """The balance guard of every spend: refused (with the right reason) if short."""
        if self.available >= points:
            return True
        refusal = dl.insufficient(dl.Balance(self.available, self.pending, self.held), points)
        assert isinstance(refusal, FailedPrecondition)
        expected = "NEGATIVE_BALANCE" if self.available < 0 else "INSUFFICIENT_POINTS"
        assert refusal.reason == expected
        return False

    holds = Bundle("holds")
    earns = Bundle("earns")
    debits = Bundle("debits")
    pendings = Bundle("pendings")

    # -- credits ---------------------------------------------------------------------------

    @rule(target=earns, points=st.integers(1, 5_000), issuer=st.sampled_from(issuers))
    def earn(self, points: int, issuer: str) -> int:
        before = self.available
        self.available += points
        seq = self.record(ModelTxn(dl.TxnType.EARN, issuer, points))
        self.post(*dl.move(dl.issued(issuer), dl.available(self.member), points))
        self.credit_lot(seq, before)
        return seq

    @rule(target=pendings, points=st.integers(1, 5_000), issuer=st.sampled_from(issuers))
    def earn_later(self, points: int, issuer: str) -> int:
        self.pending += points
        txn = ModelTxn(dl.TxnType.EARN, issuer, points, dl.TxnState.PENDING, open_points=points)
        self.post(*dl.move(dl.issued(issuer), dl.pending(self.member), points))
        return self.record(txn)

    @rule(target=earns, seq=consumes(pendings))
    def vest(self, seq: int) -> int:
        txn = self.txns[seq]
        if txn.state is not dl.TxnState.PENDING or not txn.open_points:
            return seq
        points, before = txn.open_points, self.available
        self.pending -= points
        self.available += points
        txn.state, txn.open_points = dl.TxnState.POSTED, 0
        self.post(*dl.move(dl.pending(self.member), dl.available(self.member), points))
        self.credit_lot(seq, before)
        return seq

    @rule(seq=pendings, part=st.integers(0, 5_000))
    def cancel_pending(self, seq: int, part: int) -> None:
        txn = self.txns[seq]
        if txn.state is not dl.TxnState.PENDING:
            return
        amount = part or txn.open_points
        if amount > txn.open_points:
            return  # REVERSAL_EXCEEDS_ORIGINAL
        txn.open_points -= amount
        txn.reversed_points += amount
        if not txn.open_points:
            txn.state = dl.TxnState.VOIDED
        self.pending -= amount
        self.post(*dl.move(dl.pending(self.member), dl.issued(txn.partner), amount))

    # -- debits ----------------------------------------------------------------------------

    @rule(target=debits, points=st.integers(1, 5_000))
    def redeem(self, points: int) -> int:
        if not self.guard(points):
            return 0
        txn = ModelTxn(dl.TxnType.REDEEM, self.acceptor, -points)
        self.available -= points
        self.post(*dl.move(dl.available(self.member), dl.redeemed(self.acceptor), points))
        self.spend_lots(txn, points)
        return self.record(txn)

    @rule(target=holds, points=st.integers(1, 5_000))
    def authorize(self, points: int) -> int:
        if not self.guard(points):
            return 0
        txn = ModelTxn(
            dl.TxnType.AUTHORIZATION, self.acceptor, -points, dl.TxnState.PENDING, points
        )
        self.available -= points
        self.held += points
        self.post(*dl.move(dl.available(self.member), dl.held(self.member), points))
        self.spend_lots(txn, points)
        return self.record(txn)

    def release(self, hold: ModelTxn, points: int) -> None:
        """Held points back to available, and to the lots they came from."""
        if not points:
            return
        before = self.available
        self.held -= points
        self.available += points
        self.post(*dl.move(dl.held(self.member), dl.available(self.member), points))
        self.refund_lots(hold, de.lot_change(before, self.available))

    @rule(target=debits, seq=consumes(holds), part=st.integers(0, 5_000))
    def capture(self, seq: int, part: int) -> int:
        hold = self.txns.get(seq)
        if hold is None or hold.state is not dl.TxnState.PENDING:
            return 0
        captured = part or hold.open_points
        if captured > hold.open_points:
            return 0  # CAPTURE_EXCEEDS_HOLD
        released = hold.open_points - captured
        hold.state, hold.open_points = dl.TxnState.POSTED, 0
        self.held -= captured
        self.post(*dl.move(dl.held(self.member), dl.redeemed(self.acceptor), captured))
        self.release(hold, released)
        # A capture's refunds go back to the lots the hold drew from (its draws).
        capture = ModelTxn(dl.TxnType.CAPTURE, self.acceptor, -captured, draws=hold.draws)
        return self.record(capture)

    @rule(seq=consumes(holds), expired=st.booleans())
    def void_or_expire(self, seq: int, expired: bool) -> None:
        hold = self.txns.get(seq)
        if hold is None or hold.state is not dl.TxnState.PENDING:
            return
        points = hold.open_points
        hold.state = dl.TxnState.EXPIRED if expired else dl.TxnState.VOIDED
        hold.open_points = 0
        self.release(hold, points)

    @rule(seq=debits, part=st.integers(0, 5_000))
    def refund(self, seq: int, part: int) -> None:
        txn = self.txns.get(seq)
        if txn is None:
            return
        left = dl.reversible_points(txn.kind, txn.state, txn.points, txn.reversed_points)
        amount = part or left
        if amount == 0 or amount > left:
            return  # REVERSAL_EXCEEDS_ORIGINAL
        txn.reversed_points += amount
        before = self.available
        self.available += amount
        self.post(*dl.move(dl.redeemed(txn.partner), dl.available(self.member), amount))
        self.refund_lots(txn, de.lot_change(before, self.available))

    @rule(seq=earns, part=st.integers(0, 5_000))
    def claw_back(self, seq: int, part: int) -> None:
        txn = self.txns[seq]
        left = dl.reversible_points(txn.kind, txn.state, txn.points, txn.reversed_points)
        amount = part or left
        if amount == 0 or amount > left:
            return
        txn.reversed_points += amount
        from_breakage = min(amount, txn.expired_points)
        if from_breakage:  # expired points come back from breakage, not from the member
            txn.expired_points -= from_breakage
            self.post(*dl.move(dl.expired(txn.partner), dl.issued(txn.partner), from_breakage))
        from_member = amount - from_breakage
        if not from_member:
            return
        before = self.available
        self.available -= from_member
        self.clawed = self.clawed or self.available < 0
        self.post(*dl.move(dl.available(self.member), dl.issued(txn.partner), from_member))
        taken = -de.lot_change(before, self.available)
        own = min(taken, self.lots.get(seq, 0))  # the earn's own lot first, then the oldest
        if own:
            self.lots[seq] -= own
        if taken > own:
            ordered = [de.Lot(s, u) for s, u in sorted(self.lots.items()) if u]
            for lot, points in de.spend_fifo(ordered, taken - own):
                self.lots[lot] -= points

    @rule(seq=earns)
    def expire_lot(self, seq: int) -> None:
        points = self.lots.get(seq, 0)
        if not points:
            return
        txn = self.txns[seq]
        assert self.available >= points, "lots never hold more than is available"
        self.lots[seq] = 0
        txn.expired_points += points
        self.available -= points
        self.post(*dl.move(dl.available(self.member), dl.expired(txn.partner), points))

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def double_entry(self) -> None:
        assert dl.unbalanced_assets(self.postings) == []

    @invariant()
    def balances_are_their_postings(self) -> None:
        totals: dict[str, int] = defaultdict(int)
        for p in self.postings:
            totals[p.account] += p.amount
        assert totals[dl.available(self.member)] == self.available
        assert totals[dl.pending(self.member)] == self.pending
        assert totals[dl.held(self.member)] == self.held
        assert self.pending >= 0 and self.held >= 0
        assert self.available >= 0 or self.clawed

    @invariant()
    def lots_hold_the_positive_part_of_available(self) -> None:
        assert all(u >= 0 for u in self.lots.values()), self.lots
        assert sum(self.lots.values()) == max(self.available, 0)

    @invariant()
    def nothing_is_reversed_twice(self) -> None:
        for txn in self.txns.values():
            assert 0 <= txn.reversed_points <= abs(txn.points)


MemberLedger.TestCase.settings = STATEFUL
TestMemberLedgerNeverLosesOrCreatesAPoint = MemberLedger.TestCase


# -- lots and expiry -------------------------------------------------------------------------


@PROFILE
@given(
    st.integers(-(10**12), 10**12), st.integers(-(10**12), 10**12), st.integers(-(10**12), 10**12)
)
def test_lot_changes_add_up(a: int, b: int, c: int) -> None:
    """Lots follow the positive part of available: the change from a to c is the change from a
    to b plus the change from b to c, and no change means none."""
    assert de.lot_change(a, b) + de.lot_change(b, c) == de.lot_change(a, c)
    assert de.lot_change(a, a) == 0


@st.composite
def lots_and_points(draw: st.DrawFn) -> tuple[list[de.Lot], int]:
    unspent = draw(st.lists(st.integers(0, 10_000), min_size=1, max_size=12))
    lots = [de.Lot(seq, u) for seq, u in enumerate(unspent, start=1)]
    return lots, draw(st.integers(0, sum(unspent)))


@PROFILE
@given(lots_and_points(), st.data())
def test_spending_draws_the_oldest_lots_and_refunds_put_points_back(
    case: tuple[list[de.Lot], int], data: st.DataObject
) -> None:
    """A debit draws exactly its points, never more from a lot than it holds, oldest lots
    first (every lot before the last one drawn is emptied); a refund of part of it gives back
    exactly that part, newest draw first and never more than was drawn; a full refund restores
    every lot as it was."""
    lots, points = case
    drawn = de.spend_fifo(lots, points)
    assert sum(p for _, p in drawn) == points
    unspent = {lot.seq: lot.unspent for lot in lots}
    for seq, p in drawn:
        assert 0 < p <= unspent[seq]
    if drawn:
        last = drawn[-1][0]
        assert all(unspent[seq] == dict(drawn).get(seq, 0) for seq in unspent if seq < last)
    back = data.draw(st.integers(0, points))
    returned = de.refund_lifo(drawn, back)
    assert sum(p for _, p in returned) == back
    for seq, p in returned:
        assert 0 < p <= dict(drawn)[seq]
    if returned:  # newest first: every draw after the first one refunded is refunded whole
        first = [seq for seq, _ in drawn].index(returned[-1][0])
        assert all(dict(returned).get(seq) == p for seq, p in drawn[first + 1 :])
    restored = dict(unspent)
    for seq, p in drawn:
        restored[seq] -= p
    for seq, p in de.refund_lifo(drawn, points):
        restored[seq] += p
    assert restored == unspent


@PROFILE
@given(times, st.integers(-1_200, 1_200))
def test_months_move_the_calendar_without_drifting(when: datetime, months: int) -> None:
    """add_months lands `months` calendar months away, on the same day or (at a month's end)
    an earlier one, at most MONTH_END_CLAMP_DAYS_MAX days off from the way back."""
    moved = dt.add_months(when, months)
    assert (moved.year * 12 + moved.month) - (when.year * 12 + when.month) == months
    assert moved.day <= when.day and moved.time() == when.time()
    back = dt.add_months(moved, -months)
    assert timedelta(0) <= when - back <= timedelta(days=de.MONTH_END_CLAMP_DAYS_MAX)


@PROFILE
@given(times, times, st.integers(1, de.EXPIRY_MONTHS_MAX))
def test_the_inactivity_scan_never_misses_a_member_due(
    last_activity: datetime, now: datetime, months: int
) -> None:
    """Every member whose points lapse by `now` was last active at or before the scan's bound
    (inactive_since_max), whatever the dates and the number of months."""
    policy = de.ExpiryPolicy(de.ExpiryKind.INACTIVITY, months)
    lapse = policy.inactivity_expire_time(last_activity)
    assert lapse is not None and lapse > last_activity
    if lapse <= now:
        assert last_activity <= policy.inactive_since_max(now)


@PROFILE
@given(times, times, st.integers(1, de.EXPIRY_MONTHS_MAX))
def test_a_lot_lives_whole_days_and_a_later_lot_never_expires_first(
    a: datetime, b: datetime, months: int
) -> None:
    """Under FIXED a lot expires at a UTC midnight, after it became available, and a lot that
    became available later never expires earlier."""
    policy = de.ExpiryPolicy(de.ExpiryKind.FIXED, months)
    first, second = sorted([a, b])
    ends = [policy.lot_expire_time(first), policy.lot_expire_time(second)]
    assert ends[0] is not None and ends[1] is not None
    assert ends[0] <= ends[1]
    for when, end in zip((first, second), ends, strict=True):
        assert end > when and end.time() == datetime.min.time()
        assert de.end_of_day(when) - when <= timedelta(days=1)


# -- donations -------------------------------------------------------------------------------


@PROFILE
@given(
    st.integers(0, dl.POINTS_PER_TRANSACTION_MAX), st.integers(0, dd.VALUE_PER_THOUSAND_MINOR_MAX)
)
def test_a_donation_is_worth_its_value_rounded_down(points: int, per_thousand: int) -> None:
    """A donation's money is its exact value rounded down: exact - 1 < value <= exact; more
    points are never worth less."""
    value = dd.value_minor(points, per_thousand)
    exact = Fraction(points * per_thousand, 1000)
    assert exact - 1 < value <= exact
    assert dd.value_minor(points + 1, per_thousand) >= value


@PROFILE
@given(
    st.lists(st.integers(1, dl.POINTS_PER_TRANSACTION_MAX), max_size=30),
    st.integers(1, dd.MATCHING_PERCENT_MAX),
    st.integers(1, dl.POINTS_PER_TRANSACTION_MAX),
    st.integers(0, 3),
)
def test_matching_never_spends_past_its_budget(
    donations: list[int], percent: int, budget: int, stopped_after: int
) -> None:
    """Each match is at most percent/100 of the donation (rounded down) and at most what is
    left; over any run of donations the matches add up to at most the budget; nothing is
    matched once the campaign is stopped or over."""
    campaign = dd.MatchingCampaign(
        "m", "hotel", "cause", percent, budget, 0, T0, T0 + timedelta(days=30), None, T0
    )
    spent = 0
    for i, points in enumerate(donations):
        at = T0 + timedelta(days=i)
        if i == stopped_after:
            campaign = dd.MatchingCampaign(**{**campaign.__dict__, "stop_time": at})
        matched = dd.matched_points(points, campaign, at)
        assert 0 <= matched <= min(points * percent // 100, campaign.budget_left)
        if not campaign.live(at):
            assert matched == 0
        spent += matched
        campaign = dd.MatchingCampaign(**{**campaign.__dict__, "spent_points": spent})
    assert spent <= budget


@PROFILE
@given(
    st.integers(0, 10**dd.RECEIPT_SEQ_DIGITS - 1),
    st.integers(1970, 9999),
    st.integers(0, dd.RECEIPT_SEQ_DIGITS),
    st.integers(1, 9),
)
def test_receipt_numbers_read_back_and_a_mistyped_digit_is_caught(
    seq: int, year: int, position: int, shift: int
) -> None:
    """A receipt number parses back to its year and sequence; changing any one digit of the
    sequence or its check digit makes it unreadable (the Luhn check catches it)."""
    number = dd.receipt_number(seq, year)
    assert dd.parse_receipt_number(number) == (year, seq)
    digits = list(number)
    i = len("D2026-") + position
    digits[i] = str((int(digits[i]) + shift) % 10)
    assert dd.parse_receipt_number("".join(digits)) is None


@PROFILE
@given(times, st.integers(0, 400), st.integers(0, 24 * 400))
def test_a_monthly_pledge_keeps_its_day_of_the_month(
    start: datetime, previous_months: int, hours_late: int
) -> None:
    """The next monthly donation is after `now`, a whole number of months after the pledge's
    start, on the start's day of the month (or the month's last day): it never drifts."""
    previous = dt.add_months(start, previous_months)
    now = previous + timedelta(hours=hours_late)
    following = dd.next_run(previous, start, now)
    assert following > now
    months = (following.year - start.year) * 12 + following.month - start.month
    assert months > previous_months
    assert following == dt.add_months(start, months)


# -- tiers -----------------------------------------------------------------------------------


@PROFILE
@given(
    st.lists(
        st.tuples(st.integers(-5_000, 20_000), st.integers(0, 3 * 365 * 24)),
        max_size=40,
    ),
    st.integers(0, 4 * 365),
)
def test_tiers_climb_freely_and_fall_one_step_at_a_time(
    events: list[tuple[int, int]], horizon_days: int
) -> None:
    """Replaying any history of earns and reversals on the default ladder: an upgrade always
    raises the tier, a review lowers it by at most one step, the status after every change is
    the tier it changed to, and the base tier is never reviewed."""
    ladder = dt.DEFAULT_LADDER
    history = [
        dt.Qualifying(points, T0 + timedelta(hours=h), T0 + timedelta(hours=h), i)
        for i, (points, h) in enumerate(events)
    ]
    final, review_time, changes = dt.replay(ladder, history, T0 + timedelta(days=horizon_days))
    current = ladder.base
    for change in changes:
        assert change.previous == current
        if change.reason == "QUALIFIED":
            assert ladder.rank(change.tier) > ladder.rank(change.previous)
        else:
            assert change.reason == "REVIEW"
            assert ladder.rank(change.tier) >= ladder.rank(change.previous) - 1
            assert change.previous != ladder.base
        current = change.tier
    assert final == current
    assert (review_time is None) == (final == ladder.base)


@PROFILE
@given(st.integers(0, 10**12), st.integers(0, 10**12))
def test_more_qualifying_points_never_earn_a_lower_tier(a: int, b: int) -> None:
    """The tier a number of qualifying points earns is monotone in the points."""
    ladder = dt.DEFAULT_LADDER
    low, high = sorted([a, b])
    assert ladder.rank(ladder.earned(low)) <= ladder.rank(ladder.earned(high))


# -- settlement: pricing ---------------------------------------------------------------------

prices = st.decimals(min_value=0, max_value=dp.PRICE_MAX, places=12, allow_nan=False)
fx_rates = st.decimals(
    min_value="0.000000000001", max_value=dp.FX_RATE_MAX, places=12, allow_nan=False
)
EXACT_MINOR_MAX = 10**15
"""Up to this many minor units (ten trillion dollars) every figure is exact in Decimal's 28
digits; beyond it rounding can be off by one (see the xfail tests at the end)."""


@PROFILE
@given(
    st.integers(-EXACT_MINOR_MAX, EXACT_MINOR_MAX),
    fx_rates,
    st.sampled_from([0, 2, 3]),
    st.sampled_from([0, 2, 3]),
)
def test_conversion_to_the_base_currency_rounds_once_half_to_even(
    amount: int, rate: Decimal, exponent: int, base_exponent: int
) -> None:
    """to_base is the exact quotient rounded half to even: within half a minor unit of it,
    exactly half-even on ties; negative amounts convert to the negated result."""
    assume(abs(amount) * 10 ** max(base_exponent - exponent, 0) < EXACT_MINOR_MAX)
    exact = Fraction(amount) * Fraction(10) ** (base_exponent - exponent) / Fraction(rate)
    converted = dp.to_base(amount, rate, exponent, base_exponent)
    assert converted == half_even(exact)
    assert abs(converted - exact) <= Fraction(1, 2)
    assert dp.to_base(-amount, rate, exponent, base_exponent) == -converted


@PROFILE
@given(st.integers(-EXACT_MINOR_MAX, EXACT_MINOR_MAX), st.integers(0, 10**9), fx_rates)
def test_conversion_is_monotone(amount: int, more: int, rate: Decimal) -> None:
    """More money never converts to less (same rate)."""
    assert dp.to_base(amount, rate, 2, 2) <= dp.to_base(amount + more, rate, 2, 2)


@PROFILE
@given(
    st.sampled_from(list(dp.Component)),
    st.integers(-(10**12), 10**12),
    st.integers(0, 10**12),
    prices,
    st.sampled_from([0, 2, 3]),
)
def test_a_bucket_is_valued_exactly_and_rounded_once(
    component: dp.Component, points: int, units: int, price: Decimal, exponent: int
) -> None:
    """A bucket's money is its exact value (price x points or units, in minor units) rounded
    half to even once; the value of points the partner pays for (issued, matched) is never
    positive, of points it is paid for (redeemed) never negative when they are taken."""
    prices_ = dp.PriceList(
        "v1",
        "p",
        T0,
        "USD",
        issue_price=price,
        redemption_rate=price,
        conversion_price=price,
        charity_value=price,
    )
    scale = Fraction(10) ** exponent
    exact = {
        dp.Component.ISSUED: -Fraction(price) * points,
        dp.Component.MATCHED: -Fraction(price) * points,
        dp.Component.REDEEMED: -Fraction(price) * points,
        dp.Component.CONVERTED: Fraction(price) * units,
        dp.Component.DONATED: -Fraction(price) * points,
        dp.Component.EXPIRED: Fraction(0),
    }[component] * scale
    assume(abs(exact) < EXACT_MINOR_MAX)
    value = dp.value_exact(component, points, units, prices_, exponent)
    assert Fraction(value) == exact
    assert dp.round_minor(value) == half_even(exact)


@st.composite
def price_lists(draw: st.DrawFn) -> dp.PriceList:
    small = st.decimals(min_value=0, max_value=10, places=6, allow_nan=False)
    return dp.PriceList(
        "v1",
        "p",
        T0,
        "USD",
        issue_price=draw(small),
        redemption_rate=draw(small),
        conversion_price=draw(small),
        charity_value=draw(small),
        fee_per_transaction_minor=draw(st.integers(0, 1_000)),
        fee_percent=draw(st.decimals(min_value=0, max_value=100, places=2, allow_nan=False)),
    )


@st.composite
def buckets(draw: st.DrawFn) -> list[dp.Bucket]:
    found = []
    for _ in range(draw(st.integers(0, 6))):
        component = draw(st.sampled_from(list(dp.Component)))
        sign = 1 if component in (dp.Component.ISSUED, dp.Component.MATCHED) else -1
        found.append(
            dp.Bucket(
                component,
                "v1",
                draw(st.booleans()),
                sign * draw(st.integers(0, 10**9)),
                draw(st.integers(0, 10**9)) if component is dp.Component.CONVERTED else 0,
                draw(st.integers(0, 10_000)),
            )
        )
    return found


@PROFILE
@given(price_lists(), buckets(), st.lists(st.integers(-(10**9), 10**9), max_size=4))
def test_a_statement_adds_up(
    prices_: dp.PriceList, found: list[dp.Bucket], adjustments: list[int]
) -> None:
    """A statement's net is what is due less what is owed; owed and due are the sums of their
    parts; its points are the buckets' points by component; the adjustment line is the manual
    adjustments (either sign) plus the late lines."""
    f = dp.figures(found, {"v1": prices_}, 2, adjustments)
    assert f.net_minor == f.due_minor - f.owed_minor
    assert f.owed_minor == f.issue_minor + f.fee_minor + f.manual_owed_minor
    assert f.due_minor == (
        f.redemption_minor + f.conversion_minor + f.donation_minor + f.manual_due_minor
    )
    assert f.manual_due_minor - f.manual_owed_minor == sum(adjustments)
    assert f.adjustment_minor == sum(adjustments) + f.late_minor
    by = defaultdict(int)
    for b in found:
        by[b.component] += b.points
    assert f.points_issued == by[dp.Component.ISSUED]
    assert f.points_matched == by[dp.Component.MATCHED]
    assert f.points_redeemed == -by[dp.Component.REDEEMED]
    assert f.points_donated == -by[dp.Component.DONATED]
    assert f.points_expired == -by[dp.Component.EXPIRED]
    assert f.issue_minor >= 0 and f.redemption_minor >= 0 and f.fee_minor >= 0


@PROFILE
@given(price_lists(), st.integers(0, 10**9), st.integers(0, 10**9))
def test_issuing_more_points_never_costs_less(
    prices_: dp.PriceList, points: int, more: int
) -> None:
    """Pricing is monotone: more points issued never owe less, more points redeemed never earn
    less (same price list, same fee lines)."""

    def f(component: dp.Component, n: int) -> dp.Figures:
        sign = 1 if component is dp.Component.ISSUED else -1
        return dp.figures([dp.Bucket(component, "v1", False, sign * n, 0, 1)], {"v1": prices_}, 2)

    assert (
        f(dp.Component.ISSUED, points).owed_minor
        <= f(dp.Component.ISSUED, points + more).owed_minor
    )
    assert (
        f(dp.Component.REDEEMED, points).redemption_minor
        <= f(dp.Component.REDEEMED, points + more).redemption_minor
    )


@PROFILE
@given(prices)
def test_a_price_written_plainly_reads_back(price: Decimal) -> None:
    """Every price the API can hold is written by `plain` in a form parse_price reads back to
    the same value."""
    assert dp.parse_price(dp.plain(price), "price") == price


# -- settlement: netting ---------------------------------------------------------------------


@st.composite
def statements(draw: st.DrawFn, partner_id: str) -> dn.Statement:
    currency, exponent = draw(st.sampled_from([("USD", 2), ("EUR", 2), ("JPY", 0), ("KWD", 3)]))
    f = dp.figures(
        draw(buckets()),
        {"v1": draw(price_lists())},
        exponent,
        draw(st.lists(st.integers(-(10**9), 10**9), max_size=3)),
    )
    rate = Decimal(1) if currency == "USD" else draw(fx_rates)
    return dn.Statement(
        period="2026-01",
        partner_id=partner_id,
        currency=currency,
        exponent=exponent,
        points_issued=f.points_issued,
        points_redeemed=f.points_redeemed,
        points_converted=f.points_converted,
        units_converted=f.units_converted,
        points_donated=f.points_donated,
        points_matched=f.points_matched,
        points_expired=f.points_expired,
        issue_minor=f.issue_minor,
        redemption_minor=f.redemption_minor,
        conversion_minor=f.conversion_minor,
        donation_minor=f.donation_minor,
        fee_minor=f.fee_minor,
        adjustment_minor=f.adjustment_minor,
        late_minor=f.late_minor,
        owed_minor=f.owed_minor,
        due_minor=f.due_minor,
        net_minor=f.net_minor,
        fx_rate=rate,
        net_base_minor=dp.to_base(f.net_minor, rate, exponent, 2),
        breakage_base_minor=dp.to_base(f.breakage_minor, rate, exponent, 2),
        line_count=1,
        create_time=T0,
    )


@st.composite
def periods(draw: st.DrawFn) -> list[dn.Statement]:
    ids = draw(
        st.lists(st.from_regex(r"[a-z][a-z0-9-]{2,10}", fullmatch=True), unique=True, max_size=8)
    )
    return [draw(statements(pid)) for pid in ids]


@PROFILE
@given(periods())
def test_netting_never_loses_a_cent(found: list[dn.Statement]) -> None:
    """For any statements in any currencies at any rates: the partners' net positions and the
    operator's margin add up to exactly zero in the base currency; the margin's parts plus the
    rounding left over add up to the margin exactly; that rounding is at most half a minor unit
    per converted figure (seven per statement); per settlement currency the margin is minus the
    sum of the nets; every statement is a position, once, in partner order."""
    net = dn.netting("2026-01", found, "USD", 2, T0)
    margin = net.margin
    assert margin.total + sum(s.net_base_minor for s in net.positions) == 0
    parts = (
        margin.issue_revenue
        + margin.fee_revenue
        + margin.redemption_cost
        + margin.conversion_cost
        + margin.charity_payouts
        + margin.adjustments
    )
    assert parts + margin.fx_rounding == margin.total
    assert abs(margin.fx_rounding) * 2 <= 7 * len(found)
    assert [s.partner_id for s in net.positions] == sorted(s.partner_id for s in found)
    by_currency: dict[str, int] = defaultdict(int)
    for s in found:
        by_currency[s.currency] -= s.net_minor
    assert dict(net.margins_by_currency) == dict(by_currency)
    assert margin.breakage == sum(s.breakage_base_minor for s in found)


# -- the same invariants in the real ledger --------------------------------------------------

operations = st.lists(
    st.one_of(
        st.tuples(st.just("earn"), st.integers(1, 3_000), st.integers(0, 1)),
        st.tuples(st.just("earn_later"), st.integers(1, 3_000), st.integers(1, 20)),
        st.tuples(st.just("redeem"), st.integers(1, 3_000), st.integers(0, 1)),
        st.tuples(st.just("authorize"), st.integers(1, 3_000), st.integers(60, 86_400)),
        st.tuples(st.just("capture"), st.integers(0, 3_000), st.integers(0, 50)),
        st.tuples(st.just("void"), st.integers(0, 0), st.integers(0, 50)),
        st.tuples(st.just("reverse"), st.integers(0, 3_000), st.integers(0, 50)),
        st.tuples(st.just("time"), st.integers(1, 40), st.integers(0, 0)),
    ),
    max_size=30,
)


async def reset(ctx: AppContext) -> None:
    """A clean database for the next example (what the ctx fixture does once per test)."""
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    async with ctx.database.begin() as conn:
        if ctx.database.dialect == "postgresql":
            await conn.execute(text(f"TRUNCATE {', '.join(tables)} CASCADE"))
        else:
            for table in tables:
                await conn.execute(text(f"DELETE FROM {table}"))


async def stored_balances(ctx: AppContext, member_id: str) -> tuple[dl.Balance, dict[str, int]]:
    """The materialized balance and what the postings say of each of the member's accounts."""
    postings = ledger.POSTINGS
    async with ctx.database.connect() as conn:
        balance = await ledger.balance_of(conn, member_id)
        rows = await conn.execute(
            select(postings.c.account, func.sum(postings.c.amount))
            .where(postings.c.account.like(f"member:{member_id}:%"))
            .group_by(postings.c.account)
        )
        sums = {account: int(total) for account, total in rows}
    return balance, sums


@pytest.mark.slow
@SERVICE
@given(ops=operations)
async def test_the_real_ledger_keeps_every_point_through_any_sequence(
    ctx: AppContext, ops: list[tuple[str, int, int]]
) -> None:
    """Random sequences of earns (at once and vesting), redemptions, holds, captures, voids,
    reversals and the passing of time (vesting, hold expiry, FIXED 1-month lot expiry) through
    gateway.service on the test database: after every step the member's available, pending and
    held balances equal the sums of the postings on their accounts, pending and held are never
    negative, available never is without a clawback, every refusal is a CoalitionError with a
    reason, and at the end `coalition ledger verify` finds nothing wrong."""
    await reset(ctx)
    ctx.clock.set(T0)  # type: ignore[attr-defined]
    ctx.expiry = de.ExpiryPolicy(de.ExpiryKind.FIXED, 1)
    async with ctx.database.begin() as conn:
        partner = await partner_service.create(
            conn, ctx, "grand-hotel", PartnerType.HOTEL, PartnerSettings("Grand", Decimal(1))
        )
        member = await members_service.enroll(conn, ctx, ContactDetails("Ada Lovelace"))
    names: list[str] = []
    clawed = False
    for op, amount, extra in ops:
        try:
            async with ctx.database.begin() as conn:
                if op in ("earn", "earn_later"):
                    vest = ctx.clock.now() + timedelta(days=extra) if op == "earn_later" else None
                    txn, _ = await earning.earn(
                        conn,
                        ctx,
                        partner,
                        member.id,
                        earning.Purchase(amount * 100, "USD"),
                        vest_time=vest,
                    )
                elif op == "redeem":
                    txn = await ledger.redeem(conn, ctx, partner.id, member.id, amount)
                elif op == "authorize":
                    txn = await ledger.authorize(conn, ctx, partner.id, member.id, amount, extra)
                elif op in ("capture", "void", "reverse") and names:
                    name = names[extra % len(names)]
                    if op == "capture":
                        txn = await ledger.capture(conn, ctx, None, name, amount)
                    elif op == "void":
                        txn = await ledger.void(conn, ctx, None, name)
                    else:
                        txn = await ledger.reverse(conn, ctx, None, name, amount, "test")
                elif op == "time":
                    ctx.clock.advance(timedelta(days=amount))  # type: ignore[attr-defined]
                    await ledger.settle_due(conn, ctx)
                    txn = None
                else:
                    txn = None
            if op == "time":
                await expiry_service.expire_due(ctx)
            if txn is not None:
                names.append(txn.name)
        except CoalitionError as refused:
            assert refused.reason, refused
        balance, sums = await stored_balances(ctx, member.id)
        assert balance.available == sums.get(dl.available(member.id), 0)
        assert balance.pending == sums.get(dl.pending(member.id), 0)
        assert balance.held == sums.get(dl.held(member.id), 0)
        assert balance.pending >= 0 and balance.held >= 0
        clawed = clawed or (op == "reverse" and balance.available < 0)
        assert balance.available >= 0 or clawed, (op, amount, balance)
    report = await verify(ctx)
    assert report.ok, report.problems


# -- known bugs: exactness past 10**15 minor units -------------------------------------------


@pytest.mark.xfail(
    strict=True,
    reason="BUG: settlement.domain.pricing.to_base divides in Decimal's default 28-digit "
    "context, so the quotient is rounded once to 28 digits and then again to an integer: for "
    "amounts past ~10**15 minor units with 12-decimal rates the double rounding is off by one "
    "minor unit (docs promise a single half-even rounding)",
)
def test_conversion_rounds_once_even_for_the_largest_amounts() -> None:
    amount, rate = 759_961_966_368_312_169, Decimal("56901.062392749367")
    exact = Fraction(amount) / Fraction(rate)
    assert dp.to_base(amount, rate, 2, 2) == half_even(exact)  # 13355848457149


@pytest.mark.xfail(
    strict=True,
    reason="BUG: settlement.domain.pricing.value_exact multiplies in Decimal's default "
    "28-digit context: 100000000001 points at 100000.005000000001 per point (a value of about "
    "10**18 minor units, within int64) lose their last digits, and round_minor rounds the "
    "truncated value to the wrong even neighbour (…010 instead of …011)",
)
def test_a_bucket_is_exact_even_near_the_int64_limit() -> None:
    price, points = Decimal("100000.005000000001"), 100_000_000_001
    prices_ = dp.PriceList("v1", "p", T0, "USD", issue_price=price)
    exact = Fraction(price) * points * 100
    assert exact < 2**63
    value = dp.value_exact(dp.Component.ISSUED, -points, 0, prices_, 2)
    assert dp.round_minor(value) == half_even(exact)
