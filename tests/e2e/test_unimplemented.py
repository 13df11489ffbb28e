"""Every RPC of the contract that has not landed answers UNIMPLEMENTED NOT_YET_AVAILABLE.

The methods are enumerated from the service descriptors, so a new RPC cannot be missed.
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from errors import expect_error  # tests/e2e/errors.py
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor

from coalition.v1 import (
    common_pb2,
    donations_pb2,
    members_pb2,
    members_pb2_grpc,
    partners_pb2,
    points_pb2,
    rewards_pb2,
    settlement_pb2,
    wallet_pb2,
)

LATER_FILES: list[Any] = []
LATER_METHODS: dict[str, list[str]] = {}  # RPCs of served services that are not served yet
SERVED_METHODS = {
    "coalition.v1.MemberService": [
        "EnrollMember",
        "GetMember",
        "UpdateMember",
        "LookupMember",
        "GetBalance",
        "ListTransactions",
        "RequestLinkCode",
        "LinkAccount",
        "UnlinkAccount",
        "ListLinkedAccounts",
    ],
    "coalition.v1.PartnerService": [
        "CreatePartner",
        "GetPartner",
        "ListPartners",
        "UpdatePartner",
        "CreateApiKey",
        "RevokeApiKey",
        "ListApiKeys",
        "IssueClientCertificate",
        "CreateCampaign",
        "ListCampaigns",
        "EndCampaign",
    ],
    "coalition.v1.PointsService": [
        "QuoteEarn",
        "EarnPoints",
        "RedeemPoints",
        "AuthorizeRedemption",
        "CaptureRedemption",
        "VoidRedemption",
        "ReverseTransaction",
        "StreamEarnPoints",
        "ConvertPoints",
    ],
    "coalition.v1.RewardService": [
        "CreateReward",
        "ListRewards",
        "RedeemReward",
        "ValidateVoucher",
        "ConsumeVoucher",
    ],
    "coalition.v1.DonationService": [
        "ListCharities",
        "DonatePoints",
        "GetDonationReceipt",
        "ListDonations",
        "CreateMatchingCampaign",
        "ListMatchingCampaigns",
        "EndMatchingCampaign",
        "CreatePledge",
        "ListPledges",
        "CancelPledge",
    ],
    "coalition.v1.WalletService": ["IssueWalletCard", "GetWalletCard"],
    "coalition.v1.SettlementService": [
        "CloseSettlementPeriod",
        "GetStatement",
        "ListStatements",
        "ListStatementLines",
        "GetNettingReport",
        "ReconcilePartnerFile",
        "CreateAdjustment",
        "CreatePriceList",
        "ListPriceLists",
        "SetFxRate",
    ],
}
OPERATOR_ONLY = {"coalition.v1.PartnerService"}  # for partners it is PERMISSION_DENIED first
ALL_FILES = [
    members_pb2,
    partners_pb2,
    points_pb2,
    rewards_pb2,
    donations_pb2,
    wallet_pb2,
    settlement_pb2,
    *LATER_FILES,
]


def _services(module: Any) -> list[Any]:
    return list(module.DESCRIPTOR.services_by_name.values())


def _method(service: str, name: str) -> MethodDescriptor:
    for module in ALL_FILES:
        for candidate in _services(module):
            if candidate.full_name == service:
                return candidate.methods_by_name[name]
    raise KeyError(f"{service}/{name} is not in the contract")


def later_methods() -> list[MethodDescriptor]:
    found = [m for module in LATER_FILES for s in _services(module) for m in s.methods]
    found += [_method(s, n) for s, names in LATER_METHODS.items() for n in names]
    return found


def path(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


def invoke(channel: grpc.aio.Channel, method: MethodDescriptor, metadata: Any) -> Any:
    """Call any method with an empty request and read everything; returns an awaitable."""
    request_type = message_factory.GetMessageClass(method.input_type)
    response_type = message_factory.GetMessageClass(method.output_type)
    kind = {
        (False, False): channel.unary_unary,
        (False, True): channel.unary_stream,
        (True, False): channel.stream_unary,
        (True, True): channel.stream_stream,
    }[(method.client_streaming, method.server_streaming)]
    multicallable = kind(
        path(method),
        request_serializer=request_type.SerializeToString,
        response_deserializer=response_type.FromString,
    )

    async def requests() -> Any:
        yield request_type()

    async def run() -> Any:
        request = requests() if method.client_streaming else request_type()
        call = multicallable(request, metadata=metadata)
        if method.server_streaming:
            return [item async for item in call]
        return await call

    return run()


def test_the_contract_is_fully_accounted_for() -> None:
    every = {path(m) for module in ALL_FILES for s in _services(module) for m in s.methods}
    served = {path(_method(s, n)) for s, names in SERVED_METHODS.items() for n in names}
    later = {path(m) for m in later_methods()}
    assert not served & later
    assert served | later == every


EVERY_METHOD = [m for module in ALL_FILES for s in _services(module) for m in s.methods]


@pytest.mark.parametrize("method", EVERY_METHOD, ids=path)
async def test_every_rpc_of_the_contract_is_served(gateway: Any, method: MethodDescriptor) -> None:
    """Now that every service has landed: an empty request from the operator gets an answer
    from the servicer (often INVALID_ARGUMENT), never UNIMPLEMENTED, INTERNAL or UNKNOWN."""
    try:
        await invoke(gateway.channel, method, gateway.as_operator)
    except grpc.aio.AioRpcError as exc:
        bad = (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)
        assert exc.code() not in bad, f"{path(method)}: {exc.code()} {exc.details()}"


@pytest.mark.parametrize(
    "method",
    [
        _method("coalition.v1.PointsService", "StreamEarnPoints"),
        _method("coalition.v1.WalletService", "IssueWalletCard"),
    ],
    ids=path,
)
async def test_credentials_are_checked_before_anything(
    gateway: Any, method: MethodDescriptor
) -> None:
    await expect_error(
        invoke(gateway.channel, method, None),
        grpc.StatusCode.UNAUTHENTICATED,
        "MISSING_CREDENTIALS",
    )


@pytest.mark.parametrize(
    ("ref", "code", "reason"),
    [
        pytest.param(
            {"partner_account": common_pb2.PartnerAccount(external_id="guest-1")},
            grpc.StatusCode.NOT_FOUND,
            "MEMBER_NOT_FOUND",
            id="unlinked-partner-account",
        ),
        pytest.param(
            {"program_number": common_pb2.ProgramNumber(program="partners/sky-air", number="1")},
            grpc.StatusCode.PERMISSION_DENIED,
            "AIRLINE_NOT_AUTHORIZED",
            id="another-airlines-number",
        ),
    ],
)
async def test_member_refs_by_linked_account_answer_precisely(
    gateway: Any, ref: dict[str, Any], code: grpc.StatusCode, reason: str
) -> None:
    await gateway.create_partner("sky-air", "AIRLINE")
    _, key = await gateway.create_partner("grand-hotel")
    stub = members_pb2_grpc.MemberServiceStub(gateway.channel)
    await expect_error(
        stub.LookupMember(members_pb2.LookupMemberRequest(**ref), metadata=gateway.auth(key)),
        code,
        reason,
    )
    await expect_error(
        stub.GetBalance(
            members_pb2.GetBalanceRequest(member=common_pb2.MemberRef(**ref)),
            metadata=gateway.auth(key),
        ),
        code,
        reason,
    )
