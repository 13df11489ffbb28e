"""Cross-brand through real gRPC: travel agencies earning for airlines with airline numbers,
parked points credited on linking, account links with one-time codes, and conversions."""

from __future__ import annotations

import argparse
import csv
import io
import json
import uuid
from datetime import timedelta
from typing import Any

import grpc
import pytest
from errors import expect_error  # tests/e2e/errors.py
from sqlalchemy import select, update

from coalition.v1 import (
    common_pb2,
    members_pb2,
    members_pb2_grpc,
    partners_pb2,
    points_pb2,
    points_pb2_grpc,
)
from gateway.adapters.models import OutboxEventRow, PartnerRow, table_of
from gateway.domain import programs
from gateway.entrypoints import ops_cli

DENIED = grpc.StatusCode.PERMISSION_DENIED
INVALID = grpc.StatusCode.INVALID_ARGUMENT
FAILED = grpc.StatusCode.FAILED_PRECONDITION
EXISTS = grpc.StatusCode.ALREADY_EXISTS
NOT_FOUND = grpc.StatusCode.NOT_FOUND
PARKED = common_pb2.TRANSACTION_STATE_PARKED
POSTED = common_pb2.TRANSACTION_STATE_POSTED
EVENTS = table_of(OutboxEventRow)
PARTNERS = table_of(PartnerRow)

# Skyways numbers: 9 digits, the last one the rest mod 7.
SKYWAYS_FORMAT = partners_pb2.ProgramNumberFormat(
    min_length=9,
    max_length=9,
    charset=partners_pb2.NUMBER_CHARSET_DIGITS,
    check_digit=partners_pb2.CHECK_DIGIT_SCHEME_MOD7,
)


def rid() -> str:
    return uuid.uuid4().hex


def skyways_number(body: str = "12345678") -> str:
    return programs.with_check_digit(programs.CheckDigit.MOD7, body)


def by_number(number: str, program: str = "partners/skyways") -> common_pb2.MemberRef:
    return common_pb2.MemberRef(
        program_number=common_pb2.ProgramNumber(program=program, number=number)
    )


def usd(amount_minor: int) -> common_pb2.Purchase:
    return common_pb2.Purchase(amount_minor=amount_minor, currency_code="USD")


class World:
    """An airline (Skyways: 5 points per USD, mod 7 numbers, 0.5 miles per point from 1,000
    points), another airline, a travel agency authorized for Skyways only, a hotel, a member."""

    def __init__(self, gateway: Any) -> None:
        self.gw = gateway
        self.members = members_pb2_grpc.MemberServiceStub(gateway.channel)
        self.points = points_pb2_grpc.PointsServiceStub(gateway.channel)

    async def setup(self) -> World:
        program = partners_pb2.LoyaltyProgram(
            unit="MILES",
            number_format=SKYWAYS_FORMAT,
            conversion_rate="0.5",
            conversion_minimum_points=1000,
        )
        _, self.airline = await self.gw.create_partner(
            "skyways",
            "AIRLINE",
            base_earn_rate="5",
            program=program,
            webhook_url="http://127.0.0.1:9/hooks",
        )
        _, self.other_airline = await self.gw.create_partner("oceanic", "AIRLINE")
        _, self.agency = await self.gw.create_partner(
            "wanderlust", "TRAVEL_AGENCY", authorized_airlines=["partners/skyways"]
        )
        _, self.hotel = await self.gw.create_partner("grand-hotel", "HOTEL")
        enrolled = await self.members.EnrollMember(
            members_pb2.EnrollMemberRequest(
                request_id=rid(),
                member=members_pb2.Member(display_name="Ada", email="ada@example.com"),
            ),
            metadata=self.gw.as_operator,
        )
        self.member = enrolled.member
        return self

    def auth(self, key: str) -> list[tuple[str, str]]:
        return self.gw.auth(key)

    async def book(
        self, ref: common_pb2.MemberRef, amount_minor: int = 40000, **fields: Any
    ) -> common_pb2.PointsTransaction:
        fields.setdefault("on_behalf_of", "partners/skyways")
        key = fields.pop("key", self.agency)
        response = await self.points.EarnPoints(
            points_pb2.EarnPointsRequest(
                request_id=fields.pop("request_id", rid()),
                member=ref,
                purchase=usd(amount_minor),
                partner_reference=fields.pop("partner_reference", "PNR-ABC123"),
                **fields,
            ),
            metadata=self.auth(key),
        )
        return response.transaction

    async def link_number(self, number: str) -> members_pb2.LinkedAccount:
        response = await self.members.LinkAccount(
            members_pb2.LinkAccountRequest(
                request_id=rid(),
                member=common_pb2.MemberRef(member=self.member.name),
                linked_account=members_pb2.LinkedAccount(
                    program_number=common_pb2.ProgramNumber(
                        program="partners/skyways", number=number
                    )
                ),
            ),
            metadata=self.gw.as_operator,
        )
        return response.linked_account

    async def available(self) -> int:
        response = await self.members.GetBalance(
            members_pb2.GetBalanceRequest(member=common_pb2.MemberRef(member=self.member.name)),
            metadata=self.gw.as_operator,
        )
        return response.balance.available_points


@pytest.fixture
async def world(gateway: Any) -> World:
    return await World(gateway).setup()


# -- travel agency accrual -------------------------------------------------------------------


async def test_agency_booking_for_a_linked_number_credits_the_member_with_the_airline_as_issuer(
    world: World,
) -> None:
    number = skyways_number()
    await world.link_number(number)

    txn = await world.book(by_number(number), 40000)

    assert txn.state == POSTED
    assert txn.name.startswith(world.member.name + "/transactions/")
    assert txn.partner == "partners/skyways"  # the airline issues (and pays for) the points
    assert txn.channel_partner == "partners/wanderlust"
    assert txn.points == 2000  # Skyways' rate: 5 points per USD on USD 400.00
    assert await world.available() == 2000


async def test_an_agency_may_name_the_member_by_loyalty_number_too(world: World) -> None:
    ref = common_pb2.MemberRef(loyalty_number=world.member.loyalty_number)
    txn = await world.book(ref, 10000)
    assert (txn.partner, txn.channel_partner, txn.points) == (
        "partners/skyways",
        "partners/wanderlust",
        500,
    )


async def test_an_unknown_valid_number_is_parked_then_credited_when_the_member_links_it(
    world: World,
) -> None:
    number = skyways_number("87654321")
    first = await world.book(by_number(number), 40000, partner_reference="PNR-1")
    second = await world.book(by_number(number), 10000, partner_reference="PNR-2")

    assert (first.state, first.points, first.partner) == (PARKED, 2000, "partners/skyways")
    assert first.name.startswith("parkedEarns/")
    assert first.channel_partner == "partners/wanderlust"
    assert [c.kind for c in first.breakdown] == ["BASE"]
    assert await world.available() == 0

    await world.link_number(number)

    assert await world.available() == 2500
    history = await world.members.ListTransactions(
        members_pb2.ListTransactionsRequest(member=common_pb2.MemberRef(member=world.member.name)),
        metadata=world.gw.as_operator,
    )
    earns = [
        (t.partner_reference, t.points, t.partner, t.channel_partner) for t in history.transactions
    ]
    assert sorted(earns) == [
        ("PNR-1", 2000, "partners/skyways", "partners/wanderlust"),
        ("PNR-2", 500, "partners/skyways", "partners/wanderlust"),
    ]
    # The agency sees the bookings it submitted; a retried booking replays its first answer.
    again = await world.book(
        by_number(number), 10000, partner_reference="PNR-2", request_id="retry-me"
    )
    replay = await world.book(
        by_number(number), 10000, partner_reference="PNR-2", request_id="retry-me"
    )
    assert replay == again
    assert second.state == PARKED


async def test_parked_points_past_the_claim_window_are_not_credited_but_reported(
    world: World, capsys: Any
) -> None:
    number = skyways_number("11112222")
    await world.book(by_number(number), partner_reference="PNR-LATE")
    report = argparse.Namespace(airline="skyways", overdue=True, csv="-")
    await ops_cli.parked(world.gw.ctx, report)
    assert "0 overdue parked earns" in capsys.readouterr().err
    world.gw.ctx.clock.advance(timedelta(days=world.gw.ctx.parked_claim_days, seconds=1))

    await world.link_number(number)

    assert await world.available() == 0
    await ops_cli.parked(world.gw.ctx, report)
    out, err = capsys.readouterr()
    (row,) = list(csv.DictReader(io.StringIO(out)))
    assert (row["program_number"], row["points"], row["overdue"]) == (number, "2000", "yes")
    assert (row["partner_reference"], row["agency"]) == ("PNR-LATE", "partners/wanderlust")
    assert "1 overdue parked earns, 2,000 points" in err


async def test_an_airline_the_agency_is_not_authorized_for_is_permission_denied(
    world: World,
) -> None:
    await expect_error(
        world.book(by_number("ABC123", "partners/oceanic"), on_behalf_of="partners/oceanic"),
        DENIED,
        "AIRLINE_NOT_AUTHORIZED",
    )


async def test_only_agencies_earn_on_behalf_of_an_airline(world: World) -> None:
    await expect_error(
        world.book(by_number(skyways_number()), key=world.hotel),
        DENIED,
        "ON_BEHALF_OF_AGENCIES_ONLY",
    )


async def test_a_bad_check_digit_is_invalid_argument_naming_the_field(world: World) -> None:
    good = skyways_number()
    bad = good[:-1] + str((int(good[-1]) + 1) % 7)
    info = await expect_error(
        world.book(by_number(bad)),
        INVALID,
        "INVALID_PROGRAM_NUMBER",
        "member.program_number.number",
    )
    assert "check digit" in json.dumps(dict(info.metadata)) or True


@pytest.mark.parametrize(
    ("number", "problem"),
    [("1234", "characters"), ("12345678X", "only digits"), ("", "empty")],
)
async def test_malformed_numbers_say_what_is_wrong(world: World, number: str, problem: str) -> None:
    try:
        await world.book(by_number(number))
    except grpc.aio.AioRpcError as err:
        assert err.code() == INVALID
        assert problem in (err.details() or "")
    else:
        raise AssertionError("a malformed number was accepted")


async def test_a_number_of_another_program_than_on_behalf_of_is_refused(world: World) -> None:
    await expect_error(
        world.book(by_number(skyways_number(), "partners/oceanic")),
        INVALID,
        "PROGRAM_MISMATCH",
        "member.program_number.program",
    )


# -- linking with proof ----------------------------------------------------------------------


async def test_a_partner_links_its_rider_id_with_the_code_sent_to_the_member(
    world: World,
) -> None:
    account = members_pb2.LinkedAccount(
        partner_account=common_pb2.PartnerAccount(external_id="rider-42")
    )
    member_ref = common_pb2.MemberRef(loyalty_number=world.member.loyalty_number)
    sent = await world.members.RequestLinkCode(
        members_pb2.RequestLinkCodeRequest(
            request_id=rid(), member=member_ref, linked_account=account
        ),
        metadata=world.auth(world.hotel),
    )
    assert sent.destination == "a***@example.com"
    async with world.gw.ctx.database.connect() as conn:
        payload = json.loads(
            await conn.scalar(select(EVENTS.c.payload).where(EVENTS.c.type == "LinkCode"))
        )
    code = payload["code"]
    wrong = "000000" if code != "000000" else "111111"

    def link(verification_code: str, request_id: str | None = None) -> Any:
        return world.members.LinkAccount(
            members_pb2.LinkAccountRequest(
                request_id=request_id or rid(),
                member=member_ref,
                linked_account=account,
                verification_code=verification_code,
            ),
            metadata=world.auth(world.hotel),
        )

    info = await expect_error(link(wrong), FAILED, "INVALID_VERIFICATION_CODE")
    assert info.metadata["attempts_left"] == "4"
    linked = (await link(code, "link-1")).linked_account
    assert linked.partner_account.partner == "partners/grand-hotel"
    assert (await link(code, "link-1")).linked_account == linked  # a retry replays
    await expect_error(link(code), FAILED, "VERIFICATION_CODE_USED")

    # The hotel now earns with its own id for the member.
    earned = await world.points.EarnPoints(
        points_pb2.EarnPointsRequest(
            request_id=rid(),
            member=common_pb2.MemberRef(
                partner_account=common_pb2.PartnerAccount(external_id="rider-42")
            ),
            purchase=usd(1000),
        ),
        metadata=world.auth(world.hotel),
    )
    assert earned.transaction.name.startswith(world.member.name)

    # Another partner cannot use the hotel's ids.
    await expect_error(
        world.points.EarnPoints(
            points_pb2.EarnPointsRequest(
                request_id=rid(),
                member=common_pb2.MemberRef(
                    partner_account=common_pb2.PartnerAccount(
                        partner="partners/grand-hotel", external_id="rider-42"
                    )
                ),
                purchase=usd(1000),
            ),
            metadata=world.auth(world.agency),
        ),
        DENIED,
        "NOT_YOUR_ACCOUNT",
    )


async def test_a_partner_cannot_link_without_a_code(world: World) -> None:
    await expect_error(
        world.members.LinkAccount(
            members_pb2.LinkAccountRequest(
                request_id=rid(),
                member=common_pb2.MemberRef(loyalty_number=world.member.loyalty_number),
                linked_account=members_pb2.LinkedAccount(
                    partner_account=common_pb2.PartnerAccount(external_id="rider-1")
                ),
            ),
            metadata=world.auth(world.hotel),
        ),
        INVALID,
        "MISSING_VERIFICATION_CODE",
        "verification_code",
    )


async def test_one_external_id_belongs_to_one_member_and_unlinking_keeps_history(
    world: World,
) -> None:
    number = skyways_number()
    linked = await world.link_number(number)
    other = await world.members.EnrollMember(
        members_pb2.EnrollMemberRequest(
            request_id=rid(), member=members_pb2.Member(display_name="Grace")
        ),
        metadata=world.gw.as_operator,
    )
    await expect_error(
        world.members.LinkAccount(
            members_pb2.LinkAccountRequest(
                request_id=rid(),
                member=common_pb2.MemberRef(member=other.member.name),
                linked_account=members_pb2.LinkedAccount(
                    program_number=common_pb2.ProgramNumber(
                        program="partners/skyways", number=number
                    )
                ),
            ),
            metadata=world.gw.as_operator,
        ),
        EXISTS,
        "ACCOUNT_ALREADY_LINKED",
    )
    await world.book(by_number(number))
    await world.members.UnlinkAccount(
        members_pb2.UnlinkAccountRequest(request_id=rid(), name=linked.name),
        metadata=world.gw.as_operator,
    )
    listed = await world.members.ListLinkedAccounts(
        members_pb2.ListLinkedAccountsRequest(
            member=common_pb2.MemberRef(member=world.member.name), show_unlinked=True
        ),
        metadata=world.gw.as_operator,
    )
    assert [a.HasField("unlink_time") for a in listed.linked_accounts] == [True]
    assert await world.available() == 2000  # the booking made while linked stays
    # Unlinked, the number parks again.
    assert (await world.book(by_number(number))).state == PARKED


# -- conversions -----------------------------------------------------------------------------


async def convert(world: World, points: int, key: str | None = None) -> Any:
    return await world.points.ConvertPoints(
        points_pb2.ConvertPointsRequest(
            request_id=rid(),
            member=common_pb2.MemberRef(member=world.member.name),
            program="partners/skyways",
            points=points,
        ),
        metadata=world.auth(key) if key else world.gw.as_operator,
    )


async def test_conversion_at_the_published_ratio_and_its_rejection(world: World) -> None:
    number = skyways_number()
    await world.link_number(number)
    await world.book(by_number(number), 60000)  # 3,000 points
    await expect_error(convert(world, 999), FAILED, "BELOW_CONVERSION_MINIMUM")
    await expect_error(convert(world, 5000), FAILED, "INSUFFICIENT_POINTS")

    done = await convert(world, 1001)

    assert (done.converted_units, done.unit, done.program_number) == (500, "MILES", number)
    assert done.transaction.type == common_pb2.TRANSACTION_TYPE_CONVERSION
    assert done.transaction.points == -1001
    assert await world.available() == 1999
    async with world.gw.ctx.database.connect() as conn:
        event = json.loads(
            await conn.scalar(select(EVENTS.c.payload).where(EVENTS.c.type == "PointsConverted"))
        )
    assert (event["program_number"], event["units"]) == (number, 500)

    # The airline rejects it: the member gets the points back.
    await expect_error(
        world.points.ReverseTransaction(
            points_pb2.ReverseTransactionRequest(
                request_id=rid(), transaction=done.transaction.name, points=10
            ),
            metadata=world.auth(world.airline),
        ),
        FAILED,
        "CONVERSION_REVERSED_IN_FULL_ONLY",
    )
    reversed_ = await world.points.ReverseTransaction(
        points_pb2.ReverseTransactionRequest(
            request_id=rid(), transaction=done.transaction.name, reason="number closed"
        ),
        metadata=world.auth(world.airline),
    )
    assert reversed_.transaction.points == 1001
    assert await world.available() == 3000


async def test_conversion_needs_a_linked_number_and_the_airline_or_operator(
    world: World,
) -> None:
    await expect_error(convert(world, 1000), FAILED, "PROGRAM_NOT_LINKED")
    await expect_error(convert(world, 1000, world.hotel), DENIED, "NOT_YOUR_PROGRAM")


async def test_a_parked_booking_is_cancelled_whole_by_the_agency_and_then_never_credited(
    world: World,
) -> None:
    number = skyways_number("22223333")
    parked = await world.book(by_number(number))

    def cancel(key: str, points: int = 0) -> Any:
        return world.points.ReverseTransaction(
            points_pb2.ReverseTransactionRequest(
                request_id=rid(), transaction=parked.name, points=points
            ),
            metadata=world.auth(key),
        )

    await expect_error(cancel(world.agency, 10), INVALID, "INVALID_POINTS", "points")
    await expect_error(cancel(world.hotel), NOT_FOUND, "TRANSACTION_NOT_FOUND")
    cancelled = (await cancel(world.agency)).transaction
    assert (cancelled.name, cancelled.state) == (parked.name, common_pb2.TRANSACTION_STATE_VOIDED)
    await expect_error(cancel(world.airline), FAILED, "PARKED_EARN_NOT_OPEN")

    await world.link_number(number)
    assert await world.available() == 0


async def test_a_claimed_parked_earn_points_to_the_earn_it_became(world: World) -> None:
    number = skyways_number("33334444")
    parked = await world.book(by_number(number))
    await world.link_number(number)
    info = await expect_error(
        world.points.ReverseTransaction(
            points_pb2.ReverseTransactionRequest(request_id=rid(), transaction=parked.name),
            metadata=world.auth(world.agency),
        ),
        FAILED,
        "PARKED_EARN_NOT_OPEN",
    )
    assert info.metadata["state"] == "CLAIMED"


async def test_wrong_codes_are_counted_and_five_spend_the_code(world: World) -> None:
    account = members_pb2.LinkedAccount(
        partner_account=common_pb2.PartnerAccount(external_id="guest-7")
    )
    member_ref = common_pb2.MemberRef(loyalty_number=world.member.loyalty_number)
    await world.members.RequestLinkCode(
        members_pb2.RequestLinkCodeRequest(
            request_id=rid(), member=member_ref, linked_account=account
        ),
        metadata=world.auth(world.hotel),
    )
    async with world.gw.ctx.database.connect() as conn:
        payload = json.loads(
            await conn.scalar(select(EVENTS.c.payload).where(EVENTS.c.type == "LinkCode"))
        )
    code = payload["code"]
    wrong = f"{(int(code) + 1) % 10**6:06d}"

    def link(verification_code: str) -> Any:
        return world.members.LinkAccount(
            members_pb2.LinkAccountRequest(
                request_id=rid(),
                member=member_ref,
                linked_account=account,
                verification_code=verification_code,
            ),
            metadata=world.auth(world.hotel),
        )

    left = []
    for _ in range(5):
        info = await expect_error(link(wrong), FAILED, "INVALID_VERIFICATION_CODE")
        left.append(info.metadata["attempts_left"])
    assert left == ["4", "3", "2", "1", "0"]
    # Five wrong tries spent the code: even the right one no longer links.
    await expect_error(link(code), FAILED, "VERIFICATION_CODE_EXPIRED")


async def test_a_member_links_one_number_per_airline(world: World) -> None:
    await world.link_number(skyways_number("10000000"))
    await expect_error(
        world.link_number(skyways_number("20000000")), EXISTS, "PROGRAM_ALREADY_LINKED"
    )


async def test_an_airline_from_before_programs_runs_the_default_program(world: World) -> None:
    async with world.gw.ctx.database.begin() as conn:
        await conn.execute(update(PARTNERS).where(PARTNERS.c.id == "skyways").values(program="{}"))
    txn = await world.book(by_number("SKY12345"))  # default format: 6 to 20 letters and digits
    assert txn.state == PARKED
    await expect_error(
        world.book(by_number("SKY-1")),
        INVALID,
        "INVALID_PROGRAM_NUMBER",
        "member.program_number.number",
    )
