"""What a member is told about an outbox event: a subject line and a plain text body.

    render("PointsExpiring", {"points": 500, "expire_time": "2027-01-06T00:00:00+00:00", ...},
           "Ada")
    -> ("500 points expire after 5 January 2027", "Hi Ada,\\n\\n500 points in your balance ...")

Events that members are not told about render to None. Numbers carry thousands separators,
dates read "5 January 2027" in UTC (the zone of every stored time), and tier codes are shown
title-cased ("PLATINUM_ELITE" -> "Platinum Elite"). The text is English; the payload carries
everything a translated template would need.

Errors::

    ValueError
     └── NoticePayloadError    a notifying event whose payload lacks a field or has the wrong type
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta

from gateway.domain.rules import money

TIER_CHANGED = "TierChanged"
POINTS_EXPIRING = "PointsExpiring"
POINTS_EXPIRED = "PointsExpired"
VOUCHER_ISSUED = "VoucherIssued"
VOUCHER_REFUNDED = "VoucherRefunded"
LINK_CODE = "LinkCode"
DONATION_MADE = "DonationMade"
PLEDGE_SKIPPED = "PledgeSkipped"

_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)  # not calendar.month_name: that one follows the process locale


class NoticePayloadError(ValueError):
    """The payload does not match its event type's schema (a bug where the event was written)."""


# -- reading the payload -----------------------------------------------------------------------


def _field(payload: Mapping[str, object], key: str) -> object:
    if key not in payload:
        raise NoticePayloadError(f"payload has no {key!r}")
    return payload[key]


def _int(payload: Mapping[str, object], key: str) -> int:
    value = _field(payload, key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise NoticePayloadError(f"payload {key!r} is not an integer: {value!r}")
    return value


def _str(payload: Mapping[str, object], key: str) -> str:
    value = _field(payload, key)
    if not isinstance(value, str):
        raise NoticePayloadError(f"payload {key!r} is not a string: {value!r}")
    return value


def _time(payload: Mapping[str, object], key: str) -> datetime:
    raw = _str(payload, key)
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise NoticePayloadError(f"payload {key!r} is not an ISO 8601 time: {raw!r}") from None
    # Stored times are UTC; a naive one is read as UTC rather than in the host's zone.
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _optional_time(payload: Mapping[str, object], key: str) -> datetime | None:
    return None if payload.get(key) is None else _time(payload, key)


# -- formatting --------------------------------------------------------------------------------


def points(count: int) -> str:
    """ "1 point", "1,500 points"."""
    return f"{count:,} point{'' if count == 1 else 's'}"


def day(when: datetime) -> str:
    """ "5 January 2027", in UTC."""
    when = when.astimezone(UTC)
    return f"{when.day} {_MONTHS[when.month - 1]} {when.year}"


def last_day(deadline: datetime) -> str:
    """The last day before a deadline: points that expire at midnight UTC starting 5 January
    are usable through 4 January."""
    return day(deadline - timedelta(microseconds=1))


def moment(when: datetime) -> str:
    """ "5 January 2027 at 14:30 UTC": for deadlines that fall at a precise time."""
    return f"{day(when)} at {when.astimezone(UTC):%H:%M} UTC"


def tier_name(code: str) -> str:
    """ "GOLD" -> "Gold", "PLATINUM_ELITE" -> "Platinum Elite"."""
    return " ".join(word.capitalize() for word in code.split("_") if word)


def _one_line(text: str) -> str:
    """Subjects are mail headers: a line break in a partner's reward name must not split one."""
    return " ".join(text.split())


def _greeting(display_name: str) -> str:
    name = _one_line(display_name)
    return f"Hi {name}," if name else "Hello,"


# -- the notices -------------------------------------------------------------------------------


def _tier_changed(payload: Mapping[str, object]) -> tuple[str, list[str]]:
    tier = tier_name(_str(payload, "tier"))
    previous = tier_name(_str(payload, "previous_tier"))
    qualifying = _int(payload, "qualifying_points")
    review = _optional_time(payload, "review_time")
    direction = _str(payload, "direction")
    if direction not in ("UP", "DOWN"):
        raise NoticePayloadError(f"payload 'direction' is not UP or DOWN: {direction!r}")
    if direction == "UP":
        subject = f"You reached {tier}"
        news = f"Congratulations: you are now a {tier} member (previously {previous})."
    else:
        subject = f"Your tier is now {tier}"
        news = f"Your tier changed from {previous} to {tier}"
        news += " at your yearly review." if _str(payload, "reason") == "REVIEW" else "."
    lines = [news, "", f"Your qualifying points: {qualifying:,}."]
    if review is not None:
        lines.append(f"Your next tier review is on {day(review)}.")
    return subject, lines


def _points_expiring(payload: Mapping[str, object]) -> tuple[str, list[str]]:
    count = _int(payload, "points")
    when = last_day(_time(payload, "expire_time"))
    verb = "expires" if count == 1 else "expire"
    return f"{points(count)} {verb} after {when}", [
        f"{points(count)} in your balance {verb} at the end of {when} (UTC).",
        "",
        "Use your points before then so they don't go to waste.",
    ]


def _points_expired(payload: Mapping[str, object]) -> tuple[str, list[str]]:
    count = _int(payload, "points")
    when = last_day(_time(payload, "expire_time"))
    verb = "was" if count == 1 else "were"
    return f"{points(count)} expired", [
        f"{points(count)} expired at the end of {when} and {verb} removed from your balance."
    ]


def _voucher_issued(payload: Mapping[str, object]) -> tuple[str, list[str]]:
    reward = _one_line(_str(payload, "reward_display_name"))
    return f"Your voucher: {reward}", [
        f"Here is your voucher for {reward}.",
        "",
        f"Code: {_str(payload, 'code')}",
        f"Valid until: {moment(_time(payload, 'expire_time'))}",
        f"Paid with: {points(_int(payload, 'points'))}",
        "",
        "Show the code when you use it. If it is not used in time, the points come back to you.",
    ]


def _voucher_refunded(payload: Mapping[str, object]) -> tuple[str, list[str]]:
    count = _int(payload, "points")
    verb = "is" if count == 1 else "are"
    return f"Your {points(count)} {verb} back", [
        f"Your voucher {_str(payload, 'code')} expired unused, so the {points(count)} "
        f"you paid for it {verb} back in your balance."
    ]


def _link_code(payload: Mapping[str, object]) -> tuple[str, list[str]]:
    code = _str(payload, "code")
    partner = _one_line(_str(payload, "partner_display_name"))
    return f"Your code to link your {_str(payload, 'account_kind')}", [
        f"{partner} asked to link your {_str(payload, 'account_kind')} to your membership.",
        "",
        f"Code: {code}",
        f"Valid until: {moment(_time(payload, 'expire_time'))}",
        "",
        "Give the code only to " + partner + ". If you did not ask for this, ignore this message:",
        "nothing is linked without the code.",
    ]


def _donation_made(payload: Mapping[str, object]) -> tuple[str, list[str]]:
    charity = _one_line(_str(payload, "charity_display_name"))
    count = _int(payload, "points")
    matched = _int(payload, "matched_points")
    value = money(
        _int(payload, "value_minor") + _int(payload, "matched_value_minor"),
        _str(payload, "currency"),
        _int(payload, "currency_exponent"),
    )
    if _str(payload, "kind") == "EXPIRING_PLEDGE":
        lines = [f"{points(count)} of yours were about to expire, so, as you pledged, they went"]
        lines.append(f"to {charity} instead.")
    else:
        lines = [f"You gave {points(count)} to {charity}."]
    if matched:
        lines.append(f"A sponsor matched your gift with {points(matched)} more.")
    lines += [
        "",
        f"{charity} receives {value}.",
        f"Receipt number: {_str(payload, 'receipt_number')}",
    ]
    return f"Thank you for your gift to {charity}", lines


def _pledge_skipped(payload: Mapping[str, object]) -> tuple[str, list[str]]:
    charity = _one_line(_str(payload, "charity_display_name"))
    count = _int(payload, "points")
    why = {
        "INSUFFICIENT_POINTS": "you did not have enough points available",
        "NEGATIVE_BALANCE": "your balance owes points from a refund until new points cover it",
        "CHARITY_NOT_ACCEPTING": f"{charity} is not taking donations at the moment",
        "BELOW_MINIMUM_DONATION": f"{charity} no longer takes a gift of this size",
    }.get(_str(payload, "reason"), "it could not be made")
    return f"This month's gift to {charity} was skipped", [
        f"Your monthly pledge of {points(count)} to {charity} was due on "
        f"{day(_time(payload, 'due_time'))}, but {why}.",
        "",
        "Nothing was taken from your balance. Your pledge continues next month.",
    ]


_NOTICES: dict[str, Callable[[Mapping[str, object]], tuple[str, list[str]]]] = {
    TIER_CHANGED: _tier_changed,
    POINTS_EXPIRING: _points_expiring,
    POINTS_EXPIRED: _points_expired,
    VOUCHER_ISSUED: _voucher_issued,
    VOUCHER_REFUNDED: _voucher_refunded,
    LINK_CODE: _link_code,
    DONATION_MADE: _donation_made,
    PLEDGE_SKIPPED: _pledge_skipped,
}


def render(
    event_type: str, payload: Mapping[str, object], display_name: str
) -> tuple[str, str] | None:
    """(subject, plain text body) telling the member about the event, or None for events
    that members are not told about. Raises NoticePayloadError for a malformed payload."""
    notice = _NOTICES.get(event_type)
    if notice is None:
        return None
    subject, lines = notice(payload)
    return _one_line(subject), "\n".join([_greeting(display_name), "", *lines]) + "\n"
