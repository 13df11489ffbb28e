"""Bad input through real gRPC: each case pins the exact status, reason and offending field."""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from errors import expect_error  # tests/e2e/errors.py
from google.protobuf import field_mask_pb2

from coalition.v1 import common_pb2, members_pb2_grpc, partners_pb2_grpc
from coalition.v1 import members_pb2 as mpb
from coalition.v1 import partners_pb2 as ppb
from gateway.domain.members import luhn_check_digit

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
TOO_BIG = "x" * 4097  # one more than any string field may hold

_PAYLOAD = "41234567890"
GOOD_LOYALTY_NUMBER = _PAYLOAD + luhn_check_digit(_PAYLOAD)
BAD_CHECK_DIGIT = _PAYLOAD + str((int(luhn_check_digit(_PAYLOAD)) + 1) % 10)
HOTEL = ppb.PARTNER_TYPE_HOTEL
AGENCY = ppb.PARTNER_TYPE_TRAVEL_AGENCY


def token(position: object) -> str:
    """A page token in the gateway's own encoding, with whatever inside."""
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode()


@dataclass
class World:
    """A hotel partner (grand-hotel) with a key and an enrolled member, and an airline."""

    members: members_pb2_grpc.MemberServiceStub
    partners: partners_pb2_grpc.PartnerServiceStub
    partner: list[tuple[str, str]]
    operator: list[tuple[str, str]]
    member: mpb.Member


@pytest.fixture
async def world(gateway: Any) -> World:
    _, key = await gateway.create_partner("grand-hotel")
    await gateway.create_partner("sky-air", "AIRLINE")
    members = members_pb2_grpc.MemberServiceStub(gateway.channel)
    enrolled = await members.EnrollMember(
        mpb.EnrollMemberRequest(
            request_id="enroll-ada",
            member=mpb.Member(display_name="Ada Lovelace", phone_number="+14155550123"),
        ),
        metadata=gateway.auth(key),
    )
    return World(
        members=members,
        partners=partners_pb2_grpc.PartnerServiceStub(gateway.channel),
        partner=gateway.auth(key),
        operator=gateway.as_operator,
        member=enrolled.member,
    )


Call = Callable[[World], Awaitable[Any]]


def enroll(request_id: str = "enroll-new", default_region: str = "", **member: Any) -> Call:
    member.setdefault("display_name", "Grace Hopper")
    return lambda w: w.members.EnrollMember(
        mpb.EnrollMemberRequest(
            request_id=request_id, member=mpb.Member(**member), default_region=default_region
        ),
        metadata=w.partner,
    )


def lookup(**kind: Any) -> Call:
    return lambda w: w.members.LookupMember(mpb.LookupMemberRequest(**kind), metadata=w.partner)


def get_member(name: str) -> Call:
    return lambda w: w.members.GetMember(mpb.GetMemberRequest(name=name), metadata=w.partner)


def update_member(paths: list[str], name: str | None = None, request_id: str = "upd-1") -> Call:
    return lambda w: w.members.UpdateMember(
        mpb.UpdateMemberRequest(
            request_id=request_id,
            member=mpb.Member(name=name or w.member.name, display_name="Ada King"),
            update_mask=field_mask_pb2.FieldMask(paths=paths),
        ),
        metadata=w.partner,
    )


def create_partner(
    partner_id: str = "new-partner", request_id: str = "create-new", **fields: Any
) -> Call:
    fields.setdefault("display_name", "New Partner")
    fields.setdefault("type", HOTEL)
    fields.setdefault("base_earn_rate", "10")
    return lambda w: w.partners.CreatePartner(
        ppb.CreatePartnerRequest(
            request_id=request_id, partner_id=partner_id, partner=ppb.Partner(**fields)
        ),
        metadata=w.operator,
    )


def list_partners(**request: Any) -> Call:
    return lambda w: w.partners.ListPartners(
        ppb.ListPartnersRequest(**request), metadata=w.operator
    )


def list_api_keys(**request: Any) -> Call:
    request.setdefault("parent", "partners/grand-hotel")
    return lambda w: w.partners.ListApiKeys(ppb.ListApiKeysRequest(**request), metadata=w.operator)


@dataclass(frozen=True)
class Case:
    id: str
    call: Call
    code: grpc.StatusCode
    reason: str
    field: str | None = None


CASES = [
    # -- loyalty numbers and phone numbers ---------------------------------------------------
    Case(
        "loyalty-number-wrong-check-digit",
        lookup(loyalty_number=BAD_CHECK_DIGIT),
        INVALID,
        "INVALID_LOYALTY_NUMBER",
        "loyalty_number",
    ),
    Case(
        "loyalty-number-too-short",
        lookup(loyalty_number="12345"),
        INVALID,
        "INVALID_LOYALTY_NUMBER",
        "loyalty_number",
    ),
    Case(
        "loyalty-number-too-long",
        lookup(loyalty_number=GOOD_LOYALTY_NUMBER + "0"),
        INVALID,
        "INVALID_LOYALTY_NUMBER",
        "loyalty_number",
    ),
    Case(
        "loyalty-number-with-letters",
        lookup(loyalty_number="41234567890A"),
        INVALID,
        "INVALID_LOYALTY_NUMBER",
        "loyalty_number",
    ),
    Case(
        "balance-loyalty-number-wrong-check-digit",
        lambda w: w.members.GetBalance(
            mpb.GetBalanceRequest(member=common_pb2.MemberRef(loyalty_number=BAD_CHECK_DIGIT)),
            metadata=w.partner,
        ),
        INVALID,
        "INVALID_LOYALTY_NUMBER",
        "member.loyalty_number",
    ),
    Case(
        "enroll-phone-unparsable",
        enroll(phone_number="not a phone"),
        INVALID,
        "INVALID_PHONE_NUMBER",
        "member.phone_number",
    ),
    Case(
        "enroll-phone-too-short",
        enroll(phone_number="+1 23"),
        INVALID,
        "INVALID_PHONE_NUMBER",
        "member.phone_number",
    ),
    Case(
        "enroll-phone-national-without-region",
        enroll(phone_number="(415) 555-0123"),
        INVALID,
        "INVALID_PHONE_NUMBER",
        "member.phone_number",
    ),
    Case(
        "lookup-phone-unparsable",
        lookup(phone_number="call me maybe"),
        INVALID,
        "INVALID_PHONE_NUMBER",
        "phone_number",
    ),
    # -- member contact details -----------------------------------------------------------------
    Case(
        "enroll-empty-name", enroll(display_name=""), INVALID, "EMPTY_NAME", "member.display_name"
    ),
    Case(
        "enroll-whitespace-name",
        enroll(display_name=" \t\n "),
        INVALID,
        "EMPTY_NAME",
        "member.display_name",
    ),
    Case(
        "enroll-name-201-chars",
        enroll(display_name="a" * 201),
        INVALID,
        "FIELD_TOO_LONG",
        "member.display_name",
    ),
    Case("enroll-email-no-domain", enroll(email="ada@"), INVALID, "INVALID_EMAIL", "member.email"),
    Case(
        "enroll-email-no-at",
        enroll(email="ada at example.com"),
        INVALID,
        "INVALID_EMAIL",
        "member.email",
    ),
    Case(
        "enroll-email-255-chars",
        enroll(email="a" * 243 + "@example.com"),
        INVALID,
        "FIELD_TOO_LONG",
        "member.email",
    ),
    Case(
        "enroll-locale-bad", enroll(locale="english!"), INVALID, "INVALID_LOCALE", "member.locale"
    ),
    Case(
        "enroll-locale-one-letter", enroll(locale="e"), INVALID, "INVALID_LOCALE", "member.locale"
    ),
    # -- any string longer than 4096 characters -------------------------------------------------
    Case(
        "oversized-enroll-display-name",
        enroll(display_name=TOO_BIG),
        INVALID,
        "FIELD_TOO_LONG",
        "member.display_name",
    ),
    Case(
        "oversized-enroll-email",
        enroll(email=TOO_BIG),
        INVALID,
        "FIELD_TOO_LONG",
        "member.email",
    ),
    Case(
        "oversized-enroll-default-region",
        enroll(default_region=TOO_BIG),
        INVALID,
        "FIELD_TOO_LONG",
        "default_region",
    ),
    Case(
        "oversized-enroll-request-id",
        enroll(request_id=TOO_BIG),
        INVALID,
        "FIELD_TOO_LONG",
        "request_id",
    ),
    Case(
        "oversized-lookup-phone",
        lookup(phone_number=TOO_BIG),
        INVALID,
        "FIELD_TOO_LONG",
        "phone_number",
    ),
    Case(
        "oversized-lookup-loyalty-number",
        lookup(loyalty_number=TOO_BIG),
        INVALID,
        "FIELD_TOO_LONG",
        "loyalty_number",
    ),
    Case("oversized-get-member-name", get_member(TOO_BIG), INVALID, "FIELD_TOO_LONG", "name"),
    Case(
        "oversized-partner-id",
        create_partner(partner_id=TOO_BIG),
        INVALID,
        "FIELD_TOO_LONG",
        "partner_id",
    ),
    Case(
        "oversized-webhook-url",
        create_partner(webhook_url="https://example.com/" + TOO_BIG),
        INVALID,
        "FIELD_TOO_LONG",
        "partner.webhook_url",
    ),
    Case(
        "oversized-earn-rate",
        create_partner(base_earn_rate="1" * 4097),
        INVALID,
        "FIELD_TOO_LONG",
        "partner.base_earn_rate",
    ),
    Case(
        "oversized-get-partner-name",
        lambda w: w.partners.GetPartner(
            ppb.GetPartnerRequest(name="partners/" + TOO_BIG), metadata=w.operator
        ),
        INVALID,
        "FIELD_TOO_LONG",
        "name",
    ),
    Case(
        "oversized-page-token",
        list_partners(page_token=TOO_BIG),
        INVALID,
        "FIELD_TOO_LONG",
        "page_token",
    ),
    # -- partners ---------------------------------------------------------------------------
    Case(
        "partner-type-unspecified",
        create_partner(type=ppb.PARTNER_TYPE_UNSPECIFIED),
        INVALID,
        "INVALID_PARTNER_TYPE",
        "partner.type",
    ),
    Case(
        "partner-type-99",
        create_partner(type=99),
        INVALID,
        "INVALID_PARTNER_TYPE",
        "partner.type",
    ),
    Case(
        "partner-empty-name",
        create_partner(display_name="  "),
        INVALID,
        "EMPTY_NAME",
        "partner.display_name",
    ),
    Case(
        "partner-name-201-chars",
        create_partner(display_name="a" * 201),
        INVALID,
        "FIELD_TOO_LONG",
        "partner.display_name",
    ),
    Case(
        "partner-id-upper-case",
        create_partner(partner_id="Grand_Hotel"),
        INVALID,
        "INVALID_PARTNER_ID",
        "partner_id",
    ),
    Case(
        "partner-id-too-short",
        create_partner(partner_id="ab"),
        INVALID,
        "INVALID_PARTNER_ID",
        "partner_id",
    ),
    Case("partner-id-empty", create_partner(partner_id=""), INVALID, "INVALID_PARTNER_ID"),
    Case(
        "partner-id-taken",
        create_partner(partner_id="grand-hotel"),
        grpc.StatusCode.ALREADY_EXISTS,
        "PARTNER_ALREADY_EXISTS",
    ),
    Case(
        "earn-rate-abc",
        create_partner(base_earn_rate="abc"),
        INVALID,
        "INVALID_EARN_RATE",
        "partner.base_earn_rate",
    ),
    Case(
        "earn-rate-negative",
        create_partner(base_earn_rate="-1"),
        INVALID,
        "INVALID_EARN_RATE",
        "partner.base_earn_rate",
    ),
    Case(
        "earn-rate-nan",
        create_partner(base_earn_rate="NaN"),
        INVALID,
        "INVALID_EARN_RATE",
        "partner.base_earn_rate",
    ),
    Case(
        "earn-rate-huge",
        create_partner(base_earn_rate="1e9"),
        INVALID,
        "INVALID_EARN_RATE",
        "partner.base_earn_rate",
    ),
    Case(
        "earn-rate-too-many-decimals",
        create_partner(base_earn_rate="1.00001"),
        INVALID,
        "INVALID_EARN_RATE",
        "partner.base_earn_rate",
    ),
    Case(
        "currency-lower-case",
        create_partner(earn_currency_code="usd"),
        INVALID,
        "INVALID_CURRENCY",
        "partner.earn_currency_code",
    ),
    Case(
        "settlement-currency-four-letters",
        create_partner(settlement_currency_code="EURO"),
        INVALID,
        "INVALID_CURRENCY",
        "partner.settlement_currency_code",
    ),
    Case(
        "webhook-http-remote-host",
        create_partner(webhook_url="http://example.com/hooks"),
        INVALID,
        "INVALID_WEBHOOK_URL",
        "partner.webhook_url",
    ),
    Case(
        "webhook-ftp",
        create_partner(webhook_url="ftp://localhost/hooks"),
        INVALID,
        "INVALID_WEBHOOK_URL",
        "partner.webhook_url",
    ),
    Case(
        "webhook-no-host",
        create_partner(webhook_url="https://"),
        INVALID,
        "INVALID_WEBHOOK_URL",
        "partner.webhook_url",
    ),
    Case(
        "time-zone-unknown",
        create_partner(time_zone="Mars/Olympus_Mons"),
        INVALID,
        "INVALID_TIME_ZONE",
        "partner.time_zone",
    ),
    Case(
        "time-zone-path",
        create_partner(time_zone="../../etc/passwd"),
        INVALID,
        "INVALID_TIME_ZONE",
        "partner.time_zone",
    ),
    Case(
        "agency-for-a-hotel",
        create_partner(type=AGENCY, authorized_airlines=["partners/grand-hotel"]),
        INVALID,
        "AIRLINE_NOT_FOUND",
        "partner.authorized_airlines",
    ),
    Case(
        "agency-for-a-missing-airline",
        create_partner(type=AGENCY, authorized_airlines=["partners/no-such-air"]),
        INVALID,
        "AIRLINE_NOT_FOUND",
        "partner.authorized_airlines",
    ),
    Case(
        "agency-airline-not-a-name",
        create_partner(type=AGENCY, authorized_airlines=["sky-air"]),
        INVALID,
        "INVALID_PARTNER_NAME",
        "partner.authorized_airlines[0]",
    ),
    Case(
        "hotel-with-airlines",
        create_partner(type=HOTEL, authorized_airlines=["partners/sky-air"]),
        INVALID,
        "AIRLINES_ONLY_FOR_AGENCIES",
        "partner.authorized_airlines",
    ),
    Case(
        "get-partner-bad-name",
        lambda w: w.partners.GetPartner(
            ppb.GetPartnerRequest(name="grand-hotel"), metadata=w.operator
        ),
        INVALID,
        "INVALID_PARTNER_NAME",
        "name",
    ),
    Case(
        "get-partner-unknown",
        lambda w: w.partners.GetPartner(
            ppb.GetPartnerRequest(name="partners/no-such-partner"), metadata=w.operator
        ),
        NOT_FOUND,
        "PARTNER_NOT_FOUND",
    ),
    Case(
        "api-key-for-unknown-partner",
        lambda w: w.partners.CreateApiKey(
            ppb.CreateApiKeyRequest(request_id="k-1", parent="partners/no-such-partner"),
            metadata=w.operator,
        ),
        NOT_FOUND,
        "PARTNER_NOT_FOUND",
    ),
    Case(
        "revoke-api-key-bad-name",
        lambda w: w.partners.RevokeApiKey(
            ppb.RevokeApiKeyRequest(request_id="rv-1", name="apiKeys/1"), metadata=w.operator
        ),
        INVALID,
        "INVALID_API_KEY_NAME",
        "name",
    ),
    Case(
        "revoke-api-key-unknown",
        lambda w: w.partners.RevokeApiKey(
            ppb.RevokeApiKeyRequest(request_id="rv-1", name="partners/grand-hotel/apiKeys/nope"),
            metadata=w.operator,
        ),
        NOT_FOUND,
        "API_KEY_NOT_FOUND",
    ),
    # -- request ids ------------------------------------------------------------------------
    Case(
        "enroll-missing-request-id",
        enroll(request_id=""),
        INVALID,
        "MISSING_REQUEST_ID",
        "request_id",
    ),
    Case(
        "create-partner-missing-request-id",
        create_partner(request_id=""),
        INVALID,
        "MISSING_REQUEST_ID",
        "request_id",
    ),
    Case(
        "enroll-request-id-65-chars",
        enroll(request_id="r" * 65),
        INVALID,
        "FIELD_TOO_LONG",
        "request_id",
    ),
    # -- member names and lookups -------------------------------------------------------------
    Case("member-name-empty", get_member(""), INVALID, "INVALID_MEMBER_NAME", "name"),
    Case("member-name-no-id", get_member("members/"), INVALID, "INVALID_MEMBER_NAME", "name"),
    Case(
        "member-name-upper-case",
        get_member("members/ABC"),
        INVALID,
        "INVALID_MEMBER_NAME",
        "name",
    ),
    Case(
        "member-name-wrong-collection",
        get_member("partners/grand-hotel"),
        INVALID,
        "INVALID_MEMBER_NAME",
        "name",
    ),
    Case(
        "member-name-extra-segment",
        get_member("members/abc/linkedAccounts/1"),
        INVALID,
        "INVALID_MEMBER_NAME",
        "name",
    ),
    Case(
        "member-unknown",
        get_member("members/0123456789abcdef0123"),
        NOT_FOUND,
        "MEMBER_NOT_FOUND",
    ),
    Case(
        "lookup-unknown-loyalty-number",
        lookup(loyalty_number=GOOD_LOYALTY_NUMBER),
        NOT_FOUND,
        "MEMBER_NOT_FOUND",
    ),
    Case(
        "lookup-unknown-phone",
        lookup(phone_number="+33 1 23 45 67 89"),
        NOT_FOUND,
        "MEMBER_NOT_FOUND",
    ),
    Case("lookup-nothing-set", lookup(), INVALID, "MISSING_MEMBER_REF"),
    Case(
        "balance-no-member",
        lambda w: w.members.GetBalance(mpb.GetBalanceRequest(), metadata=w.partner),
        INVALID,
        "MISSING_MEMBER_REF",
        "member",
    ),
    # -- paging --------------------------------------------------------------------------------
    Case(
        "page-token-garbage",
        list_partners(page_token="not a token!"),
        INVALID,
        "INVALID_PAGE_TOKEN",
        "page_token",
    ),
    Case(
        "page-token-not-an-object",
        list_partners(page_token=token([1, 2])),
        INVALID,
        "INVALID_PAGE_TOKEN",
        "page_token",
    ),
    Case(
        "page-token-wrong-keys",
        list_partners(page_token=token({"id": "grand-hotel"})),
        INVALID,
        "INVALID_PAGE_TOKEN",
        "page_token",
    ),
    Case(
        "page-token-forged-values",
        list_partners(page_token=token({"t": "yesterday", "id": "grand-hotel"})),
        INVALID,
        "INVALID_PAGE_TOKEN",
        "page_token",
    ),
    Case(
        "page-size-negative",
        list_partners(page_size=-1),
        INVALID,
        "INVALID_PAGE_SIZE",
        "page_size",
    ),
    Case(
        "list-partners-type-99",
        list_partners(type=99),
        INVALID,
        "INVALID_PARTNER_TYPE",
        "type",
    ),
    Case(
        "api-keys-page-token-garbage",
        list_api_keys(page_token="%%%"),
        INVALID,
        "INVALID_PAGE_TOKEN",
        "page_token",
    ),
    Case(
        "api-keys-page-size-negative",
        list_api_keys(page_size=-5),
        INVALID,
        "INVALID_PAGE_SIZE",
        "page_size",
    ),
    # -- update masks -------------------------------------------------------------------------
    Case(
        "update-member-empty-mask",
        update_member([]),
        INVALID,
        "INVALID_UPDATE_MASK",
        "update_mask",
    ),
    Case(
        "update-member-unknown-path",
        update_member(["display_name", "favourite_colour"]),
        INVALID,
        "INVALID_UPDATE_MASK",
        "update_mask",
    ),
    Case(
        "update-member-output-only-path",
        update_member(["tier"]),
        INVALID,
        "INVALID_UPDATE_MASK",
        "update_mask",
    ),
    Case(
        "update-member-unknown-member",
        update_member(["display_name"], name="members/0123456789abcdef0123"),
        NOT_FOUND,
        "MEMBER_NOT_FOUND",
    ),
    Case(
        "update-partner-empty-mask",
        lambda w: w.partners.UpdatePartner(
            ppb.UpdatePartnerRequest(
                request_id="up-1",
                partner=ppb.Partner(name="partners/grand-hotel", display_name="Grand"),
            ),
            metadata=w.operator,
        ),
        INVALID,
        "INVALID_UPDATE_MASK",
        "update_mask",
    ),
    Case(
        "update-partner-type-is-immutable",
        lambda w: w.partners.UpdatePartner(
            ppb.UpdatePartnerRequest(
                request_id="up-1",
                partner=ppb.Partner(name="partners/grand-hotel", type=ppb.PARTNER_TYPE_AIRLINE),
                update_mask=field_mask_pb2.FieldMask(paths=["type"]),
            ),
            metadata=w.operator,
        ),
        INVALID,
        "INVALID_UPDATE_MASK",
        "update_mask",
    ),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES])
async def test_bad_input_is_rejected_with_reason_and_field(world: World, case: Case) -> None:
    await expect_error(case.call(world), case.code, case.reason, case.field)


async def test_rejected_input_changes_nothing(world: World) -> None:
    """After every kind of bad input the member and partner are exactly as they were."""
    for case in CASES:
        with contextlib.suppress(grpc.aio.AioRpcError):
            await case.call(world)
    after = await world.members.GetMember(
        mpb.GetMemberRequest(name=world.member.name), metadata=world.partner
    )
    assert after.member == world.member
    listed = await world.partners.ListPartners(ppb.ListPartnersRequest(), metadata=world.operator)
    assert sorted(p.name for p in listed.partners) == ["partners/grand-hotel", "partners/sky-air"]


async def test_corrupt_protobuf_bytes_get_invalid_argument_not_unknown(gateway) -> None:
    _, key = await gateway.create_partner("raw-bytes")
    send_raw = gateway.channel.unary_unary(
        "/coalition.v1.MemberService/EnrollMember",
        request_serializer=lambda raw: raw,
        response_deserializer=lambda raw: raw,
    )
    await expect_error(
        send_raw(b"\xff\xff\xff\xff\x0f", metadata=gateway.auth(key)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "MALFORMED_REQUEST",
    )
