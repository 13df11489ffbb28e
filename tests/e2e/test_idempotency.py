"""Exactly-once mutations through real gRPC, on whichever database the run uses."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from errors import decode_status, details_of, expect_error  # tests/e2e/errors.py
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2
from sqlalchemy import text

from coalition.v1 import members_pb2 as pb
from coalition.v1 import members_pb2_grpc

CONCURRENT_DUPLICATES = 20


def members(gateway: Any) -> members_pb2_grpc.MemberServiceStub:
    return members_pb2_grpc.MemberServiceStub(gateway.channel)


def enroll_request(request_id: str, **member: Any) -> pb.EnrollMemberRequest:
    member.setdefault("display_name", "Ada Lovelace")
    return pb.EnrollMemberRequest(request_id=request_id, member=pb.Member(**member))


async def member_count(gateway: Any) -> int:
    async with gateway.ctx.database.connect() as conn:
        return int((await conn.execute(text("SELECT COUNT(*) FROM members"))).scalar_one())


@pytest.fixture
async def hotel(gateway: Any) -> list[tuple[str, str]]:
    _, key = await gateway.create_partner("grand-hotel")
    return gateway.auth(key)


async def test_replay_returns_the_same_member_and_creates_one(gateway: Any, hotel: Any) -> None:
    request = enroll_request("enroll-1", phone_number="+14155550123", email="ada@example.com")
    first = await members(gateway).EnrollMember(request, metadata=hotel)
    again = await members(gateway).EnrollMember(request, metadata=hotel)
    assert again == first
    assert again.member.loyalty_number == first.member.loyalty_number
    assert await member_count(gateway) == 1


async def test_same_request_id_different_payload_is_rejected(gateway: Any, hotel: Any) -> None:
    first = await members(gateway).EnrollMember(enroll_request("enroll-1"), metadata=hotel)
    info = await expect_error(
        members(gateway).EnrollMember(
            enroll_request("enroll-1", display_name="Grace Hopper"), metadata=hotel
        ),
        grpc.StatusCode.ALREADY_EXISTS,
        "REQUEST_ID_REUSED",
    )
    assert info.metadata["request_id"] == "enroll-1"
    assert await member_count(gateway) == 1
    # The original answer is still the one replayed.
    again = await members(gateway).EnrollMember(enroll_request("enroll-1"), metadata=hotel)
    assert again == first


async def test_request_id_is_scoped_per_partner(gateway: Any, hotel: Any) -> None:
    _, taxi_key = await gateway.create_partner("quick-ride", "RIDE_SHARE")
    request = enroll_request("enroll-1")
    by_hotel = await members(gateway).EnrollMember(request, metadata=hotel)
    by_taxi = await members(gateway).EnrollMember(request, metadata=gateway.auth(taxi_key))
    assert by_hotel.member.name != by_taxi.member.name
    assert by_hotel.member.loyalty_number != by_taxi.member.loyalty_number
    assert await member_count(gateway) == 2


async def test_validation_failure_is_not_stored(gateway: Any, hotel: Any) -> None:
    await expect_error(
        members(gateway).EnrollMember(
            enroll_request("enroll-1", display_name="  "), metadata=hotel
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "EMPTY_NAME",
        "member.display_name",
    )
    fixed = await members(gateway).EnrollMember(enroll_request("enroll-1"), metadata=hotel)
    assert fixed.member.display_name == "Ada Lovelace"
    assert await member_count(gateway) == 1


async def test_concurrent_duplicates_make_one_member(gateway: Any, hotel: Any) -> None:
    request = enroll_request("enroll-1", phone_number="+14155550123")
    stub = members(gateway)
    answers = await asyncio.gather(
        *(stub.EnrollMember(request, metadata=hotel) for _ in range(CONCURRENT_DUPLICATES))
    )
    assert len(answers) == CONCURRENT_DUPLICATES
    assert all(a == answers[0] for a in answers), {a.member.loyalty_number for a in answers}
    assert await member_count(gateway) == 1


async def test_concurrent_enrollments_of_one_phone_make_one_member(
    gateway: Any, hotel: Any
) -> None:
    """Different request_ids racing for one phone number: one wins, the rest are told why."""
    stub = members(gateway)
    outcomes = await asyncio.gather(
        *(
            stub.EnrollMember(
                enroll_request(f"enroll-{i}", phone_number="+14155550123"), metadata=hotel
            )
            for i in range(10)
        ),
        return_exceptions=True,
    )
    won = [o for o in outcomes if isinstance(o, pb.EnrollMemberResponse)]
    lost = [o for o in outcomes if not isinstance(o, pb.EnrollMemberResponse)]
    assert len(won) == 1, outcomes
    for err in lost:
        assert isinstance(err, grpc.aio.AioRpcError), err
        assert err.code() == grpc.StatusCode.ALREADY_EXISTS, err
        [info] = details_of(decode_status(err), error_details_pb2.ErrorInfo)
        assert info.reason == "PHONE_NUMBER_TAKEN", info
    assert await member_count(gateway) == 1


async def test_phone_number_taken_in_another_format(gateway: Any, hotel: Any) -> None:
    await members(gateway).EnrollMember(
        enroll_request("enroll-1", phone_number="+1 415-555-0123"), metadata=hotel
    )
    info = await expect_error(
        members(gateway).EnrollMember(
            enroll_request("enroll-2", display_name="Grace", phone_number="+14155550123"),
            metadata=hotel,
        ),
        grpc.StatusCode.ALREADY_EXISTS,
        "PHONE_NUMBER_TAKEN",
    )
    assert info.metadata["field"] == "member.phone_number"
    assert await member_count(gateway) == 1


async def test_update_changes_only_masked_fields(gateway: Any, hotel: Any) -> None:
    stub = members(gateway)
    enrolled = (
        await stub.EnrollMember(
            enroll_request(
                "enroll-1",
                phone_number="+1 415-555-0123",
                email="ada@example.com",
                locale="fr-CA",
                marketing_consent=True,
            ),
            metadata=hotel,
        )
    ).member

    # Every field is sent (blank or different); only the masked one may change.
    updated = (
        await stub.UpdateMember(
            pb.UpdateMemberRequest(
                request_id="update-1",
                member=pb.Member(name=enrolled.name, email="ada@lovelace.org"),
                update_mask=field_mask_pb2.FieldMask(paths=["email"]),
            ),
            metadata=hotel,
        )
    ).member
    assert updated.email == "ada@lovelace.org"
    expected = pb.Member()
    expected.CopyFrom(enrolled)
    expected.email = "ada@lovelace.org"
    expected.update_time.CopyFrom(updated.update_time)
    assert updated == expected

    found = await stub.LookupMember(
        pb.LookupMemberRequest(phone_number="+14155550123"), metadata=hotel
    )
    assert found.member == updated
    got = await stub.GetMember(pb.GetMemberRequest(name=enrolled.name), metadata=hotel)
    assert got.member == updated


async def test_update_of_the_phone_moves_the_lookup(gateway: Any, hotel: Any) -> None:
    stub = members(gateway)
    enrolled = (
        await stub.EnrollMember(
            enroll_request("enroll-1", phone_number="+14155550123"), metadata=hotel
        )
    ).member
    updated = (
        await stub.UpdateMember(
            pb.UpdateMemberRequest(
                request_id="update-1",
                member=pb.Member(name=enrolled.name, phone_number="(415) 555-0199"),
                update_mask=field_mask_pb2.FieldMask(paths=["phone_number"]),
                default_region="US",
            ),
            metadata=hotel,
        )
    ).member
    assert updated.phone_number == "+14155550199"
    assert updated.display_name == enrolled.display_name
    found = await stub.LookupMember(
        pb.LookupMemberRequest(phone_number="+14155550199"), metadata=hotel
    )
    assert found.member.name == enrolled.name
    await expect_error(
        stub.LookupMember(pb.LookupMemberRequest(phone_number="+14155550123"), metadata=hotel),
        grpc.StatusCode.NOT_FOUND,
        "MEMBER_NOT_FOUND",
    )
    # The old number is free again.
    other = await stub.EnrollMember(
        enroll_request("enroll-2", display_name="Grace", phone_number="+14155550123"),
        metadata=hotel,
    )
    assert other.member.name != enrolled.name


async def test_update_to_a_taken_phone_is_refused(gateway: Any, hotel: Any) -> None:
    stub = members(gateway)
    await stub.EnrollMember(enroll_request("enroll-1", phone_number="+14155550123"), metadata=hotel)
    grace = (
        await stub.EnrollMember(enroll_request("enroll-2", display_name="Grace"), metadata=hotel)
    ).member
    await expect_error(
        stub.UpdateMember(
            pb.UpdateMemberRequest(
                request_id="update-1",
                member=pb.Member(name=grace.name, phone_number="+1 (415) 555-0123"),
                update_mask=field_mask_pb2.FieldMask(paths=["phone_number"]),
            ),
            metadata=hotel,
        ),
        grpc.StatusCode.ALREADY_EXISTS,
        "PHONE_NUMBER_TAKEN",
    )
    got = await stub.GetMember(pb.GetMemberRequest(name=grace.name), metadata=hotel)
    assert got.member == grace
