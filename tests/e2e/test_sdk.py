"""The partner SDK against a real server on port 0."""

from __future__ import annotations

import socket

import pytest

from coalition.v1 import donations_pb2, partners_pb2, rewards_pb2
from partners.sdk import (
    CoalitionClient,
    CoalitionError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    RetryPolicy,
    UnauthenticatedError,
    UnavailableError,
)


def wrong_check_digit(loyalty_number: str) -> str:
    return loyalty_number[:-1] + str((int(loyalty_number[-1]) + 1) % 10)


async def test_enrolled_member_is_found_by_loyalty_number_and_phone(gateway) -> None:
    _, key = await gateway.create_partner("grand-hotel")
    async with CoalitionClient(gateway.target, key) as client:
        enrolled = await client.enroll_member(
            "Ada Lovelace", phone_number="+14155550123", email="ada@example.com"
        )
        assert len(enrolled.loyalty_number) == 12
        assert enrolled.name.startswith("members/")
        by_number = await client.lookup_member(loyalty_number=enrolled.loyalty_number)
        by_phone = await client.lookup_member(phone_number="+14155550123")
        by_national = await client.lookup_member(phone_number="(415) 555-0123", default_region="US")
        by_name = await client.get_member(enrolled.name)
        assert by_number == by_phone == by_national == by_name == enrolled

        for ref in (enrolled.loyalty_number, enrolled.name, "+14155550123"):
            balance = await client.get_balance(ref)
            assert balance.available_points == 0
            assert balance.tier


async def test_replayed_request_id_returns_the_first_enrollment(gateway) -> None:
    _, key = await gateway.create_partner("grand-hotel")
    async with CoalitionClient(gateway.target, key) as client:
        first = await client.enroll_member("Ada", request_id="enroll-ada")
        again = await client.enroll_member("Ada", request_id="enroll-ada")
    assert again == first


async def test_wrong_check_digit_is_invalid_argument_on_loyalty_number(gateway) -> None:
    _, key = await gateway.create_partner("grand-hotel")
    async with CoalitionClient(gateway.target, key) as client:
        enrolled = await client.enroll_member("Ada Lovelace")
        with pytest.raises(InvalidArgumentError) as caught:
            await client.lookup_member(loyalty_number=wrong_check_digit(enrolled.loyalty_number))
    err = caught.value
    assert err.reason == "INVALID_LOYALTY_NUMBER"
    assert "loyalty_number" in [field for field, _ in err.field_violations]
    assert all(description for _, description in err.field_violations)
    assert err.attempts == 1


async def test_unknown_member_is_not_found(gateway) -> None:
    _, key = await gateway.create_partner("grand-hotel")
    async with CoalitionClient(gateway.target, key) as client:
        with pytest.raises(NotFoundError) as caught:
            await client.get_member("members/doesnotexist0")
    assert caught.value.reason == "MEMBER_NOT_FOUND"


async def test_bad_key_is_unauthenticated(gateway) -> None:
    async with CoalitionClient(gateway.target, "not-a-real-key") as client:
        with pytest.raises(UnauthenticatedError) as caught:
            await client.lookup_member(phone_number="+14155550123")
    assert caught.value.reason
    assert caught.value.attempts == 1


async def test_earn_then_overdraw_through_the_sdk(gateway) -> None:
    _, key = await gateway.create_partner("grand-hotel")  # 10 points per USD
    async with CoalitionClient(gateway.target, key) as client:
        member = await client.enroll_member("Ada Lovelace")
        earned = await client.earn_points(
            member.loyalty_number, amount_minor=12_34, currency_code="USD", category="room"
        )
        assert earned.points == 123 and earned.balance.available_points == 123
        with pytest.raises(FailedPreconditionError) as overdraw:
            await client.redeem_points(member.name, 124)
        spent = await client.redeem_points(member.name, 123)
    assert overdraw.value.reason == "INSUFFICIENT_POINTS"
    assert spent.balance.available_points == 0


async def test_reward_voucher_lifecycle_through_the_sdk(gateway) -> None:
    _, key = await gateway.create_partner("grand-hotel")  # 10 points per USD
    async with CoalitionClient(gateway.target, key) as client:
        reward = rewards_pb2.Reward(
            display_name="Free night",
            kind=rewards_pb2.Reward.KIND_FREE_NIGHT,
            points_price=1_000,
            stock=2,
        )
        reward.voucher_validity.FromSeconds(30 * 86_400)
        published = await client.create_reward(reward)
        listed = await client.list_rewards(partner="partners/grand-hotel", available_only=True)
        assert [r.name for r in listed.rewards] == [published.name]
        member = await client.enroll_member("Ada Lovelace")
        await client.earn_points(member.name, amount_minor=150_00, currency_code="USD")

        redeemed = await client.redeem_reward(member.name, published.name)
        code = redeemed.voucher.code
        checked = await client.validate_voucher(code.lower().replace("-", ""))
        used = await client.consume_voucher(code)
        with pytest.raises(FailedPreconditionError) as twice:
            await client.consume_voucher(code)

    assert redeemed.transaction.points == -1_000
    assert redeemed.transaction.balance.available_points == 500
    assert checked.valid and checked.voucher.code == code
    assert used.state == rewards_pb2.Voucher.STATE_CONSUMED
    assert twice.value.reason == "VOUCHER_ALREADY_CONSUMED"


async def test_a_donation_and_its_receipt_through_the_sdk(gateway) -> None:
    _, hotel_key = await gateway.create_partner("grand-hotel")  # 10 points per USD
    _, charity_key = await gateway.create_partner(
        "oceans",
        "CHARITY",
        display_name="Clean Oceans",
        charity=partners_pb2.CharityProfile(value_per_thousand_points_minor=10_00),
    )
    async with CoalitionClient(gateway.target, hotel_key) as hotel:
        member = await hotel.enroll_member("Ada Lovelace")
        await hotel.earn_points(member.name, amount_minor=150_00, currency_code="USD")
        charities = await hotel.list_charities()
        gift = await hotel.donate_points(member.name, charities.charities[0].name, 1_000)
        with pytest.raises(FailedPreconditionError) as overdraw:
            await hotel.donate_points(member.name, "charities/oceans", 1_000)
    async with CoalitionClient(gateway.target, charity_key) as charity:
        listed = await charity.list_donations("charities/oceans")
        receipt = await charity.get_donation_receipt(
            gift.donation.name, donations_pb2.RECEIPT_FORMAT_HTML
        )

    assert gift.donation.value.amount_minor == 10_00
    assert gift.transaction.balance.available_points == 500
    assert overdraw.value.reason == "INSUFFICIENT_POINTS"
    assert [d.name for d in listed.donations] == [gift.donation.name]
    assert gift.donation.receipt_number.encode() in receipt.document


async def test_a_wallet_card_through_the_sdk(start_gateway, tmp_path) -> None:
    from wallet_support import dev_certs

    from wallet.adapters.apns import ApnsClient, tls_context
    from wallet.adapters.pkpass import PassCredentials
    from wallet.config import Apple, Wallet
    from wallet.domain.card import Program

    certs = dev_certs(tmp_path)
    credentials = PassCredentials.load(certs.certificate, certs.key, certs.wwdr)
    program = Program(pass_type_id=credentials.pass_type_id(), team_id=credentials.team_id())
    apns = ApnsClient("https://127.0.0.1:9", tls_context(certs.certificate, certs.key, None))
    wallet = Wallet(program, apple=Apple(credentials, apns))
    gateway = await start_gateway(wallet=wallet)
    _, hotel_key = await gateway.create_partner("grand-hotel")
    async with CoalitionClient(gateway.target, hotel_key) as hotel:
        member = await hotel.enroll_member("Ada Lovelace")
        with pytest.raises(NotFoundError) as none_yet:
            await hotel.get_wallet_card(member.name)
        await hotel.earn_points(member.name, amount_minor=150_00, currency_code="USD")
        issued = await hotel.issue_wallet_card(member.name)
        card = await hotel.get_wallet_card(member.name)
    await wallet.aclose()

    assert none_yet.value.reason == "WALLET_CARD_NOT_FOUND"
    assert issued.pkpass[:2] == b"PK"  # a zip
    assert issued.google_save_url == ""  # Google Wallet is not set up here
    assert card.serial_number == issued.card.serial_number
    assert card.balance_points == 1_500


async def test_operator_creates_a_partner_and_its_key_through_the_sdk(gateway) -> None:
    async with CoalitionClient(gateway.target, gateway.operator_key) as operator:
        partner = await operator.create_partner(
            "city-rides", display_name="City Rides", type="RIDE_SHARE", base_earn_rate="2"
        )
        assert partner.name == "partners/city-rides"
        api_key, secret = await operator.create_api_key("city-rides", display_name="prod")
        assert api_key.name.startswith("partners/city-rides/apiKeys/") and secret
    async with CoalitionClient(gateway.target, secret) as partner_client:
        member = await partner_client.enroll_member("Grace Hopper")
        assert member.loyalty_number
        with pytest.raises(PermissionDeniedError) as caught:
            await partner_client.create_api_key(partner.name)
    assert caught.value.reason == "OPERATOR_ONLY"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_unreachable_gateway_is_unavailable_after_exactly_the_attempts() -> None:
    retries: list[tuple[int, CoalitionError]] = []
    policy = RetryPolicy(
        attempts_max=3,
        backoff_s_initial=0.01,
        backoff_s_max=0.01,
        on_retry=lambda attempt, err, _delay: retries.append((attempt, err)),
    )
    async with CoalitionClient(f"127.0.0.1:{free_port()}", "k", retry=policy) as client:
        with pytest.raises(UnavailableError) as caught:
            await client.lookup_member(phone_number="+14155550123")
    assert caught.value.attempts == 3
    assert [attempt for attempt, _ in retries] == [1, 2]
    assert all(isinstance(err, UnavailableError) for _, err in retries)
