"""API keys through real gRPC: missing, malformed, unknown, revoked, rotated, operator-only."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest
from errors import expect_error  # tests/e2e/errors.py
from google.protobuf import field_mask_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import text

from coalition.v1 import members_pb2 as mpb
from coalition.v1 import members_pb2_grpc, partners_pb2_grpc
from coalition.v1 import partners_pb2 as ppb

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED


def partners(gateway: Any) -> partners_pb2_grpc.PartnerServiceStub:
    return partners_pb2_grpc.PartnerServiceStub(gateway.channel)


async def new_key(gateway: Any, parent: str, request_id: str) -> ppb.CreateApiKeyResponse:
    return await partners(gateway).CreateApiKey(
        ppb.CreateApiKeyRequest(request_id=request_id, parent=parent, display_name=request_id),
        metadata=gateway.as_operator,
    )


async def revoke(gateway: Any, name: str, request_id: str) -> ppb.RevokeApiKeyResponse:
    return await partners(gateway).RevokeApiKey(
        ppb.RevokeApiKeyRequest(request_id=request_id, name=name), metadata=gateway.as_operator
    )


async def whoami(gateway: Any, key: str, partner_name: str) -> ppb.Partner:
    reply = await partners(gateway).GetPartner(
        ppb.GetPartnerRequest(name=partner_name), metadata=gateway.auth(key)
    )
    return reply.partner


async def test_missing_credentials(gateway: Any) -> None:
    stub = members_pb2_grpc.MemberServiceStub(gateway.channel)
    await expect_error(
        stub.GetMember(mpb.GetMemberRequest(name="members/abc")),
        UNAUTHENTICATED,
        "MISSING_CREDENTIALS",
    )


@pytest.mark.parametrize(
    "header",
    [
        pytest.param("Basic x", id="basic-scheme"),
        pytest.param("Bearer", id="bearer-without-key"),
        pytest.param("Bearer    ", id="bearer-blank-key"),
        pytest.param("coal_abc", id="key-without-scheme"),
    ],
)
async def test_malformed_authorization_header(gateway: Any, header: str) -> None:
    stub = members_pb2_grpc.MemberServiceStub(gateway.channel)
    await expect_error(
        stub.GetMember(
            mpb.GetMemberRequest(name="members/abc"), metadata=[("authorization", header)]
        ),
        UNAUTHENTICATED,
        "INVALID_CREDENTIALS",
    )


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("coal_" + "A" * 43, id="well-formed-unknown"),
        pytest.param("not-a-coalition-key", id="foreign-format"),
        pytest.param("coal_" + "A" * 500, id="overlong"),
    ],
)
async def test_unknown_key(gateway: Any, key: str) -> None:
    stub = members_pb2_grpc.MemberServiceStub(gateway.channel)
    await expect_error(
        stub.GetMember(mpb.GetMemberRequest(name="members/abc"), metadata=gateway.auth(key)),
        UNAUTHENTICATED,
        "INVALID_CREDENTIALS",
    )


async def test_revoked_key_is_refused_at_once(gateway: Any) -> None:
    partner, _ = await gateway.create_partner("grand-hotel")
    created = await new_key(gateway, partner.name, "key-2")
    assert (await whoami(gateway, created.secret, partner.name)).name == partner.name

    revoked = await revoke(gateway, created.api_key.name, "revoke-1")
    assert revoked.api_key.name == created.api_key.name
    assert revoked.api_key.HasField("revoke_time")

    await expect_error(
        whoami(gateway, created.secret, partner.name), UNAUTHENTICATED, "INVALID_CREDENTIALS"
    )


async def test_rotation_two_active_keys_then_revoke_one(gateway: Any) -> None:
    partner, _ = await gateway.create_partner("grand-hotel")
    old = await new_key(gateway, partner.name, "key-old")
    new = await new_key(gateway, partner.name, "key-new")
    assert old.secret != new.secret
    assert old.api_key.name != new.api_key.name
    for key in (old.secret, new.secret):
        assert (await whoami(gateway, key, partner.name)).name == partner.name

    await revoke(gateway, old.api_key.name, "revoke-old")
    await expect_error(
        whoami(gateway, old.secret, partner.name), UNAUTHENTICATED, "INVALID_CREDENTIALS"
    )
    assert (await whoami(gateway, new.secret, partner.name)).name == partner.name


OPERATOR_ONLY_REQUESTS: dict[str, Callable[[str], Any]] = {
    "CreatePartner": lambda me: ppb.CreatePartnerRequest(
        request_id="c-1",
        partner_id="rogue-partner",
        partner=ppb.Partner(display_name="Rogue", type=ppb.PARTNER_TYPE_HOTEL, base_earn_rate="10"),
    ),
    "ListPartners": lambda me: ppb.ListPartnersRequest(),
    "UpdatePartner": lambda me: ppb.UpdatePartnerRequest(
        request_id="u-1",
        partner=ppb.Partner(name=me, base_earn_rate="1000"),
        update_mask=field_mask_pb2.FieldMask(paths=["base_earn_rate"]),
    ),
    "CreateApiKey": lambda me: ppb.CreateApiKeyRequest(request_id="k-1", parent=me),
    "RevokeApiKey": lambda me: ppb.RevokeApiKeyRequest(
        request_id="r-1", name=f"{me}/apiKeys/whatever"
    ),
    "ListApiKeys": lambda me: ppb.ListApiKeysRequest(parent=me),
    "IssueClientCertificate": lambda me: ppb.IssueClientCertificateRequest(
        request_id="i-1", parent=me
    ),
}


@pytest.mark.parametrize("method", sorted(OPERATOR_ONLY_REQUESTS))
async def test_partner_may_not_call_operator_only_rpcs(gateway: Any, method: str) -> None:
    partner, key = await gateway.create_partner("grand-hotel")
    stub = partners(gateway)
    request = OPERATOR_ONLY_REQUESTS[method](partner.name)
    info = await expect_error(
        getattr(stub, method)(request, metadata=gateway.auth(key)),
        grpc.StatusCode.PERMISSION_DENIED,
        "OPERATOR_ONLY",
    )
    assert info.metadata["method"] == f"/coalition.v1.PartnerService/{method}"
    # Nothing changed on the partner's behalf.
    assert await whoami(gateway, key, partner.name) == partner
    keys = await stub.ListApiKeys(
        ppb.ListApiKeysRequest(parent=partner.name), metadata=gateway.as_operator
    )
    assert len(keys.api_keys) == 1
    listed = await stub.ListPartners(ppb.ListPartnersRequest(), metadata=gateway.as_operator)
    assert [p.name for p in listed.partners] == [partner.name]


def test_operator_only_list_matches_the_contract() -> None:
    """Every PartnerService RPC but GetPartner (and the not-yet campaign RPCs) is covered."""
    service = ppb.DESCRIPTOR.services_by_name["PartnerService"]
    later = {"CreateCampaign", "ListCampaigns", "EndCampaign"}
    assert set(OPERATOR_ONLY_REQUESTS) == {m.name for m in service.methods} - {"GetPartner"} - later


async def test_partner_reads_itself_but_not_another_partner(gateway: Any) -> None:
    hotel, key = await gateway.create_partner("grand-hotel")
    airline, _ = await gateway.create_partner("sky-air", "AIRLINE")
    assert await whoami(gateway, key, hotel.name) == hotel
    other = await expect_error(
        whoami(gateway, key, airline.name), grpc.StatusCode.NOT_FOUND, "PARTNER_NOT_FOUND"
    )
    missing = await expect_error(
        whoami(gateway, key, "partners/no-such-partner"),
        grpc.StatusCode.NOT_FOUND,
        "PARTNER_NOT_FOUND",
    )
    # An existing and a missing partner look alike to a partner that may not see them.
    assert set(other.metadata) == set(missing.metadata)


async def test_api_key_secret_is_stored_only_as_a_hash(gateway: Any) -> None:
    partner, _ = await gateway.create_partner("grand-hotel")
    created = await new_key(gateway, partner.name, "key-2")
    secret = created.secret
    assert secret.startswith(created.api_key.prefix)
    assert len(created.api_key.prefix) < len(secret)

    async with gateway.ctx.database.connect() as conn:
        keys = (await conn.execute(text("SELECT * FROM api_keys"))).mappings().all()
        replies = (
            (await conn.execute(text("SELECT response FROM idempotency_keys"))).scalars().all()
        )
    assert len(keys) == 3  # the operator's, the one create_partner made, and ours
    for row in keys:
        for column, value in row.items():
            assert secret not in str(value), f"api_keys.{column} holds the secret"
    for reply in replies:
        assert secret.encode() not in bytes(reply or b""), "a stored response holds the secret"


async def test_create_api_key_replay_returns_the_key_without_its_secret(gateway: Any) -> None:
    partner, _ = await gateway.create_partner("grand-hotel")
    first = await new_key(gateway, partner.name, "key-2")
    again = await new_key(gateway, partner.name, "key-2")
    assert first.secret
    assert again.api_key == first.api_key
    assert again.secret == ""
    listed = await partners(gateway).ListApiKeys(
        ppb.ListApiKeysRequest(parent=partner.name), metadata=gateway.as_operator
    )
    assert len(listed.api_keys) == 2


async def test_list_api_keys_paginates(gateway: Any) -> None:
    partner, _ = await gateway.create_partner("grand-hotel")
    made = {(await new_key(gateway, partner.name, f"key-{i}")).api_key.name for i in range(2)}
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await partners(gateway).ListApiKeys(
            ppb.ListApiKeysRequest(parent=partner.name, page_size=1, page_token=token),
            metadata=gateway.as_operator,
        )
        pages += 1
        assert len(page.api_keys) == 1
        seen.extend(k.name for k in page.api_keys)
        token = page.next_page_token
        if not token:
            break
        assert pages < 10, "pagination does not end"
    assert pages == 3
    assert len(seen) == len(set(seen)) == 3
    assert made < set(seen)
    assert all(name.startswith(f"{partner.name}/apiKeys/") for name in seen)


async def test_health_check_needs_no_credentials(gateway: Any) -> None:
    health = health_pb2_grpc.HealthStub(gateway.channel)
    for service in ("", "coalition.v1.MemberService", "coalition.v1.PartnerService"):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
