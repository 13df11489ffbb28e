"""Donation rules: money value, matching, monthly dates, receipt numbers, profiles and campaign
drafts. Pure, no I/O."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from stdnum import luhn

from gateway.domain import donations as dd
from gateway.domain import notices
from gateway.domain.errors import CoalitionError, InvalidArgument
from gateway.domain.ledger import POINTS_PER_TRANSACTION_MAX

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def t(iso: str) -> datetime:
    return datetime.fromisoformat(iso).replace(tzinfo=UTC)


def campaign(
    percent: int = 100,
    budget: int = 10_000,
    spent: int = 0,
    start: datetime = NOW - timedelta(days=1),
    end: datetime = NOW + timedelta(days=30),
    stop: datetime | None = None,
) -> dd.MatchingCampaign:
    return dd.MatchingCampaign(
        id="c1",
        sponsor_id="grand-hotel",
        charity_id="red-cross",
        percent=percent,
        budget_points=budget,
        spent_points=spent,
        start_time=start,
        end_time=end,
        stop_time=stop,
        create_time=start,
    )


def draft(**changes: object) -> dd.MatchingDraft:
    base = dd.MatchingDraft(
        sponsor_id="grand-hotel",
        charity_id="red-cross",
        percent=100,
        budget_points=10_000,
        start_time=NOW + timedelta(days=1),
        end_time=NOW + timedelta(days=31),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def refused(call: object, kind: type[CoalitionError] = InvalidArgument) -> CoalitionError:
    """The error of `kind` a zero-argument callable raises (fails the test if it returns)."""
    assert callable(call)
    with pytest.raises(kind) as caught:
        call()
    return caught.value


def field_of(err: CoalitionError) -> str:
    return str(err.metadata["field"])


# -- money value -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("points", "per_thousand", "expected"),
    [
        pytest.param(999, 1_000, 999, id="one-minor-unit-per-point"),
        pytest.param(1, 999, 0, id="under-one-minor-unit-rounds-to-zero"),
        pytest.param(1_000, 999, 999, id="a-thousand-points-exactly"),
        pytest.param(1_999, 1, 1, id="rounds-down-not-to-nearest"),
        pytest.param(2_000, 1, 2, id="exact-multiple"),
        pytest.param(1_234_567, 0, 0, id="worthless-charity"),
        pytest.param(0, 1_000, 0, id="no-points"),
        pytest.param(
            POINTS_PER_TRANSACTION_MAX,
            dd.VALUE_PER_THOUSAND_MINOR_MAX,
            POINTS_PER_TRANSACTION_MAX * dd.VALUE_PER_THOUSAND_MINOR_MAX // 1000,
            id="largest-values-exact",
        ),
    ],
)
def test_value_minor_rounds_down_to_the_minor_unit(
    points: int, per_thousand: int, expected: int
) -> None:
    assert dd.value_minor(points, per_thousand) == expected


def test_value_minor_of_parts_never_exceeds_the_value_of_the_whole() -> None:
    """Rounding each donation down means a charity is never owed more than the points say."""
    for per_thousand in (1, 7, 333, 999, 1_001):
        parts = [1, 2, 499, 500, 501, 999]
        total = sum(dd.value_minor(p, per_thousand) for p in parts)
        assert total <= dd.value_minor(sum(parts), per_thousand)


# -- matching --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("points", "live", "at", "expected"),
    [
        pytest.param(1_000, None, NOW, 0, id="no-campaign"),
        pytest.param(1_000, campaign(), NOW, 1_000, id="live-one-for-one"),
        pytest.param(1_000, campaign(start=NOW), NOW, 1_000, id="live-from-its-start"),
        pytest.param(1_000, campaign(start=NOW + timedelta(seconds=1)), NOW, 0, id="not-started"),
        pytest.param(1_000, campaign(end=NOW), NOW, 0, id="end-is-exclusive"),
        pytest.param(1_000, campaign(end=NOW - timedelta(days=1)), NOW, 0, id="ended"),
        pytest.param(1_000, campaign(stop=NOW - timedelta(hours=1)), NOW, 0, id="stopped"),
        pytest.param(1_000, campaign(budget=12_345, spent=12_000), NOW, 345, id="partial"),
        pytest.param(1_000, campaign(budget=5_000, spent=4_000), NOW, 1_000, id="exactly-left"),
        pytest.param(1_000, campaign(budget=5_000, spent=5_000), NOW, 0, id="budget-spent"),
        pytest.param(1_000, campaign(budget=5_000, spent=6_000), NOW, 0, id="overspent-is-zero"),
        pytest.param(1_000, campaign(percent=50), NOW, 500, id="half"),
        pytest.param(999, campaign(percent=50), NOW, 499, id="half-rounds-down"),
        pytest.param(1_000, campaign(percent=100), NOW, 1_000, id="one-for-one"),
        pytest.param(1_000, campaign(percent=250), NOW, 2_500, id="two-and-a-half"),
        pytest.param(3, campaign(percent=250), NOW, 7, id="two-and-a-half-rounds-down"),
        pytest.param(1, campaign(percent=1), NOW, 0, id="one-percent-of-one-point"),
        pytest.param(
            1_000, campaign(percent=dd.MATCHING_PERCENT_MAX), NOW, 10_000, id="ten-for-one"
        ),
    ],
)
def test_matched_points(
    points: int, live: dd.MatchingCampaign | None, at: datetime, expected: int
) -> None:
    assert dd.matched_points(points, live, at) == expected


def test_a_budget_is_spent_exactly_by_successive_donations() -> None:
    """The donation that reaches the budget is matched in part and no later one at all."""
    live = campaign(budget=12_345)
    matches = []
    for _ in range(20):
        matched = dd.matched_points(1_000, live, NOW)
        matches.append(matched)
        live = replace(live, spent_points=live.spent_points + matched)
    assert sum(matches) == 12_345
    assert matches[:12] == [1_000] * 12
    assert matches[12:] == [345] + [0] * 7


# -- monthly dates ---------------------------------------------------------------------------


def test_next_run_from_the_31st_follows_month_ends_without_drifting() -> None:
    start = t("2026-01-31T09:30:00")
    runs = [start]
    for _ in range(5):
        runs.append(dd.next_run(runs[-1], start, runs[-1]))
    assert runs == [
        t("2026-01-31T09:30:00"),
        t("2026-02-28T09:30:00"),
        t("2026-03-31T09:30:00"),
        t("2026-04-30T09:30:00"),
        t("2026-05-31T09:30:00"),
        t("2026-06-30T09:30:00"),
    ]


def test_next_run_in_a_leap_year_lands_on_the_29th_then_back_on_the_31st() -> None:
    start = t("2028-01-31T00:00:00")
    february = dd.next_run(start, start, start)
    assert february == t("2028-02-29T00:00:00")
    assert dd.next_run(february, start, february) == t("2028-03-31T00:00:00")


def test_next_run_across_the_new_year() -> None:
    start = t("2026-11-30T08:00:00")
    december = dd.next_run(start, start, start)
    assert december == t("2026-12-30T08:00:00")
    assert dd.next_run(december, start, december) == t("2027-01-30T08:00:00")


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        pytest.param(t("2026-01-31T09:30:00"), t("2026-02-28T09:30:00"), id="on-time"),
        pytest.param(t("2026-02-28T09:29:59"), t("2026-02-28T09:30:00"), id="just-before-next"),
        pytest.param(t("2026-02-28T09:30:00"), t("2026-03-31T09:30:00"), id="exactly-at-next"),
        pytest.param(t("2026-05-15T00:00:00"), t("2026-05-31T09:30:00"), id="months-late"),
        pytest.param(t("2026-06-01T00:00:00"), t("2026-06-30T09:30:00"), id="jumps-past-may"),
        pytest.param(t("2027-02-01T00:00:00"), t("2027-02-28T09:30:00"), id="a-year-late"),
    ],
)
def test_next_run_after_a_gap_is_the_first_date_after_now(
    now: datetime, expected: datetime
) -> None:
    start = t("2026-01-31T09:30:00")
    assert dd.next_run(start, start, now) == expected


def test_next_run_is_always_after_now_and_on_the_start_day_when_the_month_has_it() -> None:
    start = t("2026-01-31T09:30:00")
    previous = start
    now = start
    for step in range(1, 40):
        now = now + timedelta(days=17 * step % 45)
        following = dd.next_run(previous, start, now)
        assert following > now
        assert following > previous
        assert following.day == 31 or following.month in (2, 4, 6, 9, 11)
        assert following.time() == start.time()
        previous = following


# -- receipt numbers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seq", "year"),
    [
        pytest.param(1, 2026, id="first"),
        pytest.param(1_234, 2026, id="typical"),
        pytest.param(9_999_999_999, 2099, id="largest-seq"),
        pytest.param(42, 1999, id="old-year"),
    ],
)
def test_receipt_number_round_trips(seq: int, year: int) -> None:
    number = dd.receipt_number(seq, year)
    assert dd.parse_receipt_number(number) == (year, seq)
    assert dd.parse_receipt_number(f"  {number.lower()} ") == (year, seq), "case and spaces"


def test_receipt_number_reads_as_documented() -> None:
    digits = "0000001234"
    assert dd.receipt_number(1_234, 2026) == f"D2026-{digits}{luhn.calc_check_digit(digits)}"


def test_every_single_mistyped_digit_of_a_receipt_number_is_rejected() -> None:
    number = dd.receipt_number(1_234, 2026)
    head, tail = number[:6], number[6:]  # "D2026-" and the checked digits
    for i, digit in enumerate(tail):
        for other in "0123456789":
            if other != digit:
                typo = head + tail[:i] + other + tail[i + 1 :]
                assert dd.parse_receipt_number(typo) is None, typo


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("", id="empty"),
        pytest.param("2026-00000012343", id="no-letter"),
        pytest.param("X2026-00000012343", id="wrong-letter"),
        pytest.param("D26-00000012343", id="two-digit-year"),
        pytest.param("D2026-0000001234", id="no-check-digit"),
        pytest.param("D2026-000000123434", id="too-long"),
        pytest.param("D2026 00000012343", id="no-dash"),
        pytest.param("D2026-000000123a3", id="letter-in-seq"),
    ],
)
def test_malformed_receipt_numbers_are_rejected(raw: str) -> None:
    assert dd.parse_receipt_number(raw) is None


def test_adjacent_transposition_of_a_receipt_number_is_rejected() -> None:
    number = dd.receipt_number(1_234, 2026)  # ...0000001234c: swap "2" and "3"
    swapped = number[:-4] + number[-3] + number[-4] + number[-2:]
    assert swapped != number
    assert dd.parse_receipt_number(swapped) is None


# -- charity profiles ------------------------------------------------------------------------


def test_a_valid_profile_is_trimmed_and_its_causes_deduplicated() -> None:
    profile = dd.CharityProfile(
        description="  Clean water for all.  ",
        causes=("WATER", "HEALTH", "WATER"),
        minimum_donation_points=100,
        value_per_thousand_minor=1_000,
    )
    assert dd.validate_profile(profile) == replace(
        profile, description="Clean water for all.", causes=("WATER", "HEALTH")
    )


def test_the_limits_of_a_profile_are_accepted() -> None:
    profile = dd.CharityProfile(
        description="x" * dd.DESCRIPTION_CHARS_MAX,
        causes=(*(f"CAUSE_{i}" for i in range(dd.CAUSES_MAX - 1)), "A" * 40),
        minimum_donation_points=POINTS_PER_TRANSACTION_MAX,
        value_per_thousand_minor=dd.VALUE_PER_THOUSAND_MINOR_MAX,
    )
    assert dd.validate_profile(profile) == profile
    assert dd.validate_profile(dd.CharityProfile()) == dd.CharityProfile(), "the empty profile"


@pytest.mark.parametrize(
    ("profile", "reason", "field"),
    [
        pytest.param(
            dd.CharityProfile(causes=("education",)),
            "INVALID_CAUSE",
            "partner.charity.causes[0]",
            id="lowercase-cause",
        ),
        pytest.param(
            dd.CharityProfile(causes=("HEALTH", "1ST_AID")),
            "INVALID_CAUSE",
            "partner.charity.causes[1]",
            id="cause-starting-with-a-digit",
        ),
        pytest.param(
            dd.CharityProfile(causes=("A",)), "INVALID_CAUSE", "partner.charity.causes[0]", id="1"
        ),
        pytest.param(
            dd.CharityProfile(causes=("A" * 41,)),
            "INVALID_CAUSE",
            "partner.charity.causes[0]",
            id="cause-too-long",
        ),
        pytest.param(
            dd.CharityProfile(causes=("CLEAN WATER",)),
            "INVALID_CAUSE",
            "partner.charity.causes[0]",
            id="cause-with-space",
        ),
        pytest.param(
            dd.CharityProfile(causes=tuple(f"CAUSE_{i}" for i in range(dd.CAUSES_MAX + 1))),
            "TOO_MANY_CAUSES",
            "partner.charity.causes",
            id="too-many-causes",
        ),
        pytest.param(
            dd.CharityProfile(description="x" * (dd.DESCRIPTION_CHARS_MAX + 1)),
            "FIELD_TOO_LONG",
            "partner.charity.description",
            id="description-too-long",
        ),
        pytest.param(
            dd.CharityProfile(minimum_donation_points=0),
            "OUT_OF_RANGE",
            "partner.charity.minimum_donation_points",
            id="minimum-zero",
        ),
        pytest.param(
            dd.CharityProfile(minimum_donation_points=POINTS_PER_TRANSACTION_MAX + 1),
            "OUT_OF_RANGE",
            "partner.charity.minimum_donation_points",
            id="minimum-above-a-transaction",
        ),
    ],
)
def test_invalid_profiles_are_refused_on_their_field(
    profile: dd.CharityProfile, reason: str, field: str
) -> None:
    err = refused(lambda: dd.validate_profile(profile))
    assert (err.reason, field_of(err)) == (reason, field)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(-1, id="negative"),
        pytest.param(dd.VALUE_PER_THOUSAND_MINOR_MAX + 1, id="above-max"),
    ],
)
def test_an_out_of_range_value_of_points_is_refused(value: int) -> None:
    err = refused(lambda: dd.validate_profile(dd.CharityProfile(value_per_thousand_minor=value)))
    assert err.reason == "OUT_OF_RANGE"


def test_an_out_of_range_value_of_points_names_the_proto_field() -> None:
    err = refused(lambda: dd.validate_profile(dd.CharityProfile(value_per_thousand_minor=-1)))
    assert field_of(err) == "partner.charity.value_per_thousand_points_minor"


def test_the_field_prefix_is_the_callers() -> None:
    err = refused(lambda: dd.validate_profile(dd.CharityProfile(causes=("x",)), prefix="charity"))
    assert field_of(err) == "charity.causes[0]"


# -- donations and pledges -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("points", "reason"),
    [
        pytest.param(0, "INVALID_POINTS", id="zero"),
        pytest.param(-5, "INVALID_POINTS", id="negative"),
        pytest.param(POINTS_PER_TRANSACTION_MAX + 1, "INVALID_POINTS", id="above-a-transaction"),
        pytest.param(99, "BELOW_MINIMUM_DONATION", id="below-minimum"),
    ],
)
def test_check_donation_refuses(points: int, reason: str) -> None:
    """Bad input is INVALID_ARGUMENT; the charity's minimum (a setting that may change) is
    whatever the error model says, on the same field."""
    profile = dd.CharityProfile(minimum_donation_points=100)
    err = refused(lambda: dd.check_donation(points, profile), CoalitionError)
    assert (err.reason, field_of(err)) == (reason, "points")


def test_check_donation_accepts_the_minimum() -> None:
    dd.check_donation(100, dd.CharityProfile(minimum_donation_points=100))


@pytest.mark.parametrize(
    ("kind", "points", "expected"),
    [
        pytest.param(dd.PledgeKind.MONTHLY, 500, 500, id="monthly"),
        pytest.param(dd.PledgeKind.EXPIRING, 0, 0, id="expiring-takes-no-points"),
    ],
)
def test_check_pledge_accepts(kind: dd.PledgeKind, points: int, expected: int) -> None:
    assert dd.check_pledge(kind, points, dd.CharityProfile(minimum_donation_points=100)) == expected


@pytest.mark.parametrize(
    ("kind", "points", "reason", "field"),
    [
        pytest.param(
            dd.PledgeKind.EXPIRING, 500, "POINTS_NOT_ALLOWED", "pledge.points", id="expiring"
        ),
        pytest.param(
            dd.PledgeKind.MONTHLY, 99, "BELOW_MINIMUM_DONATION", "pledge.points", id="below"
        ),
        pytest.param(dd.PledgeKind.MONTHLY, 0, "INVALID_POINTS", "pledge.points", id="zero"),
    ],
)
def test_check_pledge_refuses(kind: dd.PledgeKind, points: int, reason: str, field: str) -> None:
    profile = dd.CharityProfile(minimum_donation_points=100)
    err = refused(lambda: dd.check_pledge(kind, points, profile), CoalitionError)
    assert (err.reason, field_of(err)) == (reason, field)


# -- matching campaign drafts ----------------------------------------------------------------


def test_a_valid_draft_is_kept_as_it_is() -> None:
    assert dd.validate_matching(draft(), NOW) == draft()


def test_a_start_in_the_past_becomes_now() -> None:
    checked = dd.validate_matching(draft(start_time=NOW - timedelta(days=3)), NOW)
    assert checked.start_time == NOW
    assert checked.end_time == draft().end_time


def test_the_longest_campaign_is_measured_from_now_when_it_started_in_the_past() -> None:
    """Nothing is retroactive: a past start counts as now, for the length too."""
    start = NOW - timedelta(days=10)
    end = NOW + dd.MATCHING_DURATION_MAX
    checked = dd.validate_matching(draft(start_time=start, end_time=end), NOW)
    assert (checked.start_time, checked.end_time) == (NOW, end)


@pytest.mark.parametrize(
    "percent",
    [
        pytest.param(1, id="lowest"),
        pytest.param(dd.MATCHING_PERCENT_MAX, id="highest"),
    ],
)
def test_percent_limits_are_accepted(percent: int) -> None:
    assert dd.validate_matching(draft(percent=percent), NOW).percent == percent


def test_the_longest_campaign_is_accepted() -> None:
    start = NOW + timedelta(days=1)
    end = start + dd.MATCHING_DURATION_MAX
    assert dd.validate_matching(draft(start_time=start, end_time=end), NOW).end_time == end


@pytest.mark.parametrize(
    ("changes", "reason", "field"),
    [
        pytest.param(
            {"percent": 0}, "OUT_OF_RANGE", "matching_campaign.percent", id="percent-zero"
        ),
        pytest.param(
            {"percent": dd.MATCHING_PERCENT_MAX + 1},
            "OUT_OF_RANGE",
            "matching_campaign.percent",
            id="percent-1001",
        ),
        pytest.param(
            {"percent": -100}, "OUT_OF_RANGE", "matching_campaign.percent", id="percent-negative"
        ),
        pytest.param(
            {"budget_points": 0},
            "OUT_OF_RANGE",
            "matching_campaign.budget_points",
            id="budget-zero",
        ),
        pytest.param(
            {"budget_points": POINTS_PER_TRANSACTION_MAX + 1},
            "OUT_OF_RANGE",
            "matching_campaign.budget_points",
            id="budget-too-big",
        ),
        pytest.param(
            {"end_time": NOW + timedelta(hours=1)},
            "INVALID_TIME_RANGE",
            "matching_campaign.end_time",
            id="end-before-start",
        ),
        pytest.param(
            {"end_time": NOW + timedelta(days=1)},
            "INVALID_TIME_RANGE",
            "matching_campaign.end_time",
            id="end-equals-start",
        ),
        pytest.param(
            {"start_time": NOW - timedelta(days=5), "end_time": NOW - timedelta(days=1)},
            "INVALID_TIME_RANGE",
            "matching_campaign.end_time",
            id="wholly-in-the-past",
        ),
        pytest.param(
            {"start_time": NOW - timedelta(days=5), "end_time": NOW},
            "INVALID_TIME_RANGE",
            "matching_campaign.end_time",
            id="ends-now",
        ),
        pytest.param(
            {"end_time": NOW + timedelta(days=1) + dd.MATCHING_DURATION_MAX + timedelta(seconds=1)},
            "INVALID_TIME_RANGE",
            "matching_campaign.end_time",
            id="longer-than-max",
        ),
        pytest.param(
            {"sponsor_id": "red-cross"},
            "SPONSOR_IS_CHARITY",
            "matching_campaign.sponsor",
            id="sponsor-is-the-charity",
        ),
    ],
)
def test_invalid_drafts_are_refused_on_their_field(
    changes: dict[str, object], reason: str, field: str
) -> None:
    err = refused(lambda: dd.validate_matching(draft(**changes), NOW))
    assert (err.reason, field_of(err)) == (reason, field)


# -- resource names --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parse", "raw", "reason"),
    [
        pytest.param(dd.parse_charity_name, "charities/", "INVALID_CHARITY_NAME", id="charity"),
        pytest.param(dd.parse_charity_name, "partners/x", "INVALID_CHARITY_NAME", id="partner"),
        pytest.param(dd.parse_pledge_name, "members/m/pledges", "INVALID_PLEDGE_NAME", id="pl"),
        pytest.param(
            dd.parse_donation_name, "charities/c/donations/", "INVALID_DONATION_NAME", id="don"
        ),
        pytest.param(
            dd.parse_matching_name,
            "charities/c/campaigns/x",
            "INVALID_MATCHING_CAMPAIGN_NAME",
            id="matching",
        ),
        pytest.param(
            dd.parse_charity_name, "charities/oc\x00ean", "INVALID_CHARITY_NAME", id="nul"
        ),
        pytest.param(
            dd.parse_pledge_name, "members/m1/pledges/p\x001", "INVALID_PLEDGE_NAME", id="pl-nul"
        ),
        pytest.param(
            dd.parse_donation_name,
            "charities/red-cross/donations/d/e",
            "INVALID_DONATION_NAME",
            id="don-extra",
        ),
    ],
)
def test_malformed_names_are_refused(parse: object, raw: str, reason: str) -> None:
    assert callable(parse)
    assert refused(lambda: parse(raw)).reason == reason


def test_names_round_trip() -> None:
    assert dd.parse_charity_name("charities/red-cross") == "red-cross"
    assert dd.parse_pledge_name("members/m1/pledges/p1") == ("m1", "p1")
    assert dd.parse_donation_name("charities/red-cross/donations/d1") == ("red-cross", "d1")
    assert dd.parse_matching_name(campaign().name) == ("red-cross", "c1")


# -- what a member is told when a monthly gift is skipped ------------------------------------


def pledge_skipped(reason: str) -> dict[str, object]:
    return {
        "member": "members/m1",
        "pledge": "members/m1/pledges/p1",
        "charity": "charities/red-cross",
        "charity_display_name": "Red Cross",
        "points": 1_000,
        "reason": reason,
        "due_time": "2026-02-10T00:00:00+00:00",
    }


@pytest.mark.parametrize(
    ("reason", "why"),
    [
        pytest.param("INSUFFICIENT_POINTS", "you did not have enough points available", id="short"),
        pytest.param(
            "CHARITY_NOT_ACCEPTING", "Red Cross is not taking donations at the moment", id="paused"
        ),
        pytest.param(
            "BELOW_MINIMUM_DONATION", "Red Cross no longer takes a gift of this size", id="minimum"
        ),
    ],
)
def test_a_skipped_month_says_why(reason: str, why: str) -> None:
    rendered = notices.render(notices.PLEDGE_SKIPPED, pledge_skipped(reason), "Ada")
    assert rendered is not None
    subject, body = rendered
    assert subject == "This month's gift to Red Cross was skipped"
    assert "1,000 points" in body and "10 February 2026" in body
    assert f"but {why}." in body


def test_a_member_in_debt_is_not_told_the_charity_refused_the_gift() -> None:
    rendered = notices.render(notices.PLEDGE_SKIPPED, pledge_skipped("NEGATIVE_BALANCE"), "Ada")
    assert rendered is not None
    assert "no longer takes a gift" not in rendered[1]
