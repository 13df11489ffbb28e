"""A real server on port 0: health, an enrolled member found three ways."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from coalition.v1 import members_pb2 as pb
from coalition.v1 import members_pb2_grpc


async def test_health_answers_serving_without_credentials(gateway) -> None:
    reply = await health_pb2_grpc.HealthStub(gateway.channel).Check(health_pb2.HealthCheckRequest())
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_enrolled_member_is_found_by_loyalty_number_and_phone(gateway) -> None:
    _, key = await gateway.create_partner("grand-hotel")
    stub = members_pb2_grpc.MemberServiceStub(gateway.channel)
    enrolled = (
        await stub.EnrollMember(
            pb.EnrollMemberRequest(
                request_id="enroll-1",
                member=pb.Member(display_name="Ada Lovelace", phone_number="+14155550123"),
            ),
            metadata=gateway.auth(key),
        )
    ).member
    assert len(enrolled.loyalty_number) == 12
    by_number = await stub.LookupMember(
        pb.LookupMemberRequest(loyalty_number=enrolled.loyalty_number), metadata=gateway.auth(key)
    )
    by_phone = await stub.LookupMember(
        pb.LookupMemberRequest(phone_number="(415) 555-0123", default_region="US"),
        metadata=gateway.auth(key),
    )
    assert by_number.member == enrolled == by_phone.member
    assert by_phone.member.phone_number == "+14155550123"


async def test_missing_credentials_are_unauthenticated(gateway) -> None:
    stub = members_pb2_grpc.MemberServiceStub(gateway.channel)
    try:
        await stub.GetMember(pb.GetMemberRequest(name="members/abc"))
    except grpc.aio.AioRpcError as err:
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    else:
        raise AssertionError("no credentials were accepted")
