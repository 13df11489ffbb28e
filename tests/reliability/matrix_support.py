"""What the access-control matrix shares: a seeded network with a partner of every type, every
kind of credential (API keys, a revoked key, client certificates that are valid, expired or
from a foreign CA), one well-formed request per RPC, and one way to call any RPC as any caller.

The network (partner ids; the "-a" partners own the resources the requests name, the others
never do):

    hotel-a, hotel-b     HOTEL          air-a, air-b       AIRLINE (air-a converts at 0.5)
    ride-co              RIDE_SHARE     shop-co            RETAIL
    agency-a, agency-b   TRAVEL_AGENCY  (authorized for air-a and air-b respectively)
    charity-a, charity-b CHARITY

January 2026 is recorded (earns by everyone, links, a reward and its voucher, donations,
matching campaigns, a pledge, a wallet card), then the clock moves to February 3 and the
operator closes January, so statements exist. Every certificate and key is made per run.
"""

from __future__ import annotations

import enum
import importlib
import itertools
import json
import pkgutil
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import duration_pb2, field_mask_pb2, message_factory, timestamp_pb2
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from sqlalchemy import select, text
from wallet_support import WalletWeb, wallet_web  # tests/wallet_support.py

import coalition.v1
from coalition.v1 import (
    common_pb2,
    donations_pb2,
    donations_pb2_grpc,
    members_pb2,
    members_pb2_grpc,
    partners_pb2,
    partners_pb2_grpc,
    points_pb2,
    points_pb2_grpc,
    rewards_pb2,
    rewards_pb2_grpc,
    settlement_pb2,
    settlement_pb2_grpc,
    wallet_pb2,
    wallet_pb2_grpc,
)
from gateway.adapters.db import Database
from gateway.adapters.models import Base, OutboxEventRow, table_of
from gateway.clock import FixedClock
from gateway.domain.pii import PiiVault
from gateway.entrypoints.grpc.server import TlsConfig, add_port, create_server
from gateway.service import partners as partner_service
from gateway.service.context import AppContext
from gateway.service.verify import verify
from partners import ca

SECRET_KEY = b"access-matrix-secret-key-0123456789abcdefghij"
CALL_TIMEOUT_S = 20.0
"""Only so that a hung call fails instead of hanging the run; nothing is timed."""
DETAILS_KEY = "grpc-status-details-bin"
DOMAIN = "coalition.v1"
EVENTS = table_of(OutboxEventRow)


def _service_modules() -> list[Any]:
    """Every generated module of the contract that defines a service: a new .proto file with a
    service joins the matrix (and fails it until its rows exist) without anyone listing it."""
    found = []
    for module in pkgutil.iter_modules(coalition.v1.__path__):
        if module.name.endswith("_pb2"):
            imported = importlib.import_module(f"coalition.v1.{module.name}")
            if imported.DESCRIPTOR.services_by_name:
                found.append(imported)
    return found


SERVICE_MODULES = _service_modules()

HOTEL_A, HOTEL_B = "hotel-a", "hotel-b"
RIDE_CO, SHOP_CO = "ride-co", "shop-co"
AIR_A, AIR_B = "air-a", "air-b"
AGENCY_A, AGENCY_B = "agency-a", "agency-b"
CHARITY_A, CHARITY_B = "charity-a", "charity-b"
OWNERS = (HOTEL_A, AIR_A, AGENCY_A, CHARITY_A)
"""Partners whose resources requests name; each has a revoked key and client certificates."""

JANUARY = "settlementPeriods/2026-01"
FEBRUARY = "settlementPeriods/2026-02"
SEED_TIME = datetime(2026, 1, 5, 12, tzinfo=UTC)
MATRIX_TIME = datetime(2026, 2, 3, 9, tzinfo=UTC)
FUTURE = datetime(2027, 1, 1, tzinfo=UTC)
"""Campaign windows start here, so no bonus from them changes an earn of the run."""


class Kind(enum.StrEnum):
    """Who calls: the columns of the matrix."""

    ANONYMOUS = "anonymous"
    """No credentials at all."""
    BAD_SCHEME = "bad-scheme"
    """`authorization: Basic …` holding the owner's real key."""
    GARBAGE_KEY = "garbage-key"
    """`authorization: Bearer <not a key>`."""
    REVOKED_KEY = "revoked-key"
    """A key of the owner, revoked."""
    EXPIRED_CERT = "expired-cert"
    """A coalition-CA certificate of the owner whose validity ended, on the mTLS port."""
    FOREIGN_CERT = "foreign-ca-cert"
    """A certificate naming the owner, signed by another CA, on the mTLS port."""
    OWNER = "owner"
    """The partner whose resources the request names, by API key."""
    OWNER_CERT = "owner-cert"
    """The same partner by its valid client certificate (mTLS port, no key)."""
    HOTEL = "hotel"
    RIDE_SHARE = "ride-share"
    AIRLINE = "airline"
    RETAIL = "retail"
    AGENCY = "agency"
    CHARITY = "charity"
    """A partner of this type that owns nothing the request names (hotel-b, ride-co, air-b,
    shop-co, agency-b, charity-b): for the owner's own type, "another partner's key"."""
    OPERATOR = "operator"


CREDENTIAL_KINDS = (
    Kind.ANONYMOUS,
    Kind.BAD_SCHEME,
    Kind.GARBAGE_KEY,
    Kind.REVOKED_KEY,
    Kind.EXPIRED_CERT,
    Kind.FOREIGN_CERT,
)
TLS_KINDS = (Kind.EXPIRED_CERT, Kind.FOREIGN_CERT, Kind.OWNER_CERT)
TYPE_PARTNER = {
    Kind.HOTEL: HOTEL_B,
    Kind.RIDE_SHARE: RIDE_CO,
    Kind.AIRLINE: AIR_B,
    Kind.RETAIL: SHOP_CO,
    Kind.AGENCY: AGENCY_B,
    Kind.CHARITY: CHARITY_B,
}
GARBAGE_BEARER = "Bearer coal_this-is-not-a-key-of-anyone-0123456789abcdef"


# -- outcomes --------------------------------------------------------------------------------

_CODES = {c.value[0]: c for c in grpc.StatusCode}


@dataclass(frozen=True)
class Outcome:
    """How a call ended: OK with its response, or a status with its ErrorInfo."""

    code: grpc.StatusCode
    reason: str = ""
    message: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    response: Any = None
    error_infos: int = 0
    """How many ErrorInfo details the status carried (the contract says exactly one)."""
    raw: str = ""
    """Everything the client was told on failure (details and status details), for leak checks."""

    @property
    def ok(self) -> bool:
        return self.code is grpc.StatusCode.OK

    def __str__(self) -> str:
        if self.ok:
            return "OK"
        return f"{self.code.name} {self.reason or '(no ErrorInfo)'}: {self.message}"


def outcome_of_error(err: grpc.aio.AioRpcError) -> Outcome:
    raw = [v for k, v in (err.trailing_metadata() or ()) if k == DETAILS_KEY]
    infos: list[error_details_pb2.ErrorInfo] = []
    text_seen = err.details() or ""
    if raw:
        status = status_pb2.Status.FromString(raw[0])
        text_seen += "\n" + str(status)
        for packed in status.details:
            if packed.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                packed.Unpack(info)
                infos.append(info)
            elif packed.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                packed.Unpack(bad)
                text_seen += "\n" + str(bad)
    first = infos[0] if infos else None
    if first is not None:
        text_seen += "\n" + str(first)
    return Outcome(
        code=err.code(),
        reason=first.reason if first and first.domain == DOMAIN else "",
        message=err.details() or "",
        metadata=dict(first.metadata) if first else {},
        error_infos=len(infos),
        raw=text_seen,
    )


def outcome_of_item(error: common_pb2.ItemError) -> Outcome:
    """A StreamEarnPoints item's error: the stream stays up, the item carries the status."""
    return Outcome(
        code=_CODES[error.code],
        reason=error.reason,
        message=error.message,
        metadata=dict(error.metadata),
        error_infos=1,
        raw=str(error),
    )


# -- calling any RPC -------------------------------------------------------------------------


def every_method() -> list[MethodDescriptor]:
    """Every RPC of the contract, from the service descriptors."""
    return [
        method
        for module in SERVICE_MODULES
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    ]


def method_key(method: MethodDescriptor) -> str:
    """ "MemberService.GetMember"."""
    return f"{method.containing_service.name}.{method.name}"


METHODS = {method_key(m): m for m in every_method()}


def method_of(row: str) -> MethodDescriptor:
    """The RPC of a matrix row ("PointsService.EarnPoints.on_behalf_of" → EarnPoints)."""
    return METHODS[".".join(row.split(".")[:2])]


async def invoke(
    channel: grpc.aio.Channel, method: MethodDescriptor, request: Message, metadata: Any
) -> Outcome:
    """Call any RPC with one request message (one stream item for a streaming RPC)."""
    request_type = message_factory.GetMessageClass(method.input_type)
    response_type = message_factory.GetMessageClass(method.output_type)
    path = f"/{method.containing_service.full_name}/{method.name}"
    try:
        if method.client_streaming or method.server_streaming:
            assert method.client_streaming and method.server_streaming, "only bidi streams exist"
            call = channel.stream_stream(
                path,
                request_serializer=request_type.SerializeToString,
                response_deserializer=response_type.FromString,
            )

            async def one() -> AsyncIterator[Message]:
                yield request

            answers = [a async for a in call(one(), metadata=metadata, timeout=CALL_TIMEOUT_S)]
            assert len(answers) == 1, f"one item sent, {len(answers)} answers: {answers}"
            if answers[0].HasField("error"):
                return outcome_of_item(answers[0].error)
            return Outcome(grpc.StatusCode.OK, response=answers[0])
        unary = channel.unary_unary(
            path,
            request_serializer=request_type.SerializeToString,
            response_deserializer=response_type.FromString,
        )
        response = await unary(request, metadata=metadata, timeout=CALL_TIMEOUT_S)
        return Outcome(grpc.StatusCode.OK, response=response)
    except grpc.aio.AioRpcError as err:
        return outcome_of_error(err)


def bearer(key: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {key}")]


def secure_channel(target: str, ca_pem: bytes, cert: ca.IssuedCertificate) -> grpc.aio.Channel:
    assert cert.private_key_pem is not None
    credentials = grpc.ssl_channel_credentials(ca_pem, cert.private_key_pem, cert.certificate_pem)
    return grpc.aio.secure_channel(
        target, credentials, options=[("grpc.ssl_target_name_override", "localhost")]
    )


@dataclass
class Certificates:
    valid: ca.IssuedCertificate
    expired: ca.IssuedCertificate
    foreign: ca.IssuedCertificate


def issue_certificates(authority: ca.CertificateAuthority, partner_id: str) -> Certificates:
    # TLS checks validity against the wall clock, not the gateway's FixedClock.
    now = datetime.now(UTC)
    rogue = ca.create_ca("Rogue CA", now=now)
    return Certificates(
        valid=ca.issue_partner_certificate(authority, partner_id, csr_pem=None, now=now),
        expired=ca.issue_partner_certificate(
            authority, partner_id, csr_pem=None, now=now - timedelta(days=400), validity_days=1
        ),
        foreign=ca.issue_partner_certificate(rogue, partner_id, csr_pem=None, now=now),
    )


# -- the world -------------------------------------------------------------------------------


def ts(when: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(when)
    return stamp


def ref(member: str) -> common_pb2.MemberRef:
    return common_pb2.MemberRef(member=member)


def usd(amount_minor: int) -> common_pb2.Purchase:
    return common_pb2.Purchase(amount_minor=amount_minor, currency_code="USD")


@dataclass
class World:
    ctx: AppContext
    target: str
    mtls_target: str
    tls_target: str
    ca_pem: bytes
    channel: grpc.aio.Channel
    operator_key: str
    authority: ca.CertificateAuthority
    web: WalletWeb
    """The wallet web service (PassKit, card pages) and its fake APNs and Google."""
    keys: dict[str, str] = field(default_factory=dict)
    revoked: dict[str, str] = field(default_factory=dict)
    certs: dict[str, Certificates] = field(default_factory=dict)
    cert_channels: dict[str, grpc.aio.Channel] = field(default_factory=dict)
    member: str = ""
    loyalty_number: str = ""
    reward_a: str = ""
    voucher_a: str = ""
    donations: dict[str, str] = field(default_factory=dict)
    """A donation name per charity."""
    sequence: Any = field(default_factory=lambda: itertools.count(1))

    # -- callers ---------------------------------------------------------------------------

    @property
    def operator(self) -> list[tuple[str, str]]:
        return bearer(self.operator_key)

    def auth(self, partner_id: str) -> list[tuple[str, str]]:
        return bearer(self.keys[partner_id])

    def partner_of(self, kind: Kind, owner: str) -> str | None:
        """The partner a caller kind acts as (None: the operator or nobody)."""
        if kind in (Kind.OWNER, Kind.OWNER_CERT):
            return owner
        return TYPE_PARTNER.get(kind)

    def secrets_of(self, kind: Kind, owner: str) -> list[str]:
        """What the caller must never see echoed back in an error."""
        found = [self.revoked[owner]] if kind is Kind.REVOKED_KEY else []
        if kind is Kind.BAD_SCHEME:
            found.append(self.keys[owner])
        if kind is Kind.GARBAGE_KEY:
            found.append(GARBAGE_BEARER.removeprefix("Bearer "))
        return found

    async def call(self, kind: Kind, owner: str, row: str, request: Message) -> Outcome:
        """Send a matrix row's request as `kind` (the owner's credentials where it has any)."""
        method = method_of(row)
        if kind in (Kind.EXPIRED_CERT, Kind.FOREIGN_CERT):
            certs = self.certs[owner]
            cert = certs.expired if kind is Kind.EXPIRED_CERT else certs.foreign
            async with secure_channel(self.mtls_target, self.ca_pem, cert) as channel:
                return await invoke(channel, method, request, None)
        if kind is Kind.OWNER_CERT:
            return await invoke(self.cert_channel(owner), method, request, None)
        metadata: list[tuple[str, str]] | None
        match kind:
            case Kind.ANONYMOUS:
                metadata = None
            case Kind.BAD_SCHEME:
                metadata = [("authorization", f"Basic {self.keys[owner]}")]
            case Kind.GARBAGE_KEY:
                metadata = [("authorization", GARBAGE_BEARER)]
            case Kind.REVOKED_KEY:
                metadata = bearer(self.revoked[owner])
            case Kind.OPERATOR:
                metadata = self.operator
            case _:
                partner = self.partner_of(kind, owner)
                assert partner is not None, kind
                metadata = self.auth(partner)
        return await invoke(self.channel, method, request, metadata)

    def cert_channel(self, partner_id: str) -> grpc.aio.Channel:
        if partner_id not in self.cert_channels:
            self.cert_channels[partner_id] = secure_channel(
                self.mtls_target, self.ca_pem, self.certs[partner_id].valid
            )
        return self.cert_channels[partner_id]

    # -- stubs -----------------------------------------------------------------------------

    @property
    def members(self) -> members_pb2_grpc.MemberServiceStub:
        return members_pb2_grpc.MemberServiceStub(self.channel)

    @property
    def partners(self) -> partners_pb2_grpc.PartnerServiceStub:
        return partners_pb2_grpc.PartnerServiceStub(self.channel)

    @property
    def points(self) -> points_pb2_grpc.PointsServiceStub:
        return points_pb2_grpc.PointsServiceStub(self.channel)

    @property
    def rewards(self) -> rewards_pb2_grpc.RewardServiceStub:
        return rewards_pb2_grpc.RewardServiceStub(self.channel)

    @property
    def donations_stub(self) -> donations_pb2_grpc.DonationServiceStub:
        return donations_pb2_grpc.DonationServiceStub(self.channel)

    @property
    def wallet(self) -> wallet_pb2_grpc.WalletServiceStub:
        return wallet_pb2_grpc.WalletServiceStub(self.channel)

    @property
    def settlement(self) -> settlement_pb2_grpc.SettlementServiceStub:
        return settlement_pb2_grpc.SettlementServiceStub(self.channel)

    # -- helpers for requests and seeding --------------------------------------------------

    def n(self) -> int:
        return next(self.sequence)

    def rid(self) -> str:
        return f"matrix-{self.n()}"

    async def enroll(self, display_name: str = "Grace Hopper", **fields: Any) -> Any:
        n = self.n()
        fields.setdefault("email", f"member{n}@example.com")
        reply = await self.members.EnrollMember(
            members_pb2.EnrollMemberRequest(
                request_id=f"enroll-{n}",
                member=members_pb2.Member(display_name=display_name, **fields),
            ),
            metadata=self.operator,
        )
        return reply.member

    async def earn(
        self, partner_id: str, member: str, amount_minor: int, reference: str, **fields: Any
    ) -> common_pb2.PointsTransaction:
        reply = await self.points.EarnPoints(
            points_pb2.EarnPointsRequest(
                request_id=self.rid(),
                member=ref(member),
                purchase=usd(amount_minor),
                partner_reference=reference,
                **fields,
            ),
            metadata=self.auth(partner_id),
        )
        return reply.transaction

    async def link(self, member: str, account: members_pb2.LinkedAccount) -> str:
        """The operator links an account (no code needed); the link's name."""
        reply = await self.members.LinkAccount(
            members_pb2.LinkAccountRequest(
                request_id=self.rid(), member=ref(member), linked_account=account
            ),
            metadata=self.operator,
        )
        return reply.linked_account.name

    async def link_code(self, member_name: str) -> str:
        """The last one-time link code sent to the member (read from its outbox event)."""
        async with self.ctx.database.connect() as conn:
            payload = await conn.scalar(
                select(EVENTS.c.payload)
                .where(EVENTS.c.type == "LinkCode", EVENTS.c.subject == member_name)
                .order_by(EVENTS.c.seq.desc())
                .limit(1)
            )
        assert payload is not None, f"no link code was sent to {member_name}"
        return str(json.loads(payload)["code"])

    def matching_window(self) -> tuple[datetime, datetime]:
        """A window no other matching campaign of the run overlaps (one per charity at a time)."""
        start = FUTURE + timedelta(days=2 * self.n())
        return start, start + timedelta(days=1)

    async def redeem_voucher(self) -> str:
        reply = await self.rewards.RedeemReward(
            rewards_pb2.RedeemRewardRequest(
                request_id=self.rid(), member=ref(self.member), reward=self.reward_a
            ),
            metadata=self.operator,
        )
        return str(reply.voucher.code)


# -- seeding ---------------------------------------------------------------------------------


def account(partner_id: str, external_id: str) -> members_pb2.LinkedAccount:
    return members_pb2.LinkedAccount(
        partner_account=common_pb2.PartnerAccount(
            partner=f"partners/{partner_id}", external_id=external_id
        )
    )


def program_number(airline_id: str, number: str) -> members_pb2.LinkedAccount:
    return members_pb2.LinkedAccount(
        program_number=common_pb2.ProgramNumber(program=f"partners/{airline_id}", number=number)
    )


PARTNERS: list[tuple[str, str, dict[str, Any]]] = [
    (HOTEL_A, "HOTEL", {}),
    (HOTEL_B, "HOTEL", {}),
    (RIDE_CO, "RIDE_SHARE", {}),
    (
        AIR_A,
        "AIRLINE",
        {
            "program": partners_pb2.LoyaltyProgram(conversion_rate="0.5"),
            # Conversions are offered only to an airline that is told of them by webhook.
            "webhook_url": "http://127.0.0.1:9/air-a-hooks",
        },
    ),
    (AIR_B, "AIRLINE", {}),
    (SHOP_CO, "RETAIL", {}),
    (AGENCY_A, "TRAVEL_AGENCY", {"authorized_airlines": [f"partners/{AIR_A}"]}),
    (AGENCY_B, "TRAVEL_AGENCY", {"authorized_airlines": [f"partners/{AIR_B}"]}),
    (
        CHARITY_A,
        "CHARITY",
        {"charity": partners_pb2.CharityProfile(value_per_thousand_points_minor=1000)},
    ),
    (
        CHARITY_B,
        "CHARITY",
        {"charity": partners_pb2.CharityProfile(value_per_thousand_points_minor=1000)},
    ),
]


def display_name(partner_id: str) -> str:
    """ "Hotel A Display" — distinctive, so a leak of it is easy to spot in any response."""
    return partner_id.replace("-", " ").title() + " Display"


async def truncate(db: Database) -> None:
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    async with db.begin() as conn:
        if db.dialect == "postgresql":
            await conn.execute(text(f"TRUNCATE {', '.join(tables)} CASCADE"))
        else:
            for table in tables:
                await conn.execute(text(f"DELETE FROM {table}"))


async def _seed(w: World, authority: ca.CertificateAuthority) -> None:
    op = w.operator
    for partner_id, kind, fields in PARTNERS:
        created = await w.partners.CreatePartner(
            partners_pb2.CreatePartnerRequest(
                request_id=f"create-{partner_id}",
                partner_id=partner_id,
                partner=partners_pb2.Partner(
                    display_name=display_name(partner_id),
                    type=partners_pb2.PartnerType.Value(f"PARTNER_TYPE_{kind}"),
                    base_earn_rate="10",
                    **fields,
                ),
            ),
            metadata=op,
        )
        key = await w.partners.CreateApiKey(
            partners_pb2.CreateApiKeyRequest(
                request_id=f"key-{partner_id}", parent=created.partner.name
            ),
            metadata=op,
        )
        w.keys[partner_id] = key.secret
        price_list = settlement_pb2.PriceList(
            valid_from=ts(datetime(2025, 12, 1, tzinfo=UTC)),
            currency_code="USD",
            issue_price_per_point="0.01",
            redemption_rate_per_point="0.008",
            conversion_price_per_unit="0.01",
            charity_value_per_point="0.01",
        )
        await w.settlement.CreatePriceList(
            settlement_pb2.CreatePriceListRequest(
                request_id=f"prices-{partner_id}",
                parent=created.partner.name,
                price_list=price_list,
            ),
            metadata=op,
        )
    for owner in OWNERS:
        spare = await w.partners.CreateApiKey(
            partners_pb2.CreateApiKeyRequest(
                request_id=f"spare-{owner}", parent=f"partners/{owner}", display_name="to revoke"
            ),
            metadata=op,
        )
        await w.partners.RevokeApiKey(
            partners_pb2.RevokeApiKeyRequest(request_id=f"revoke-{owner}", name=spare.api_key.name),
            metadata=op,
        )
        w.revoked[owner] = spare.secret
        w.certs[owner] = issue_certificates(authority, owner)

    member = await w.enroll("Ada Lovelace", email="ada@example.com", phone_number="+14155550100")
    w.member, w.loyalty_number = member.name, member.loyalty_number
    # Enough points for every burn of the run, then one earn per partner with its own marker.
    await w.earn(HOTEL_A, w.member, 2_000_000, "HOTEL-A-BULK")
    for partner_id in (HOTEL_A, HOTEL_B, RIDE_CO, AIR_A, AIR_B, SHOP_CO, AGENCY_B):
        await w.earn(partner_id, w.member, 10_000, f"{partner_id.upper()}-REF-1")
    await w.points.EarnPoints(
        points_pb2.EarnPointsRequest(
            request_id=w.rid(),
            member=ref(w.member),
            purchase=usd(10_000),
            partner_reference="AGENCY-A-BOOKING-1",
            on_behalf_of=f"partners/{AIR_A}",
        ),
        metadata=w.auth(AGENCY_A),
    )
    await w.points.RedeemPoints(
        points_pb2.RedeemPointsRequest(
            request_id=w.rid(), member=ref(w.member), points=50, partner_reference="HOTEL-B-BURN"
        ),
        metadata=w.auth(HOTEL_B),
    )
    for partner_id, external in ((HOTEL_A, "guest-a1"), (HOTEL_B, "guest-b1")):
        await w.link(w.member, account(partner_id, external))
    await w.link(w.member, program_number(AIR_A, "AIRA0001"))
    await w.link(w.member, program_number(AIR_B, "AIRB0001"))

    for partner_id in (HOTEL_A, HOTEL_B):
        reward = rewards_pb2.Reward(
            display_name=f"{display_name(partner_id)} gift",
            kind=rewards_pb2.Reward.KIND_GIFT,
            points_price=10,
            voucher_validity=duration_pb2.Duration(seconds=30 * 86_400),
        )
        created_reward = await w.rewards.CreateReward(
            rewards_pb2.CreateRewardRequest(
                request_id=w.rid(), parent=f"partners/{partner_id}", reward=reward
            ),
            metadata=op,
        )
        if partner_id == HOTEL_A:
            w.reward_a = created_reward.reward.name
    w.voucher_a = await w.redeem_voucher()

    for charity in (CHARITY_A, CHARITY_B):
        donated = await w.donations_stub.DonatePoints(
            donations_pb2.DonatePointsRequest(
                request_id=w.rid(), member=ref(w.member), charity=f"charities/{charity}", points=100
            ),
            metadata=op,
        )
        w.donations[charity] = donated.donation.name
    for sponsor in (HOTEL_A, HOTEL_B):
        start, end = w.matching_window()
        await w.donations_stub.CreateMatchingCampaign(
            donations_pb2.CreateMatchingCampaignRequest(
                request_id=w.rid(),
                parent=f"charities/{CHARITY_A}",
                matching_campaign=donations_pb2.MatchingCampaign(
                    percent=50, budget_points=1_000, start_time=ts(start), end_time=ts(end)
                ),
            ),
            metadata=w.auth(sponsor),
        )
    for partner_id in (HOTEL_A, HOTEL_B):  # pledges taken by two partners for the member
        await w.donations_stub.CreatePledge(
            donations_pb2.CreatePledgeRequest(
                request_id=w.rid(), member=ref(w.member), pledge=_pledge()
            ),
            metadata=w.auth(partner_id),
        )
    # hotel-b runs a live campaign: hotel-a's quotes must not show it.
    await w.partners.CreateCampaign(
        partners_pb2.CreateCampaignRequest(
            request_id=w.rid(),
            parent=f"partners/{HOTEL_B}",
            campaign=partners_pb2.Campaign(
                display_name="Hotel B double points",
                end_time=ts(datetime(2026, 12, 31, tzinfo=UTC)),
                multiplier="2",
            ),
        ),
        metadata=op,
    )
    await w.wallet.IssueWalletCard(
        wallet_pb2.IssueWalletCardRequest(request_id=w.rid(), member=ref(w.member)), metadata=op
    )

    # January is over: close it, so every partner with activity has a statement.
    assert isinstance(w.ctx.clock, FixedClock)
    w.ctx.clock.set(MATRIX_TIME)
    await w.settlement.CloseSettlementPeriod(
        settlement_pb2.CloseSettlementPeriodRequest(request_id=w.rid(), period=JANUARY),
        metadata=op,
    )


@asynccontextmanager
async def open_world(database: Database, directory: Path) -> AsyncIterator[World]:
    """A started gateway (plaintext port for keys, mTLS port for certificates) on a seeded
    network; on the way out, the ledger still verifies."""
    await truncate(database)
    # The CA starts well in the past, so that it can sign a certificate that has expired.
    authority = ca.create_ca(now=datetime.now(UTC) - timedelta(days=500))
    ctx = AppContext(
        database=database, vault=PiiVault(SECRET_KEY), clock=FixedClock(SEED_TIME), ca=authority
    )
    async with database.begin() as conn:
        _, operator_key = await partner_service.create_api_key(conn, ctx, None, "matrix operator")
    ca_pem = authority.to_pem()[0]
    server_cert = ca.issue_server_certificate(
        authority, ["localhost", "127.0.0.1"], now=datetime.now(UTC)
    )
    assert server_cert.private_key_pem is not None
    async for web in wallet_web(ctx, directory):
        server, port = await create_server("127.0.0.1:0", ctx, None, web.rig.wallet)
        mtls = TlsConfig(server_cert.certificate_pem, server_cert.private_key_pem, ca_pem)
        mtls_port = add_port(server, "127.0.0.1:0", replace(mtls, require_client_certificate=True))
        # The API-key port of `serve --tls-cert --tls-key --client-ca`: TLS, no client certificate.
        tls_port = add_port(server, "127.0.0.1:0", mtls)
        await server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        world = World(
            ctx=ctx,
            target=f"127.0.0.1:{port}",
            mtls_target=f"127.0.0.1:{mtls_port}",
            tls_target=f"127.0.0.1:{tls_port}",
            ca_pem=ca_pem,
            channel=channel,
            operator_key=operator_key,
            authority=authority,
            web=web,
        )
        try:
            await _seed(world, authority)
            yield world
        finally:
            for cert_channel in world.cert_channels.values():
                await cert_channel.close()
            await channel.close()
            await server.stop(None)
    report = await verify(ctx)
    assert report.ok, report.problems


# -- one well-formed request per row ---------------------------------------------------------

Build = Callable[[World], Awaitable[Message]]


@dataclass(frozen=True)
class Request:
    build: Build
    prepared: bool = False
    """True when build creates a fresh resource for the cell (a hold, a voucher, a link…): after
    a refused call the rightful caller sends the same request, proving nothing was touched."""


def _static(make: Callable[[World], Message]) -> Build:
    async def build(w: World) -> Message:
        return make(w)

    return build


def _hotel_a(path: str = "") -> str:
    return f"partners/{HOTEL_A}{path}"


async def _request_link_code(w: World) -> Message:
    member = await w.enroll()
    return members_pb2.RequestLinkCodeRequest(
        request_id=w.rid(),
        member=common_pb2.MemberRef(loyalty_number=member.loyalty_number),
        linked_account=account(HOTEL_A, f"guest-{w.n()}"),
    )


async def _link_account(w: World) -> Message:
    """hotel-a asked for the code: the request carries it, so only the account decides."""
    sent = await _request_link_code(w)
    assert isinstance(sent, members_pb2.RequestLinkCodeRequest)
    await w.members.RequestLinkCode(sent, metadata=w.auth(HOTEL_A))
    member = await w.members.LookupMember(
        members_pb2.LookupMemberRequest(loyalty_number=sent.member.loyalty_number),
        metadata=w.operator,
    )
    return members_pb2.LinkAccountRequest(
        request_id=w.rid(),
        member=sent.member,
        linked_account=sent.linked_account,
        verification_code=await w.link_code(member.member.name),
    )


async def _unlink_account(w: World) -> Message:
    member = await w.enroll()
    name = await w.link(member.name, account(HOTEL_A, f"guest-{w.n()}"))
    return members_pb2.UnlinkAccountRequest(request_id=w.rid(), name=name)


async def _revoke_api_key(w: World) -> Message:
    key = await w.partners.CreateApiKey(
        partners_pb2.CreateApiKeyRequest(request_id=w.rid(), parent=_hotel_a()),
        metadata=w.operator,
    )
    return partners_pb2.RevokeApiKeyRequest(request_id=w.rid(), name=key.api_key.name)


def _campaign(w: World) -> partners_pb2.Campaign:
    start = FUTURE + timedelta(days=w.n())
    return partners_pb2.Campaign(
        display_name="Matrix bonus",
        start_time=ts(start),
        end_time=ts(start + timedelta(days=1)),
        bonus_points=1,
    )


async def _end_campaign(w: World) -> Message:
    created = await w.partners.CreateCampaign(
        partners_pb2.CreateCampaignRequest(
            request_id=w.rid(), parent=_hotel_a(), campaign=_campaign(w)
        ),
        metadata=w.operator,
    )
    return partners_pb2.EndCampaignRequest(request_id=w.rid(), name=created.campaign.name)


def _earn(w: World, **fields: Any) -> points_pb2.EarnPointsRequest:
    return points_pb2.EarnPointsRequest(
        request_id=w.rid(),
        member=ref(w.member),
        purchase=usd(1_000),
        partner_reference=f"MATRIX-{w.n()}",
        **fields,
    )


async def _hold(w: World) -> str:
    """A fresh open authorization of hotel-a on the member."""
    held = await w.points.AuthorizeRedemption(
        points_pb2.AuthorizeRedemptionRequest(request_id=w.rid(), member=ref(w.member), points=10),
        metadata=w.auth(HOTEL_A),
    )
    return str(held.transaction.name)


async def _capture(w: World) -> Message:
    return points_pb2.CaptureRedemptionRequest(request_id=w.rid(), transaction=await _hold(w))


async def _void(w: World) -> Message:
    return points_pb2.VoidRedemptionRequest(request_id=w.rid(), transaction=await _hold(w))


async def _reverse(w: World) -> Message:
    earned = await w.points.EarnPoints(_earn(w), metadata=w.auth(HOTEL_A))
    return points_pb2.ReverseTransactionRequest(
        request_id=w.rid(), transaction=earned.transaction.name, reason="REFUND"
    )


async def agency_booking(w: World) -> str:
    """A fresh booking agency-a submitted for air-a (air-a's transaction, agency-a's channel)."""
    booked = await w.points.EarnPoints(
        _earn(w, on_behalf_of=f"partners/{AIR_A}"), metadata=w.auth(AGENCY_A)
    )
    assert booked.transaction.channel_partner == f"partners/{AGENCY_A}", booked
    return str(booked.transaction.name)


async def _reverse_booking(w: World) -> Message:
    return points_pb2.ReverseTransactionRequest(
        request_id=w.rid(), transaction=await agency_booking(w), reason="CANCELLED"
    )


async def _consume(w: World) -> Message:
    return rewards_pb2.ConsumeVoucherRequest(request_id=w.rid(), code=await w.redeem_voucher())


def _matching(w: World, sponsor: str = _hotel_a()) -> donations_pb2.MatchingCampaign:
    start, end = w.matching_window()
    return donations_pb2.MatchingCampaign(
        sponsor=sponsor, percent=50, budget_points=1_000, start_time=ts(start), end_time=ts(end)
    )


async def _end_matching(w: World) -> Message:
    created = await w.donations_stub.CreateMatchingCampaign(
        donations_pb2.CreateMatchingCampaignRequest(
            request_id=w.rid(), parent=f"charities/{CHARITY_A}", matching_campaign=_matching(w)
        ),
        metadata=w.operator,
    )
    return donations_pb2.EndMatchingCampaignRequest(
        request_id=w.rid(), name=created.matching_campaign.name
    )


def _pledge() -> donations_pb2.Pledge:
    return donations_pb2.Pledge(
        charity=f"charities/{CHARITY_A}", kind=donations_pb2.PLEDGE_KIND_MONTHLY, points=100
    )


async def _create_pledge(w: World) -> Message:
    member = await w.enroll()  # a member has at most 10 MONTHLY pledges
    return donations_pb2.CreatePledgeRequest(
        request_id=w.rid(), member=ref(member.name), pledge=_pledge()
    )


async def _cancel_pledge(w: World) -> Message:
    made = await w.donations_stub.CreatePledge(await _create_pledge(w), metadata=w.auth(HOTEL_A))
    return donations_pb2.CancelPledgeRequest(request_id=w.rid(), name=made.pledge.name)


def _price_list(w: World) -> settlement_pb2.PriceList:
    return settlement_pb2.PriceList(
        valid_from=ts(datetime(2026, 6, 1, tzinfo=UTC) + timedelta(days=w.n())),
        currency_code="USD",
        issue_price_per_point="0.011",
    )


STATEMENT_A = f"{JANUARY}/statements/{HOTEL_A}"

REQUESTS: dict[str, Request] = {
    # MemberService
    "MemberService.EnrollMember": Request(
        _static(
            lambda w: members_pb2.EnrollMemberRequest(
                request_id=w.rid(),
                member=members_pb2.Member(
                    display_name="Matrix Member", email=f"new{w.n()}@example.com"
                ),
            )
        )
    ),
    "MemberService.GetMember": Request(
        _static(lambda w: members_pb2.GetMemberRequest(name=w.member))
    ),
    "MemberService.UpdateMember": Request(
        _static(
            lambda w: members_pb2.UpdateMemberRequest(
                request_id=w.rid(),
                member=members_pb2.Member(name=w.member, display_name="Ada Lovelace"),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
            )
        )
    ),
    "MemberService.LookupMember": Request(
        _static(lambda w: members_pb2.LookupMemberRequest(loyalty_number=w.loyalty_number))
    ),
    "MemberService.LookupMember.by_partner_account": Request(
        _static(
            lambda w: members_pb2.LookupMemberRequest(
                partner_account=common_pb2.PartnerAccount(
                    partner=_hotel_a(), external_id="guest-a1"
                )
            )
        )
    ),
    "MemberService.LookupMember.by_program_number": Request(
        _static(
            lambda w: members_pb2.LookupMemberRequest(
                program_number=common_pb2.ProgramNumber(
                    program=f"partners/{AIR_A}", number="AIRA0001"
                )
            )
        )
    ),
    "MemberService.RequestLinkCode": Request(_request_link_code),
    "MemberService.LinkAccount": Request(_link_account, prepared=True),
    "MemberService.UnlinkAccount": Request(_unlink_account, prepared=True),
    "MemberService.ListLinkedAccounts": Request(
        _static(lambda w: members_pb2.ListLinkedAccountsRequest(member=ref(w.member)))
    ),
    "MemberService.GetBalance": Request(
        _static(lambda w: members_pb2.GetBalanceRequest(member=ref(w.member)))
    ),
    "MemberService.ListTransactions": Request(
        _static(lambda w: members_pb2.ListTransactionsRequest(member=ref(w.member)))
    ),
    # PartnerService
    "PartnerService.CreatePartner": Request(
        _static(
            lambda w: partners_pb2.CreatePartnerRequest(
                request_id=w.rid(),
                partner_id=f"new-partner-{w.n()}",
                partner=partners_pb2.Partner(
                    display_name="New", type=partners_pb2.PARTNER_TYPE_HOTEL, base_earn_rate="1"
                ),
            )
        )
    ),
    "PartnerService.GetPartner": Request(
        _static(lambda w: partners_pb2.GetPartnerRequest(name=_hotel_a()))
    ),
    "PartnerService.ListPartners": Request(_static(lambda w: partners_pb2.ListPartnersRequest())),
    "PartnerService.UpdatePartner": Request(
        _static(
            lambda w: partners_pb2.UpdatePartnerRequest(
                request_id=w.rid(),
                partner=partners_pb2.Partner(name=_hotel_a(), display_name=display_name(HOTEL_A)),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
            )
        )
    ),
    "PartnerService.CreateApiKey": Request(
        _static(lambda w: partners_pb2.CreateApiKeyRequest(request_id=w.rid(), parent=_hotel_a()))
    ),
    "PartnerService.RevokeApiKey": Request(_revoke_api_key, prepared=True),
    "PartnerService.ListApiKeys": Request(
        _static(lambda w: partners_pb2.ListApiKeysRequest(parent=_hotel_a()))
    ),
    "PartnerService.IssueClientCertificate": Request(
        _static(
            lambda w: partners_pb2.IssueClientCertificateRequest(
                request_id=w.rid(), parent=_hotel_a(), csr_pem=ca.make_csr("matrix")[1].decode()
            )
        )
    ),
    "PartnerService.CreateCampaign": Request(
        _static(
            lambda w: partners_pb2.CreateCampaignRequest(
                request_id=w.rid(), parent=_hotel_a(), campaign=_campaign(w)
            )
        )
    ),
    "PartnerService.ListCampaigns": Request(
        _static(lambda w: partners_pb2.ListCampaignsRequest(parent=_hotel_a()))
    ),
    "PartnerService.EndCampaign": Request(_end_campaign, prepared=True),
    # PointsService
    "PointsService.QuoteEarn": Request(
        _static(lambda w: points_pb2.QuoteEarnRequest(member=ref(w.member), purchase=usd(1_000)))
    ),
    "PointsService.QuoteEarn.on_behalf_of": Request(
        _static(
            lambda w: points_pb2.QuoteEarnRequest(
                member=ref(w.member), purchase=usd(1_000), on_behalf_of=f"partners/{AIR_A}"
            )
        )
    ),
    "PointsService.EarnPoints": Request(_static(_earn)),
    "PointsService.EarnPoints.on_behalf_of": Request(
        _static(lambda w: _earn(w, on_behalf_of=f"partners/{AIR_A}"))
    ),
    "PointsService.StreamEarnPoints": Request(
        _static(lambda w: points_pb2.StreamEarnPointsRequest(request=_earn(w)))
    ),
    "PointsService.RedeemPoints": Request(
        _static(
            lambda w: points_pb2.RedeemPointsRequest(
                request_id=w.rid(), member=ref(w.member), points=10, partner_reference="MATRIX"
            )
        )
    ),
    "PointsService.AuthorizeRedemption": Request(
        _static(
            lambda w: points_pb2.AuthorizeRedemptionRequest(
                request_id=w.rid(), member=ref(w.member), points=10
            )
        )
    ),
    "PointsService.CaptureRedemption": Request(_capture, prepared=True),
    "PointsService.VoidRedemption": Request(_void, prepared=True),
    "PointsService.ReverseTransaction": Request(_reverse, prepared=True),
    "PointsService.ReverseTransaction.agency_booking": Request(_reverse_booking, prepared=True),
    "PointsService.ConvertPoints": Request(
        _static(
            lambda w: points_pb2.ConvertPointsRequest(
                request_id=w.rid(), member=ref(w.member), program=f"partners/{AIR_A}", points=100
            )
        )
    ),
    # RewardService
    "RewardService.CreateReward": Request(
        _static(
            lambda w: rewards_pb2.CreateRewardRequest(
                request_id=w.rid(),
                parent=_hotel_a(),
                reward=rewards_pb2.Reward(
                    display_name="Matrix reward",
                    kind=rewards_pb2.Reward.KIND_GIFT,
                    points_price=10,
                    voucher_validity=duration_pb2.Duration(seconds=86_400),
                ),
            )
        )
    ),
    "RewardService.ListRewards": Request(_static(lambda w: rewards_pb2.ListRewardsRequest())),
    "RewardService.RedeemReward": Request(
        _static(
            lambda w: rewards_pb2.RedeemRewardRequest(
                request_id=w.rid(), member=ref(w.member), reward=w.reward_a
            )
        )
    ),
    "RewardService.ValidateVoucher": Request(
        _static(lambda w: rewards_pb2.ValidateVoucherRequest(code=w.voucher_a))
    ),
    "RewardService.ConsumeVoucher": Request(_consume, prepared=True),
    # DonationService
    "DonationService.ListCharities": Request(
        _static(lambda w: donations_pb2.ListCharitiesRequest())
    ),
    "DonationService.DonatePoints": Request(
        _static(
            lambda w: donations_pb2.DonatePointsRequest(
                request_id=w.rid(),
                member=ref(w.member),
                charity=f"charities/{CHARITY_A}",
                points=100,
            )
        )
    ),
    "DonationService.GetDonationReceipt": Request(
        _static(
            lambda w: donations_pb2.GetDonationReceiptRequest(
                name=w.donations[CHARITY_A], format=donations_pb2.RECEIPT_FORMAT_DATA
            )
        )
    ),
    "DonationService.ListDonations": Request(
        _static(lambda w: donations_pb2.ListDonationsRequest(parent=f"charities/{CHARITY_A}"))
    ),
    "DonationService.ListDonations.of_member": Request(
        _static(lambda w: donations_pb2.ListDonationsRequest(parent=w.member))
    ),
    "DonationService.CreateMatchingCampaign": Request(
        _static(
            lambda w: donations_pb2.CreateMatchingCampaignRequest(
                request_id=w.rid(), parent=f"charities/{CHARITY_A}", matching_campaign=_matching(w)
            )
        )
    ),
    "DonationService.ListMatchingCampaigns": Request(
        _static(
            lambda w: donations_pb2.ListMatchingCampaignsRequest(parent=f"charities/{CHARITY_A}")
        )
    ),
    "DonationService.EndMatchingCampaign": Request(_end_matching, prepared=True),
    "DonationService.CreatePledge": Request(_create_pledge),
    "DonationService.ListPledges": Request(
        _static(lambda w: donations_pb2.ListPledgesRequest(member=ref(w.member)))
    ),
    "DonationService.CancelPledge": Request(_cancel_pledge, prepared=True),
    # WalletService
    "WalletService.IssueWalletCard": Request(
        _static(
            lambda w: wallet_pb2.IssueWalletCardRequest(request_id=w.rid(), member=ref(w.member))
        )
    ),
    "WalletService.GetWalletCard": Request(
        _static(lambda w: wallet_pb2.GetWalletCardRequest(member=ref(w.member)))
    ),
    # SettlementService
    "SettlementService.CloseSettlementPeriod": Request(
        _static(
            lambda w: settlement_pb2.CloseSettlementPeriodRequest(
                request_id=w.rid(), period=JANUARY
            )
        )
    ),
    "SettlementService.GetStatement": Request(
        _static(lambda w: settlement_pb2.GetStatementRequest(name=STATEMENT_A))
    ),
    "SettlementService.ListStatements": Request(
        _static(lambda w: settlement_pb2.ListStatementsRequest(parent=JANUARY))
    ),
    "SettlementService.ListStatementLines": Request(
        _static(lambda w: settlement_pb2.ListStatementLinesRequest(parent=STATEMENT_A))
    ),
    "SettlementService.GetNettingReport": Request(
        _static(lambda w: settlement_pb2.GetNettingReportRequest(period=JANUARY))
    ),
    "SettlementService.ReconcilePartnerFile": Request(
        _static(
            lambda w: settlement_pb2.ReconcilePartnerFileRequest(
                request_id=w.rid(),
                partner=_hotel_a(),
                period=JANUARY,
                file_content=b"partner_reference,points\nHOTEL-A-REF-1,100\n",
                format=settlement_pb2.PARTNER_FILE_FORMAT_CSV,
            )
        )
    ),
    "SettlementService.CreateAdjustment": Request(
        _static(
            lambda w: settlement_pb2.CreateAdjustmentRequest(
                request_id=w.rid(),
                partner=_hotel_a(),
                points=10,
                reason="matrix correction",
                reference=f"ADJ-{w.n()}",
            )
        )
    ),
    "SettlementService.CreatePriceList": Request(
        _static(
            lambda w: settlement_pb2.CreatePriceListRequest(
                request_id=w.rid(), parent=_hotel_a(), price_list=_price_list(w)
            )
        )
    ),
    "SettlementService.ListPriceLists": Request(
        _static(lambda w: settlement_pb2.ListPriceListsRequest(parent=_hotel_a()))
    ),
    "SettlementService.SetFxRate": Request(
        _static(
            lambda w: settlement_pb2.SetFxRateRequest(
                request_id=w.rid(), period=FEBRUARY, currency_code="EUR", rate="0.92"
            )
        )
    ),
}


def markers_of(partner_id: str) -> list[str]:
    """Strings only a partner's own data carries: its name, display name and references."""
    return [
        f"partners/{partner_id}",
        f"charities/{partner_id}",
        display_name(partner_id),
        f"{partner_id.upper()}-",
    ]


def leaked(response: Message, partner_ids: list[str]) -> list[str]:
    """The markers of these partners found anywhere in the response."""
    shown = str(response)
    return [
        marker
        for partner_id in partner_ids
        for marker in markers_of(partner_id)
        if re.search(re.escape(marker) + r"(?![a-z0-9])", shown)
    ]
