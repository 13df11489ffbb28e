"""Member notices: the subject and text each outbox event renders to. Pure, no I/O."""

from __future__ import annotations

import pytest

from gateway.domain import notices
from gateway.domain.notices import NoticePayloadError, render

MEMBER = "members/m1"


def tier_changed(**changes: object) -> dict[str, object]:
    payload: dict[str, object] = {
        "member": MEMBER,
        "previous_tier": "SILVER",
        "tier": "GOLD",
        "direction": "UP",
        "reason": "QUALIFIED",
        "qualifying_points": 15_250,
        "change_time": "2026-01-05T12:00:00+00:00",
        "review_time": "2027-01-05T12:00:00+00:00",
    }
    return payload | changes


def voucher_issued(**changes: object) -> dict[str, object]:
    payload: dict[str, object] = {
        "member": MEMBER,
        "code": "ABCD-EFGH-JKMN-PQR7",
        "reward": "partners/hotel/rewards/free-night",
        "reward_display_name": "Free night at Grand Harbor",
        "points": 25_000,
        "transaction": "members/m1/transactions/t9",
        "issue_time": "2026-01-05T12:00:00+00:00",
        "expire_time": "2026-04-05T12:30:00+00:00",
    }
    return payload | changes


def rendered(event_type: str, payload: dict[str, object], name: str = "Ada") -> tuple[str, str]:
    result = render(event_type, payload, name)
    assert result is not None
    return result


# -- tiers -------------------------------------------------------------------------------------


def test_an_upgrade_congratulates_with_the_points_and_the_review_date() -> None:
    subject, text = rendered("TierChanged", tier_changed())
    assert subject == "You reached Gold"
    assert text == (
        "Hi Ada,\n"
        "\n"
        "Congratulations: you are now a Gold member (previously Silver).\n"
        "\n"
        "Your qualifying points: 15,250.\n"
        "Your next tier review is on 5 January 2027.\n"
    )


def test_a_downgrade_at_review_says_so_plainly() -> None:
    payload = tier_changed(
        previous_tier="GOLD", tier="SILVER", direction="DOWN", reason="REVIEW", qualifying_points=3
    )
    subject, text = rendered("TierChanged", payload)
    assert subject == "Your tier is now Silver"
    assert "Your tier changed from Gold to Silver at your yearly review." in text
    assert "Your qualifying points: 3." in text


def test_the_base_tier_has_no_review_date() -> None:
    payload = tier_changed(previous_tier="SILVER", tier="BLUE", direction="DOWN", review_time=None)
    subject, text = rendered("TierChanged", payload)
    assert subject == "Your tier is now Blue"
    assert "review" not in text


@pytest.mark.parametrize(
    ("code", "shown"),
    [
        pytest.param("GOLD", "Gold", id="one-word"),
        pytest.param("PLATINUM_ELITE", "Platinum Elite", id="snake"),
        pytest.param("TIER_2", "Tier 2", id="digits"),
    ],
)
def test_tier_codes_are_title_cased(code: str, shown: str) -> None:
    assert notices.tier_name(code) == shown


# -- points ------------------------------------------------------------------------------------


def test_points_expiring_names_the_amount_and_the_last_usable_day() -> None:
    # Points expire at the midnight that starts 5 January: 4 January is the last day to use them.
    payload = {"member": MEMBER, "points": 500, "expire_time": "2027-01-05T00:00:00+00:00"}
    subject, text = rendered("PointsExpiring", payload)
    assert subject == "500 points expire after 4 January 2027"
    assert text.startswith(
        "Hi Ada,\n\n500 points in your balance expire at the end of 4 January 2027 (UTC).\n"
    )


def test_points_expired_names_the_amount() -> None:
    payload = {"member": MEMBER, "points": 12_345, "expire_time": "2027-01-05T00:00:00+00:00"}
    subject, text = rendered("PointsExpired", payload)
    assert subject == "12,345 points expired"
    assert (
        "12,345 points expired at the end of 4 January 2027 and were removed from your balance."
        in text
    )


def test_one_point_is_singular() -> None:
    payload = {"member": MEMBER, "points": 1, "expire_time": "2027-01-05T00:00:00+00:00"}
    assert rendered("PointsExpiring", payload)[0] == "1 point expires after 4 January 2027"
    assert rendered("PointsExpired", payload)[0] == "1 point expired"


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        pytest.param("2027-01-05T23:30:00-05:00", "6 January 2027", id="offset-moves-to-utc"),
        pytest.param("2027-01-05T00:00:00Z", "4 January 2027", id="zulu-midnight-is-day-before"),
        pytest.param("2027-01-05T00:00:00", "4 January 2027", id="naive-is-utc"),
    ],
)
def test_dates_are_days_in_utc(raw: str, shown: str) -> None:
    payload = {"member": MEMBER, "points": 500, "expire_time": raw}
    assert rendered("PointsExpiring", payload)[0] == f"500 points expire after {shown}"


# -- vouchers ----------------------------------------------------------------------------------


def test_voucher_issued_gives_the_code_and_its_validity() -> None:
    subject, text = rendered("VoucherIssued", voucher_issued())
    assert subject == "Your voucher: Free night at Grand Harbor"
    assert "Code: ABCD-EFGH-JKMN-PQR7\n" in text
    assert "Valid until: 5 April 2026 at 12:30 UTC\n" in text
    assert "Paid with: 25,000 points\n" in text


def test_a_line_break_in_a_reward_name_cannot_split_the_subject() -> None:
    subject, _ = rendered("VoucherIssued", voucher_issued(reward_display_name="Free\r\nnight"))
    assert subject == "Your voucher: Free night"


def test_voucher_refunded_says_the_points_are_back() -> None:
    payload = {
        "member": MEMBER,
        "code": "ABCD-EFGH-JKMN-PQR7",
        "reward": "partners/hotel/rewards/free-night",
        "points": 25_000,
        "refund_transaction": "members/m1/transactions/t10",
    }
    subject, text = rendered("VoucherRefunded", payload)
    assert subject == "Your 25,000 points are back"
    assert "ABCD-EFGH-JKMN-PQR7 expired unused" in text


# -- greeting and the rest ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "greeting"),
    [
        pytest.param("Ada", "Hi Ada,", id="named"),
        pytest.param("", "Hello,", id="empty"),
        pytest.param("   ", "Hello,", id="blank"),
    ],
)
def test_the_greeting_uses_the_display_name(name: str, greeting: str) -> None:
    _, text = rendered("TierChanged", tier_changed(), name)
    assert text.splitlines()[0] == greeting


@pytest.mark.parametrize(
    "event_type",
    [
        pytest.param("VoucherConsumed", id="partner-only"),
        pytest.param("MemberEnrolled", id="unknown"),
        pytest.param("", id="empty"),
    ],
)
def test_events_members_are_not_told_about_render_to_none(event_type: str) -> None:
    assert render(event_type, {"member": MEMBER}, "Ada") is None


@pytest.mark.parametrize(
    ("event_type", "payload"),
    [
        pytest.param("PointsExpired", {"points": 5}, id="missing-field"),
        pytest.param(
            "PointsExpired", {"points": "5", "expire_time": "2027-01-05"}, id="points-as-text"
        ),
        pytest.param(
            "PointsExpired", {"points": True, "expire_time": "2027-01-05"}, id="points-as-bool"
        ),
        pytest.param("PointsExpired", {"points": 5, "expire_time": "soon"}, id="bad-time"),
        pytest.param("TierChanged", tier_changed(direction="SIDEWAYS"), id="bad-direction"),
    ],
)
def test_a_malformed_payload_is_a_payload_error(
    event_type: str, payload: dict[str, object]
) -> None:
    with pytest.raises(NoticePayloadError):
        render(event_type, payload, "Ada")
