"""Donations of points to charities, matching by sponsors, and pledges: pure rules.

A charity is a partner of type CHARITY with a profile: what members read about it, the smallest
donation it takes, and what its points are worth. A donation of P points is worth
P * value_per_thousand / 1000 minor units of the charity's settlement currency, rounded down
(the coalition never promises a charity a fraction of a cent it does not owe).

Matching: a sponsor (any partner but a charity) funds a campaign for one charity over a
period: `percent` matched points per 100 donated, out of a budget of points. A donation made
while the campaign is live gets min(points * percent / 100 rounded down, budget left): the
donation that reaches the budget is matched in part, and no later one at all. At most one
campaign matches a charity at any moment. Donations from expiring points are not matched: the
member gives up nothing they could have kept.

Pledges::

    MONTHLY    `points` go to the charity once a month, from the pledge's start; a month the
               member cannot afford is skipped (and they are told), never made up later
    EXPIRING   whatever of the member's points would expire goes to the charity instead of
               breakage, whatever the amount (the charity's minimum does not apply)

A pledge lasts until it is cancelled; a member has at most one EXPIRING pledge and a bounded
number of MONTHLY ones.

Receipt numbers read "D2026-0000001234" plus a Luhn check digit: the year of the donation and
its sequence number, unique across the network and typed back without ambiguity.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from stdnum import luhn

from gateway.domain.errors import FailedPrecondition, InvalidArgument, require
from gateway.domain.ledger import POINTS_PER_TRANSACTION_MAX
from gateway.domain.tiers import add_months

DESCRIPTION_CHARS_MAX = 2_000
CAUSES_MAX = 10
CAUSE_CHARS_MAX = 40
VALUE_PER_THOUSAND_MINOR_MAX = 1_000_000_000
"""A thousand points worth more than ten million dollars is a typo."""
MATCHING_PERCENT_MAX = 1_000
"""Ten matched points per donated point; a richer promise is a mistake."""
MATCHING_DURATION_MAX = timedelta(days=2 * 366)
MONTHLY_PLEDGES_PER_MEMBER_MAX = 10
PLEDGE_START_AHEAD_MAX = timedelta(days=366)
RECEIPT_SEQ_DIGITS = 10
_CAUSE = re.compile(rf"^[A-Z][A-Z0-9_]{{1,{CAUSE_CHARS_MAX - 1}}}$")
_RECEIPT = re.compile(rf"^D(\d{{4}})-(\d{{{RECEIPT_SEQ_DIGITS}}})(\d)$")


@dataclass(frozen=True)
class CharityProfile:
    """What a charity shows members and what its points are worth."""

    description: str = ""
    causes: tuple[str, ...] = ()
    minimum_donation_points: int = 1
    value_per_thousand_minor: int = 0
    """Minor units of the charity's settlement currency per 1,000 donated points."""
    paused: bool = False
    """Set by the operator to stop donations (the charity is not listed and takes nothing)."""

    @property
    def accepting(self) -> bool:
        """Listed and taking donations: not paused, and its points are worth something (a
        charity nobody priced would take members' points for nothing)."""
        return not self.paused and self.value_per_thousand_minor > 0


class DonationKind(enum.StrEnum):
    ONE_OFF = "ONE_OFF"
    MONTHLY_PLEDGE = "MONTHLY_PLEDGE"
    EXPIRING_PLEDGE = "EXPIRING_PLEDGE"


class PledgeKind(enum.StrEnum):
    MONTHLY = "MONTHLY"
    EXPIRING = "EXPIRING"


def validate_profile(profile: CharityProfile, prefix: str = "partner.charity") -> CharityProfile:
    description = profile.description.strip()
    require(
        len(description) <= DESCRIPTION_CHARS_MAX,
        f"{prefix}.description",
        "FIELD_TOO_LONG",
        f"at most {DESCRIPTION_CHARS_MAX:,} characters",
    )
    require(
        len(profile.causes) <= CAUSES_MAX,
        f"{prefix}.causes",
        "TOO_MANY_CAUSES",
        f"at most {CAUSES_MAX}",
    )
    for i, cause in enumerate(profile.causes):
        require(
            bool(_CAUSE.fullmatch(cause)),
            f"{prefix}.causes[{i}]",
            "INVALID_CAUSE",
            f"2 to {CAUSE_CHARS_MAX} of A-Z, 0-9 and _, starting with a letter (EDUCATION)",
        )
    require(
        1 <= profile.minimum_donation_points <= POINTS_PER_TRANSACTION_MAX,
        f"{prefix}.minimum_donation_points",
        "OUT_OF_RANGE",
        f"between 1 and {POINTS_PER_TRANSACTION_MAX:,}",
    )
    require(
        0 <= profile.value_per_thousand_minor <= VALUE_PER_THOUSAND_MINOR_MAX,
        f"{prefix}.value_per_thousand_points_minor",
        "OUT_OF_RANGE",
        f"between 0 and {VALUE_PER_THOUSAND_MINOR_MAX:,} minor units",
    )
    return replace(profile, description=description, causes=tuple(dict.fromkeys(profile.causes)))


def value_minor(points: int, value_per_thousand_minor: int) -> int:
    """The money a donation of `points` is worth, rounded down to the minor unit."""
    return points * value_per_thousand_minor // 1000


def check_donation(points: int, profile: CharityProfile, field: str = "points") -> None:
    require(
        0 < points <= POINTS_PER_TRANSACTION_MAX,
        field,
        "INVALID_POINTS",
        f"between 1 and {POINTS_PER_TRANSACTION_MAX:,}",
    )
    if points < profile.minimum_donation_points:  # the charity's setting: it may change
        raise FailedPrecondition(
            "BELOW_MINIMUM_DONATION",
            f"this charity takes donations of at least {profile.minimum_donation_points:,} points",
            {"field": field, "minimum_donation_points": str(profile.minimum_donation_points)},
        )


# -- receipts --------------------------------------------------------------------------------


def receipt_number(seq: int, year: int) -> str:
    digits = f"{seq:0{RECEIPT_SEQ_DIGITS}d}"
    return f"D{year:04d}-{digits}{luhn.calc_check_digit(digits)}"


def parse_receipt_number(raw: str) -> tuple[int, int] | None:
    """(year, seq) of a well-formed receipt number whose check digit matches, else None."""
    found = _RECEIPT.fullmatch(raw.strip().upper())
    if found is None or not luhn.is_valid(found.group(2) + found.group(3)):
        return None
    return int(found.group(1)), int(found.group(2))


@dataclass(frozen=True)
class Donation:
    id: str
    seq: int
    charity_id: str
    member_id: str
    kind: DonationKind
    points: int
    matched_points: int
    sponsor_id: str | None
    matching_campaign_id: str | None
    value_minor: int
    matched_value_minor: int
    currency: str
    transaction_id: str
    create_time: datetime
    pledge_id: str | None = None

    @property
    def name(self) -> str:
        return f"charities/{self.charity_id}/donations/{self.id}"

    @property
    def receipt_number(self) -> str:
        return receipt_number(self.seq, self.create_time.year)


@dataclass(frozen=True)
class Receipt:
    """What a donation receipt says; rendered as data, HTML or PDF."""

    receipt_number: str
    donation: str
    charity: str
    charity_display_name: str
    donor_name: str
    donate_time: datetime
    points: int
    matched_points: int
    value_minor: int
    matched_value_minor: int
    currency: str
    currency_exponent: int
    sponsor_display_name: str = ""
    kind: DonationKind = DonationKind.ONE_OFF


# -- matching --------------------------------------------------------------------------------


@dataclass(frozen=True)
class MatchingDraft:
    sponsor_id: str
    charity_id: str
    percent: int
    budget_points: int
    start_time: datetime
    end_time: datetime


@dataclass(frozen=True)
class MatchingCampaign:
    id: str
    sponsor_id: str
    charity_id: str
    percent: int
    budget_points: int
    spent_points: int
    start_time: datetime
    end_time: datetime
    stop_time: datetime | None
    create_time: datetime

    @property
    def name(self) -> str:
        return f"charities/{self.charity_id}/matchingCampaigns/{self.id}"

    def live(self, at: datetime) -> bool:
        return self.start_time <= at < self.end_time and self.stop_time is None

    @property
    def budget_left(self) -> int:
        return max(self.budget_points - self.spent_points, 0)


def validate_matching(draft: MatchingDraft, now: datetime) -> MatchingDraft:
    require(
        1 <= draft.percent <= MATCHING_PERCENT_MAX,
        "matching_campaign.percent",
        "OUT_OF_RANGE",
        f"between 1 and {MATCHING_PERCENT_MAX} matched points per 100 donated",
    )
    require(
        1 <= draft.budget_points <= POINTS_PER_TRANSACTION_MAX,
        "matching_campaign.budget_points",
        "OUT_OF_RANGE",
        f"between 1 and {POINTS_PER_TRANSACTION_MAX:,}",
    )
    require(
        draft.sponsor_id != draft.charity_id,
        "matching_campaign.sponsor",
        "SPONSOR_IS_CHARITY",
        "a charity cannot match donations to itself",
    )
    start = max(draft.start_time, now)  # a start in the past means now: nothing is retroactive
    require(
        draft.end_time > start,
        "matching_campaign.end_time",
        "INVALID_TIME_RANGE",
        "the campaign must end after it starts, and in the future",
    )
    require(
        draft.end_time - start <= MATCHING_DURATION_MAX,
        "matching_campaign.end_time",
        "INVALID_TIME_RANGE",
        f"a campaign lasts at most {MATCHING_DURATION_MAX.days} days",
    )
    return replace(draft, start_time=start)


def matched_points(points: int, campaign: MatchingCampaign | None, at: datetime) -> int:
    """Points the campaign adds to a donation of `points` made at `at`."""
    if campaign is None or not campaign.live(at):
        return 0
    return min(points * campaign.percent // 100, campaign.budget_left)


# -- pledges ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pledge:
    id: str
    member_id: str
    charity_id: str
    kind: PledgeKind
    points: int
    """MONTHLY: the points given each month; EXPIRING: 0 (whatever expires)."""
    next_run_time: datetime | None
    """MONTHLY: when the next donation is due; None for EXPIRING."""
    create_time: datetime
    cancel_time: datetime | None
    partner_id: str | None
    """The partner that took the pledge for the member; None for the operator (member apps)."""

    @property
    def name(self) -> str:
        return f"members/{self.member_id}/pledges/{self.id}"


def check_pledge(kind: PledgeKind, points: int, profile: CharityProfile) -> int:
    """The points of a new pledge: the monthly amount, or 0 for an EXPIRING one."""
    if kind is PledgeKind.EXPIRING:
        require(
            points == 0,
            "pledge.points",
            "POINTS_NOT_ALLOWED",
            "an EXPIRING pledge gives whatever would expire; leave points at 0",
        )
        return 0
    check_donation(points, profile, "pledge.points")
    return points


def next_run(previous: datetime, start: datetime, now: datetime) -> datetime:
    """The first monthly date after `now`, counted from `start` so that the day of the month
    does not drift after a short month (31 Jan, 28 Feb, 31 Mar)."""
    months = (previous.year - start.year) * 12 + previous.month - start.month + 1
    following = add_months(start, months)
    while following <= now:
        months += 1
        following = add_months(start, months)
    return following


_ID = r"([0-9a-z]{1,64})"
_CHARITY = r"charities/([a-z][a-z0-9-]{1,53}[a-z0-9])"
_PLEDGE_NAME = re.compile(rf"members/([a-z0-9]{{1,40}})/pledges/{_ID}")
_CHARITY_NAME = re.compile(_CHARITY)
_DONATION_NAME = re.compile(rf"{_CHARITY}/donations/{_ID}")
_MATCHING_NAME = re.compile(rf"{_CHARITY}/matchingCampaigns/{_ID}")


def _parse(pattern: re.Pattern[str], name: str, field: str, reason: str, shape: str) -> list[str]:
    found = pattern.fullmatch(name)
    if found is None:
        raise InvalidArgument.on_field(field, reason, f'expected "{shape}"')
    return list(found.groups())


def parse_pledge_name(name: str, field: str = "name") -> tuple[str, str]:
    member, pledge = _parse(
        _PLEDGE_NAME, name, field, "INVALID_PLEDGE_NAME", "members/{member}/pledges/{pledge}"
    )
    return member, pledge


def parse_charity_name(name: str, field: str = "charity") -> str:
    (charity,) = _parse(_CHARITY_NAME, name, field, "INVALID_CHARITY_NAME", "charities/{charity}")
    return charity


def parse_donation_name(name: str, field: str = "name") -> tuple[str, str]:
    charity, donation = _parse(
        _DONATION_NAME,
        name,
        field,
        "INVALID_DONATION_NAME",
        "charities/{charity}/donations/{donation}",
    )
    return charity, donation


def parse_matching_name(name: str, field: str = "name") -> tuple[str, str]:
    charity, campaign = _parse(
        _MATCHING_NAME,
        name,
        field,
        "INVALID_MATCHING_CAMPAIGN_NAME",
        "charities/{charity}/matchingCampaigns/{campaign}",
    )
    return charity, campaign


# -- reporting -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CharityTotal:
    """One charity's donations over a period: what the coalition owes it."""

    charity_id: str
    charity_display_name: str
    currency: str
    currency_exponent: int
    donations: int
    donors: int
    points: int
    matched_points: int
    value_minor: int
    matched_value_minor: int
    """Owed to the charity as well, funded by the sponsors."""

    @property
    def owed_minor(self) -> int:
        return self.value_minor + self.matched_value_minor


@dataclass(frozen=True)
class SponsorTotal:
    sponsor_id: str
    sponsor_display_name: str
    charity_id: str
    currency: str
    matched_points: int
    matched_value_minor: int
    currency_exponent: int = 2


@dataclass(frozen=True)
class DailyTotal:
    charity_id: str
    day: datetime
    points: int
    matched_points: int


@dataclass(frozen=True)
class DonationsReport:
    period: str
    """"2026-11": the UTC calendar month reported."""
    start_time: datetime
    end_time: datetime
    charities: tuple[CharityTotal, ...]
    sponsors: tuple[SponsorTotal, ...]
    daily: tuple[DailyTotal, ...]
    generate_time: datetime
