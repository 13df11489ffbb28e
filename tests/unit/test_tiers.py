"""Tiers: the ladder, the rolling window, upgrades, reviews and replay. Pure rules, no I/O."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from gateway.domain import tiers as dt

LADDER = dt.DEFAULT_LADDER
BLUE, SILVER, GOLD, PLATINUM = LADDER.tiers
"""Thresholds 0, 5,000, 15,000 and 50,000 qualifying points."""


# -- builders --------------------------------------------------------------------------------


def t(iso: str) -> datetime:
    return datetime.fromisoformat(iso).replace(tzinfo=UTC)


def earn(points: int, at: str, seq: int = 0) -> dt.Qualifying:
    return dt.Qualifying(points, t(at), t(at), seq)


def reversal(points: int, of_earn_at: str, at: str, seq: int = 0) -> dt.Qualifying:
    """Takes back `points` of the earn made at `of_earn_at`, recorded at `at`."""
    return dt.Qualifying(-points, t(of_earn_at), t(at), seq)


def tier(code: str, threshold: int, multiplier: str = "1") -> dt.Tier:
    return dt.Tier(code, code.title(), threshold, Decimal(multiplier))


Change = tuple[str, str, str, int, str]


def changes(log: Sequence[dt.TierChange]) -> list[Change]:
    return [
        (c.at.isoformat(), c.previous.code, c.tier.code, c.qualifying_points, c.reason) for c in log
    ]


# -- the ladder ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("points", "code"),
    [
        (0, "BLUE"),
        (4_999, "BLUE"),
        (5_000, "SILVER"),
        (14_999, "SILVER"),
        (15_000, "GOLD"),
        (49_999, "GOLD"),
        (50_000, "PLATINUM"),
        (10**9, "PLATINUM"),
        (-1, "BLUE"),
    ],
    ids=[
        "nothing",
        "just-below-silver",
        "silver",
        "just-below-gold",
        "gold",
        "just-below-platinum",
        "platinum",
        "far-above-the-top",
        "negative",
    ],
)
def test_earned_is_the_highest_threshold_reached(points: int, code: str) -> None:
    assert LADDER.earned(points).code == code


@pytest.mark.parametrize(
    ("code", "above", "below"),
    [
        ("BLUE", "SILVER", "BLUE"),
        ("SILVER", "GOLD", "BLUE"),
        ("GOLD", "PLATINUM", "SILVER"),
        ("PLATINUM", None, "GOLD"),
    ],
    ids=["base-stays-base-below", "silver", "gold", "top-has-nothing-above"],
)
def test_neighbours(code: str, above: str | None, below: str) -> None:
    current = LADDER.get(code)
    upper = LADDER.above(current)
    assert (upper.code if upper else None) == above
    assert LADDER.below(current).code == below


@pytest.mark.parametrize(
    ("code", "found"),
    [("GOLD", "GOLD"), ("DIAMOND", "BLUE"), ("", "BLUE")],
    ids=["known", "retired-code-is-base", "empty-is-base"],
)
def test_get(code: str, found: str) -> None:
    assert LADDER.get(code).code == found


@pytest.mark.parametrize(
    ("tiers", "message"),
    [
        ((), "1 to 10 tiers"),
        (tuple(tier(f"T{i}", i * 10) for i in range(11)), "1 to 10 tiers"),
        ((tier("BLUE", 100),), "threshold 0"),
        ((tier("BLUE", 0), tier("gold", 10)), "UPPER_SNAKE"),
        ((tier("BLUE", 0), tier("1GOLD", 10)), "UPPER_SNAKE"),
        ((tier("A" + "B" * 32, 0),), "UPPER_SNAKE"),
        ((tier("BLUE", 0, "0.9"),), "multiplier between 1 and 10"),
        ((tier("BLUE", 0), tier("GOLD", 10, "10.01")), "multiplier between 1 and 10"),
        ((tier("BLUE", 0), tier("GOLD", 10**12 + 1)), "threshold out of range"),
        ((tier("BLUE", 0), tier("GOLD", 10), tier("SILVER", 10)), "must increase"),
        ((tier("BLUE", 0), tier("GOLD", 10), tier("SILVER", 5)), "must increase"),
        ((tier("BLUE", 0), tier("GOLD", 10), tier("GOLD", 20)), "unique"),
        ((tier("BLUE", 0), dt.Tier("GOLD\n", "Gold", 10, Decimal(1))), "UPPER_SNAKE"),
    ],
    ids=[
        "empty",
        "eleven-tiers",
        "base-threshold-not-zero",
        "lowercase-code",
        "leading-digit",
        "code-33-characters",
        "multiplier-below-one",
        "multiplier-above-ten",
        "threshold-too-large",
        "equal-thresholds",
        "decreasing-thresholds",
        "duplicate-code",
        "code-with-trailing-newline",
    ],
)
def test_unusable_ladders(tiers: tuple[dt.Tier, ...], message: str) -> None:
    with pytest.raises(dt.LadderError, match=message):
        dt.Ladder(tiers)


def test_the_largest_ladder_is_usable() -> None:
    top = tier("A" + "B" * 31, 10**12, "10")
    tiers = (*(tier(f"T{i}", i) for i in range(dt.TIERS_MAX - 1)), top)
    assert dt.Ladder(tiers).earned(10**12) == top


def test_ladder_from_config_fills_in_defaults() -> None:
    ladder = dt.ladder_from_config(
        [
            {"code": "MEMBER"},
            {"code": "VIP", "name": "V.I.P.", "threshold_points": 1_000, "multiplier": "1.5"},
            {"code": "INNER_CIRCLE", "threshold_points": 9_000, "multiplier": 2},
            {"code": "FOUNDER", "threshold_points": 20_000, "multiplier": 2.5},
        ]
    )
    assert ladder.tiers == (
        dt.Tier("MEMBER", "Member", 0, Decimal(1)),
        dt.Tier("VIP", "V.I.P.", 1_000, Decimal("1.5")),
        dt.Tier("INNER_CIRCLE", "Inner_Circle", 9_000, Decimal(2)),
        dt.Tier("FOUNDER", "Founder", 20_000, Decimal("2.5")),
    )


BASE_ENTRY: Mapping[str, object] = {"code": "BLUE"}


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([], "1 to 10 tiers"),
        ([{"name": "Blue"}], "tier 0: missing 'code'"),
        ([BASE_ENTRY, {"code": "GOLD", "threshold_points": "5000"}], "tier 1: .* integer"),
        ([BASE_ENTRY, {"code": "GOLD", "threshold_points": 5.0}], "tier 1: .* integer"),
        ([{"code": "BLUE", "threshold_points": True}], "tier 0: .* integer"),
        ([BASE_ENTRY, {"code": "GOLD", "multiplier": "lots"}], "tier 1: .* decimal"),
        ([BASE_ENTRY, {"code": "GOLD", "threshold_points": 5, "multiplier": "0.5"}], "between"),
        ([{"code": "BLUE", "threshold_points": 10}], "threshold 0"),
        (
            [BASE_ENTRY, {"code": "GOLD", "threshold_points": 5, "multiplier": float("nan")}],
            "multiplier",
        ),
    ],
    ids=[
        "no-tiers",
        "no-code",
        "threshold-as-string",
        "threshold-as-float",
        "threshold-as-bool",
        "multiplier-not-a-number",
        "multiplier-below-one",
        "base-threshold-not-zero",
        "nan-multiplier",
    ],
)
def test_bad_ladder_configuration(entries: list[Mapping[str, object]], message: str) -> None:
    with pytest.raises(dt.LadderError, match=message):
        dt.ladder_from_config(entries)


# -- time ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("when", "months", "expected"),
    [
        ("2026-01-15T08:30", 1, "2026-02-15T08:30"),
        ("2026-01-31T08:30", 1, "2026-02-28T08:30"),
        ("2028-01-31T08:30", 1, "2028-02-29T08:30"),
        ("2026-05-31T00:00", 1, "2026-06-30T00:00"),
        ("2026-12-15T00:00", 1, "2027-01-15T00:00"),
        ("2026-01-15T00:00", -1, "2025-12-15T00:00"),
        ("2026-03-31T00:00", -1, "2026-02-28T00:00"),
        ("2026-03-15T00:00", -14, "2025-01-15T00:00"),
        ("2026-01-10T12:00", 12, "2027-01-10T12:00"),
        ("2028-02-29T12:00", 12, "2029-02-28T12:00"),
        ("2028-02-29T12:00", -12, "2027-02-28T12:00"),
        ("2028-02-29T12:00", 48, "2032-02-29T12:00"),
        ("2026-07-04T00:00", 0, "2026-07-04T00:00"),
    ],
    ids=[
        "next-month",
        "jan-31-to-feb-28",
        "jan-31-to-feb-29-leap",
        "may-31-to-jun-30",
        "across-new-year",
        "back-across-new-year",
        "mar-31-back-to-feb-28",
        "back-fourteen-months",
        "a-year",
        "leap-day-plus-a-year",
        "leap-day-minus-a-year",
        "leap-day-to-leap-day",
        "zero",
    ],
)
def test_add_months_clamps_to_the_months_last_day(when: str, months: int, expected: str) -> None:
    later = dt.add_months(t(when), months)
    assert later == t(expected)
    assert later.tzinfo is UTC


@pytest.mark.parametrize(
    ("at", "start"),
    [
        ("2027-01-10T12:00", "2026-01-10T12:00"),
        ("2027-03-31T00:00", "2026-03-31T00:00"),
        ("2028-02-29T00:00", "2027-02-28T00:00"),
        ("2029-02-28T00:00", "2028-02-28T00:00"),
    ],
    ids=["a-year-back", "month-end", "from-leap-day", "to-before-leap-day"],
)
def test_window_start_is_twelve_months_back(at: str, start: str) -> None:
    assert dt.window_start(t(at)) == t(start)


# The window ending 2027-01-10T12:00 is [2026-01-10T12:00, 2027-01-10T12:00].
@pytest.mark.parametrize(
    ("history", "points"),
    [
        ([], 0),
        ([earn(1_000, "2026-01-10T12:00")], 1_000),
        ([earn(1_000, "2026-01-10T11:59:59")], 0),
        ([earn(1_000, "2027-01-10T12:00")], 1_000),
        ([earn(1_000, "2027-01-10T12:00:01")], 0),
        ([earn(1_000, "2026-06-01"), earn(2_000, "2026-12-01")], 3_000),
        ([earn(1_000, "2026-06-01"), reversal(400, "2026-06-01", "2026-06-02")], 600),
        ([earn(1_000, "2026-06-01"), reversal(400, "2026-06-01", "2027-01-11")], 1_000),
        ([earn(1_000, "2025-12-01"), reversal(1_000, "2025-12-01", "2026-02-01")], 0),
    ],
    ids=[
        "nothing",
        "window-start-included",
        "just-before-start",
        "window-end-included",
        "after-the-end",
        "sums-earns",
        "reversal-nets-its-earn",
        "reversal-recorded-later-not-yet-counted",
        "reversal-of-an-earn-outside-counts-with-it",
    ],
)
def test_window_points(history: list[dt.Qualifying], points: int) -> None:
    assert dt.window_points(history, t("2027-01-10T12:00")) == points


# -- decisions -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "points", "next_code", "to_next"),
    [
        ("BLUE", 0, "SILVER", 5_000),
        ("BLUE", 4_200, "SILVER", 800),
        ("SILVER", 6_000, "GOLD", 9_000),
        ("GOLD", 20_000, "PLATINUM", 30_000),
        ("PLATINUM", 70_000, None, 0),
        ("BLUE", 7_000, "SILVER", 0),
        ("SILVER", 1_000, "GOLD", 14_000),
        ("RUBY", 100, "SILVER", 4_900),
    ],
    ids=[
        "new-member",
        "almost-silver",
        "silver",
        "gold",
        "top-tier",
        "past-the-threshold-never-negative",
        "held-tier-with-few-points",
        "retired-code-counts-as-base",
    ],
)
def test_status_points_to_next_tier(
    code: str, points: int, next_code: str | None, to_next: int
) -> None:
    review_time = t("2027-01-10")
    standing = dt.status(LADDER, code, points, review_time)
    assert standing.tier == LADDER.get(code)
    assert (standing.next_tier.code if standing.next_tier else None) == next_code
    assert standing.points_to_next_tier == to_next
    assert (standing.qualifying_points, standing.review_time) == (points, review_time)


@pytest.mark.parametrize(
    ("current", "points", "reached"),
    [
        (BLUE, 4_999, None),
        (BLUE, 5_000, SILVER),
        (BLUE, 15_000, GOLD),
        (BLUE, 60_000, PLATINUM),
        (SILVER, 5_000, None),
        (SILVER, 15_000, GOLD),
        (GOLD, 5_000, None),
        (PLATINUM, 10**9, None),
    ],
    ids=[
        "short",
        "silver",
        "blue-to-gold-in-one-jump",
        "blue-to-platinum",
        "already-there",
        "silver-to-gold",
        "never-down",
        "top",
    ],
)
def test_upgrade(current: dt.Tier, points: int, reached: dt.Tier | None) -> None:
    assert dt.upgrade(LADDER, current, points) == reached


@pytest.mark.parametrize(
    ("current", "points", "after"),
    [
        (GOLD, 15_000, GOLD),
        (GOLD, 40_000, GOLD),
        (GOLD, 14_999, SILVER),
        (GOLD, 6_000, SILVER),
        (GOLD, 0, SILVER),
        (PLATINUM, 0, GOLD),
        (SILVER, 0, BLUE),
        (SILVER, 16_000, GOLD),
        (BLUE, 0, BLUE),
    ],
    ids=[
        "enough-keeps",
        "more-keeps",
        "one-short-moves-down",
        "silver-points-gold-to-silver",
        "nothing-gold-to-silver-not-blue",
        "nothing-platinum-to-gold",
        "nothing-silver-to-blue",
        "more-than-enough-lifts",
        "base-stays-base",
    ],
)
def test_review_moves_down_one_tier_at_most(current: dt.Tier, points: int, after: dt.Tier) -> None:
    assert dt.review(LADDER, current, points) == after


@pytest.mark.parametrize(
    ("current", "at", "review_time"),
    [
        (BLUE, "2026-01-10T12:00", None),
        (SILVER, "2026-01-10T12:00", "2027-01-10T12:00"),
        (GOLD, "2026-01-31T00:00", "2027-01-31T00:00"),
        (PLATINUM, "2028-02-29T09:00", "2029-02-28T09:00"),
    ],
    ids=["base-never-reviewed", "a-year-later", "month-end", "leap-day"],
)
def test_review_after(current: dt.Tier, at: str, review_time: str | None) -> None:
    expected = t(review_time) if review_time else None
    assert dt.review_after(LADDER, current, t(at)) == expected


# -- replay ----------------------------------------------------------------------------------

JAN_10 = "2026-01-10T12:00"
REPLAYS: list[tuple[str, list[dt.Qualifying], str, str, str | None, list[Change]]] = [
    (
        "blue-to-gold-in-one-jump",
        [earn(15_000, JAN_10)],
        "2026-01-11",
        "GOLD",
        "2027-01-10T12:00",
        [("2026-01-10T12:00:00+00:00", "BLUE", "GOLD", 15_000, "QUALIFIED")],
    ),
    (
        "climbs-step-by-step",
        [earn(3_000, JAN_10), earn(3_000, "2026-02-10"), earn(10_000, "2026-03-10")],
        "2026-04-01",
        "GOLD",
        "2027-03-10T00:00",
        [
            ("2026-02-10T00:00:00+00:00", "BLUE", "SILVER", 6_000, "QUALIFIED"),
            ("2026-03-10T00:00:00+00:00", "SILVER", "GOLD", 16_000, "QUALIFIED"),
        ],
    ),
    (
        "reversal-next-day-never-lowers-the-tier",
        [earn(5_000, JAN_10), reversal(5_000, JAN_10, "2026-01-11T12:00")],
        "2026-12-31",
        "SILVER",
        "2027-01-10T12:00",
        [("2026-01-10T12:00:00+00:00", "BLUE", "SILVER", 5_000, "QUALIFIED")],
    ),
    (
        "gold-kept-after-a-reversal-then-a-small-earn",
        [
            earn(15_000, JAN_10),
            reversal(10_000, JAN_10, "2026-01-11T12:00"),
            earn(100, "2026-02-01"),
        ],
        "2026-12-31",
        "GOLD",
        "2027-01-10T12:00",
        [("2026-01-10T12:00:00+00:00", "BLUE", "GOLD", 15_000, "QUALIFIED")],
    ),
    (
        "reversed-then-reviewed-drops-one-tier",
        [earn(5_000, JAN_10), reversal(5_000, JAN_10, "2026-01-11T12:00")],
        "2027-01-10T12:00",
        "BLUE",
        None,
        [
            ("2026-01-10T12:00:00+00:00", "BLUE", "SILVER", 5_000, "QUALIFIED"),
            ("2027-01-10T12:00:00+00:00", "SILVER", "BLUE", 0, "REVIEW"),
        ],
    ),
    (
        "review-a-year-later-with-too-few-drops-one-tier",
        [
            earn(15_000, JAN_10),
            reversal(10_000, JAN_10, "2026-01-11T12:00"),
            earn(6_000, "2026-06-01"),
        ],
        "2027-02-01",
        "SILVER",
        "2028-01-10T12:00",
        [
            ("2026-01-10T12:00:00+00:00", "BLUE", "GOLD", 15_000, "QUALIFIED"),
            ("2027-01-10T12:00:00+00:00", "GOLD", "SILVER", 11_000, "REVIEW"),
        ],
    ),
    (
        "review-with-nothing-is-gold-to-silver-not-blue",
        [earn(15_000, JAN_10), reversal(15_000, JAN_10, "2026-01-11T12:00")],
        "2027-02-01",
        "SILVER",
        "2028-01-10T12:00",
        [
            ("2026-01-10T12:00:00+00:00", "BLUE", "GOLD", 15_000, "QUALIFIED"),
            ("2027-01-10T12:00:00+00:00", "GOLD", "SILVER", 0, "REVIEW"),
        ],
    ),
    (
        "review-with-enough-keeps-silently",
        [earn(15_000, JAN_10), earn(15_000, "2026-12-01")],
        "2027-02-01",
        "GOLD",
        "2028-01-10T12:00",
        [("2026-01-10T12:00:00+00:00", "BLUE", "GOLD", 15_000, "QUALIFIED")],
    ),
    (
        "reversal-recorded-after-the-review-does-not-count-at-it",
        [
            earn(15_000, JAN_10),
            earn(15_000, "2026-12-01"),
            reversal(15_000, "2026-12-01", "2027-02-01"),
        ],
        "2027-03-01",
        "GOLD",
        "2028-01-10T12:00",
        [("2026-01-10T12:00:00+00:00", "BLUE", "GOLD", 15_000, "QUALIFIED")],
    ),
    (
        "reversal-recorded-before-the-review-counts-at-it",
        [
            earn(15_000, JAN_10),
            reversal(15_000, JAN_10, "2026-01-11T12:00"),
            earn(15_000, "2026-12-01"),
            reversal(15_000, "2026-12-01", "2026-12-20"),
        ],
        "2027-03-01",
        "SILVER",
        "2028-01-10T12:00",
        [
            ("2026-01-10T12:00:00+00:00", "BLUE", "GOLD", 15_000, "QUALIFIED"),
            ("2027-01-10T12:00:00+00:00", "GOLD", "SILVER", 0, "REVIEW"),
        ],
    ),
    (
        "late-replay-steps-down-a-tier-a-year",
        # The upgrading earn still counts at the first review (the window includes its start).
        [earn(50_000, JAN_10)],
        "2031-01-01",
        "BLUE",
        None,
        [
            ("2026-01-10T12:00:00+00:00", "BLUE", "PLATINUM", 50_000, "QUALIFIED"),
            ("2028-01-10T12:00:00+00:00", "PLATINUM", "GOLD", 0, "REVIEW"),
            ("2029-01-10T12:00:00+00:00", "GOLD", "SILVER", 0, "REVIEW"),
            ("2030-01-10T12:00:00+00:00", "SILVER", "BLUE", 0, "REVIEW"),
        ],
    ),
    (
        "review-runs-before-an-earn-at-the-same-instant",
        [
            earn(5_000, JAN_10),
            reversal(5_000, JAN_10, "2026-01-11T12:00"),
            earn(5_000, "2027-01-10T12:00"),
        ],
        "2027-01-11",
        "SILVER",
        "2028-01-10T12:00",
        [
            ("2026-01-10T12:00:00+00:00", "BLUE", "SILVER", 5_000, "QUALIFIED"),
            ("2027-01-10T12:00:00+00:00", "SILVER", "BLUE", 0, "REVIEW"),
            ("2027-01-10T12:00:00+00:00", "BLUE", "SILVER", 5_000, "QUALIFIED"),
        ],
    ),
    (
        "an-upgrade-restarts-the-review-clock",
        [earn(5_000, JAN_10), earn(10_000, "2026-06-01")],
        "2027-02-01",
        "GOLD",
        "2027-06-01T00:00",
        [
            ("2026-01-10T12:00:00+00:00", "BLUE", "SILVER", 5_000, "QUALIFIED"),
            ("2026-06-01T00:00:00+00:00", "SILVER", "GOLD", 15_000, "QUALIFIED"),
        ],
    ),
    (
        "leap-day-upgrade-is-reviewed-on-feb-28-with-its-own-earn-in-the-window",
        # As on any other date: the window includes its start, so the upgrading earn counts.
        [earn(15_000, "2028-02-29T12:00")],
        "2029-03-01",
        "GOLD",
        "2030-02-28T12:00",
        [("2028-02-29T12:00:00+00:00", "BLUE", "GOLD", 15_000, "QUALIFIED")],
    ),
    (
        "events-after-until-are-ignored",
        [earn(15_000, "2026-03-01")],
        "2026-02-28",
        "BLUE",
        None,
        [],
    ),
    ("no-history", [], "2030-01-01", "BLUE", None, []),
]


@pytest.mark.parametrize(
    ("history", "until", "code", "review_time", "expected"),
    [case[1:] for case in REPLAYS],
    ids=[case[0] for case in REPLAYS],
)
def test_replay(
    history: list[dt.Qualifying],
    until: str,
    code: str,
    review_time: str | None,
    expected: list[Change],
) -> None:
    reached, next_review, log = dt.replay(LADDER, history, t(until))
    assert reached.code == code
    assert next_review == (t(review_time) if review_time else None)
    assert changes(log) == expected


@pytest.mark.parametrize(
    ("history", "until"),
    [(case[1], case[2]) for case in REPLAYS],
    ids=[case[0] for case in REPLAYS],
)
def test_replay_does_not_depend_on_input_order(history: list[dt.Qualifying], until: str) -> None:
    shuffled = list(history)
    random.Random(7).shuffle(shuffled)
    expected = dt.replay(LADDER, history, t(until))
    assert dt.replay(LADDER, list(reversed(history)), t(until)) == expected
    assert dt.replay(LADDER, shuffled, t(until)) == expected


# Two changes recorded at the same instant (possible: the live system records each change at its
# transaction's create_time, and a FixedClock or a coarse clock gives equal times).
SAME_INSTANT = "2026-02-01T09:00"


# Their stored row ids (seq) give the order they were recorded in.
@pytest.mark.parametrize(
    "history",
    [
        [
            earn(4_000, JAN_10, seq=1),
            reversal(4_000, JAN_10, SAME_INSTANT, seq=2),
            earn(2_000, SAME_INSTANT, seq=3),
        ],
        [earn(5_000, SAME_INSTANT, seq=1), earn(1_000, SAME_INSTANT, seq=2)],
    ],
    ids=["reversal-and-earn-tier-differs", "two-earns-change-points-differ"],
)
def test_replay_does_not_depend_on_the_order_of_simultaneous_events(
    history: list[dt.Qualifying],
) -> None:
    until = t(SAME_INSTANT) + timedelta(days=1)
    assert dt.replay(LADDER, list(reversed(history)), until) == dt.replay(LADDER, history, until)
