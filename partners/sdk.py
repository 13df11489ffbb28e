"""The partner SDK: a typed async client for the Coalition gateway.

    from partners.sdk import CoalitionClient, FailedPreconditionError, TlsOptions

    async with CoalitionClient("gateway.example:443", api_key, tls=TlsOptions()) as client:
        member = await client.enroll_member("Ada Lovelace", phone_number="+14155550123")
        same = await client.lookup_member(loyalty_number=member.loyalty_number)
        balance = await client.get_balance("+14155550123")  # or the loyalty number, or name
        try:
            await client.redeem_points(member.loyalty_number, 500, partner_reference="R-1")
        except FailedPreconditionError as err:  # err.reason == "INSUFFICIENT_POINTS"
            print(err.reason, err.metadata, err.field_violations)

Every failed call raises a `CoalitionError` subclass chosen by gRPC status code, carrying the
ErrorInfo reason and metadata, the BadRequest field violations and the RetryInfo delay. Calls
that fail with UNAVAILABLE are retried with exponential backoff and full jitter, and calls over
the partner's rate limit (RESOURCE_EXHAUSTED with RetryInfo) after the delay the gateway asks
for (up to RETRY_AFTER_S_MAX, with jitter on top, within the same attempts); a mutation
generates its `request_id` once per logical call and sends the same one on every retry, so a
retry can never apply a mutation twice. The raw stubs (`client.members`, `client.partners`,
`client.points`) reach every RPC; pass `metadata=client.metadata` and catch
`grpc.aio.AioRpcError` (convert it with `error_from_rpc`) when using them.
"""

from __future__ import annotations

import asyncio
import random
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

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

if TYPE_CHECKING:
    from coalition.v1.donations_pb2_grpc import DonationServiceAsyncStub
    from coalition.v1.members_pb2_grpc import MemberServiceAsyncStub
    from coalition.v1.partners_pb2_grpc import PartnerServiceAsyncStub
    from coalition.v1.points_pb2_grpc import PointsServiceAsyncStub
    from coalition.v1.rewards_pb2_grpc import RewardServiceAsyncStub
    from coalition.v1.settlement_pb2_grpc import SettlementServiceAsyncStub
    from coalition.v1.wallet_pb2_grpc import WalletServiceAsyncStub

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "RETRY_AFTER_S_MAX",
    "RETRY_ATTEMPTS_MAX",
    "RETRY_BACKOFF_S_INITIAL",
    "RETRY_BACKOFF_S_MAX",
    "AlreadyExistsError",
    "CoalitionClient",
    "CoalitionError",
    "FailedPreconditionError",
    "InvalidArgumentError",
    "NotFoundError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "RetryPolicy",
    "TlsOptions",
    "UnauthenticatedError",
    "UnavailableError",
    "UnimplementedError",
    "call_with_retry",
    "error_from_rpc",
    "member_ref",
]

ERROR_DOMAIN = "coalition.v1"
STATUS_DETAILS_KEY = "grpc-status-details-bin"
DEFAULT_TIMEOUT_S = 10.0
"""Deadline of each attempt of a call."""
RETRY_ATTEMPTS_MAX = 4
"""Attempts of one logical call, the first included."""
RETRY_BACKOFF_S_INITIAL = 0.2
"""Upper bound of the first backoff; the bound doubles after every failed attempt."""
RETRY_BACKOFF_S_MAX = 5.0
"""Cap on the backoff bound."""
RETRY_AFTER_S_MAX = 30.0
"""Longest RetryInfo delay waited out; a gateway asking for more gets the error raised."""
USER_AGENT = "coalition-python-sdk/0.1"

_LOYALTY_NUMBER = re.compile(r"[0-9]{12}")
_MEMBER_NAME_PREFIX = "members/"
_PARTNER_NAME_PREFIX = "partners/"

R = TypeVar("R")


# Errors ------------------------------------------------------------------------------------


class CoalitionError(Exception):
    """A failed call: the gRPC status and the google.rpc details the gateway attached."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str = "",
        metadata: dict[str, str] | None = None,
        field_violations: list[tuple[str, str]] | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(f"{code.name}: {reason + ': ' if reason else ''}{message}")
        self.code = code
        self.reason = reason
        self.message = message
        self.metadata: dict[str, str] = dict(metadata or {})
        self.field_violations: list[tuple[str, str]] = list(field_violations or [])
        self.retry_after_s = retry_after_s
        self.attempts = 1
        """How many attempts the call made before giving up with this error."""


class InvalidArgumentError(CoalitionError):
    """INVALID_ARGUMENT: see `field_violations` for which fields are wrong."""


class NotFoundError(CoalitionError):
    """NOT_FOUND (MEMBER_NOT_FOUND, PARTNER_NOT_FOUND, TRANSACTION_NOT_FOUND, ...)."""


class AlreadyExistsError(CoalitionError):
    """ALREADY_EXISTS (PHONE_NUMBER_TAKEN, REQUEST_ID_REUSED, ...)."""


class FailedPreconditionError(CoalitionError):
    """FAILED_PRECONDITION (INSUFFICIENT_POINTS, HOLD_EXPIRED, ...)."""


class UnauthenticatedError(CoalitionError):
    """UNAUTHENTICATED: a missing, wrong or revoked API key or certificate."""


class PermissionDeniedError(CoalitionError):
    """PERMISSION_DENIED (OPERATOR_ONLY, PARTNER_NOT_AUTHORIZED, ...)."""


class ResourceExhaustedError(CoalitionError):
    """RESOURCE_EXHAUSTED: RATE_LIMITED (the call was retried after `retry_after_s` until
    `attempts`, see RetryPolicy; wait that long before calling again), or a message over the
    gateway's size limit (no `retry_after_s`: never retried)."""


class UnavailableError(CoalitionError):
    """UNAVAILABLE: the gateway could not be reached, after every retry."""


class UnimplementedError(CoalitionError):
    """UNIMPLEMENTED (NOT_YET_AVAILABLE): part of the contract, not served by this gateway yet."""


_ERROR_TYPES: dict[grpc.StatusCode, type[CoalitionError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.UNIMPLEMENTED: UnimplementedError,
}


def _rich_status(err: grpc.aio.AioRpcError) -> status_pb2.Status | None:
    """The google.rpc.Status in the trailers, if any (and even if it disagrees with the code)."""
    try:
        found: status_pb2.Status | None = rpc_status.from_call(err)
        return found
    except (ValueError, DecodeError):
        pass  # code or message disagree with the status line: read the trailer ourselves
    for key, value in err.trailing_metadata() or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            try:
                return status_pb2.Status.FromString(value)
            except DecodeError:
                return None
    return None


def error_from_rpc(err: grpc.aio.AioRpcError) -> CoalitionError:
    """The typed error for a failed call, with its ErrorInfo, BadRequest and RetryInfo."""
    code: grpc.StatusCode = err.code()
    message: str = err.details() or ""
    reason = ""
    metadata: dict[str, str] = {}
    violations: list[tuple[str, str]] = []
    retry_after_s: float | None = None
    status = _rich_status(err)
    if status is not None:
        message = status.message or message
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                if not reason or info.domain == ERROR_DOMAIN:
                    reason, metadata = info.reason, dict(info.metadata)
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations.extend((v.field, v.description) for v in bad.field_violations)
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry = error_details_pb2.RetryInfo()
                detail.Unpack(retry)
                retry_after_s = retry.retry_delay.ToTimedelta().total_seconds()
    kind = _ERROR_TYPES.get(code, CoalitionError)
    return kind(
        code,
        message,
        reason=reason,
        metadata=metadata,
        field_violations=violations,
        retry_after_s=retry_after_s,
    )


# Retries -----------------------------------------------------------------------------------

RetryHook = Callable[[int, CoalitionError, float], None]
"""Called before each retry with the attempt that failed (1-based), its error and the delay."""


@dataclass(frozen=True)
class RetryPolicy:
    """Retries on UNAVAILABLE with exponential backoff and full jitter, and on
    RESOURCE_EXHAUSTED that carries RetryInfo (RATE_LIMITED) after the delay it asks for.

    Attempt n (1-based) that fails is followed by a sleep drawn uniformly from
    [0, min(backoff_s_max, backoff_s_initial * 2 ** (n - 1))]; when the error carries a
    RetryInfo delay d, from [d, d + min(d, backoff_s_max)] instead: never sooner than the
    gateway asked, and spread so that callers refused together do not come back together. A
    delay over retry_after_s_max is not waited out: the error is raised at once.
    RESOURCE_EXHAUSTED without RetryInfo (a message over the size limit) is never retried.
    """

    attempts_max: int = RETRY_ATTEMPTS_MAX
    backoff_s_initial: float = RETRY_BACKOFF_S_INITIAL
    backoff_s_max: float = RETRY_BACKOFF_S_MAX
    on_retry: RetryHook | None = None
    retryable: frozenset[grpc.StatusCode] = field(
        default_factory=lambda: frozenset({grpc.StatusCode.UNAVAILABLE})
    )
    retry_after_s_max: float = RETRY_AFTER_S_MAX
    """0 turns retrying on RetryInfo off."""

    def __post_init__(self) -> None:
        if self.attempts_max < 1:
            raise ValueError("attempts_max must be at least 1")
        if self.backoff_s_initial < 0 or self.backoff_s_max < 0:
            raise ValueError("backoff bounds must not be negative")
        if self.retry_after_s_max < 0:
            raise ValueError("retry_after_s_max must not be negative")

    def delay_s(self, attempt: int, err: CoalitionError) -> float | None:
        """The sleep before retrying after failed attempt `attempt`, or None: do not retry."""
        after = err.retry_after_s
        if after is not None and self.retry_after_s_max > 0:
            told = err.code in self.retryable or err.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            if not told or not 0 <= after <= self.retry_after_s_max:
                return None  # not ours to retry, or longer than this client waits
            return after + random.uniform(0.0, min(after, self.backoff_s_max))
        if err.code in self.retryable:
            return self.backoff_s(attempt)
        return None

    def backoff_s(self, attempt: int) -> float:
        """The delay after failed attempt `attempt` (1-based), with full jitter."""
        bound = min(self.backoff_s_max, self.backoff_s_initial * 2 ** (attempt - 1))
        return random.uniform(0.0, bound)


NO_RETRY = RetryPolicy(attempts_max=1)


async def call_with_retry(attempt: Callable[[], Awaitable[R]], policy: RetryPolicy) -> R:
    """Await `attempt()` until it succeeds or fails for good; raise a `CoalitionError`.

    `attempt` must send the same request every time (same request_id): that is what makes
    retrying a mutation safe.
    """
    for number in range(1, policy.attempts_max + 1):
        try:
            return await attempt()
        except grpc.aio.AioRpcError as rpc_err:
            err = error_from_rpc(rpc_err)
            err.attempts = number
            wait = policy.delay_s(number, err)
            if wait is None or number >= policy.attempts_max:
                raise err from rpc_err
        delay = wait
        if policy.on_retry is not None:
            policy.on_retry(number, err, delay)
        await asyncio.sleep(delay)
    raise AssertionError("unreachable: the last attempt returns or raises")


# Client ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsOptions:
    """Channel security. All None means TLS with the system roots and no client certificate.

    root_ca_pem: the CA to trust for the gateway's certificate (None: system roots).
    client_cert_pem / client_key_pem: a certificate issued by the coalition CA (mutual TLS);
    both or neither.
    server_name: overrides the name checked in the gateway's certificate (tests, IP targets).
    """

    root_ca_pem: bytes | None = None
    client_cert_pem: bytes | None = None
    client_key_pem: bytes | None = None
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.client_cert_pem is None) != (self.client_key_pem is None):
            raise ValueError("client_cert_pem and client_key_pem go together")

    @property
    def has_client_certificate(self) -> bool:
        return self.client_cert_pem is not None


def member_ref(member: common_pb2.MemberRef | str) -> common_pb2.MemberRef:
    """A MemberRef from a ref or a string: 12 digits is a loyalty number, "members/..." a
    member name, anything else a phone number (E.164, "+14155550123")."""
    if isinstance(member, common_pb2.MemberRef):
        return member
    if _LOYALTY_NUMBER.fullmatch(member):
        return common_pb2.MemberRef(loyalty_number=member)
    if member.startswith(_MEMBER_NAME_PREFIX):
        return common_pb2.MemberRef(member=member)
    return common_pb2.MemberRef(phone_number=member)


def _new_request_id(request_id: str | None) -> str:
    return request_id if request_id is not None else str(uuid.uuid4())


def _partner_type(kind: partners_pb2.PartnerType.ValueType | str) -> Any:
    if isinstance(kind, str):
        name = kind.upper()
        return partners_pb2.PartnerType.Value(
            name if name.startswith("PARTNER_TYPE_") else f"PARTNER_TYPE_{name}"
        )
    return kind


class CoalitionClient:
    """An async client for one gateway; use it as `async with CoalitionClient(...) as client`."""

    def __init__(
        self,
        target: str,
        api_key: str | None = None,
        *,
        tls: TlsOptions | None = None,
        retry: RetryPolicy = RetryPolicy(),  # frozen, so sharing the default is safe
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        if not api_key and not (tls is not None and tls.has_client_certificate):
            raise ValueError("give an api_key, or a client certificate in tls")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self.target = target
        self.retry = retry
        self.timeout_s = timeout_s
        self._tls = tls
        self._metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {api_key}"),) if api_key else ()
        )
        self._channel: grpc.aio.Channel | None = None
        self._members: MemberServiceAsyncStub | None = None
        self._partners: PartnerServiceAsyncStub | None = None
        self._points: PointsServiceAsyncStub | None = None
        self._rewards: RewardServiceAsyncStub | None = None
        self._donations: DonationServiceAsyncStub | None = None
        self._wallet: WalletServiceAsyncStub | None = None
        self._settlement: SettlementServiceAsyncStub | None = None

    # Lifecycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._channel is not None:
            raise RuntimeError("this client is already open")
        options: list[tuple[str, Any]] = [("grpc.primary_user_agent", USER_AGENT)]
        if self._tls is None:
            channel = grpc.aio.insecure_channel(self.target, options=options)
        else:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=self._tls.root_ca_pem,
                private_key=self._tls.client_key_pem,
                certificate_chain=self._tls.client_cert_pem,
            )
            if self._tls.server_name:
                options.append(("grpc.ssl_target_name_override", self._tls.server_name))
            channel = grpc.aio.secure_channel(self.target, credentials, options=options)
        self._channel = channel
        members = members_pb2_grpc.MemberServiceStub(channel)
        partners = partners_pb2_grpc.PartnerServiceStub(channel)
        points = points_pb2_grpc.PointsServiceStub(channel)
        # the generated stubs pick their async type from the channel type, which mypy cannot see
        self._members = cast("MemberServiceAsyncStub", members)
        self._partners = cast("PartnerServiceAsyncStub", partners)
        self._points = cast("PointsServiceAsyncStub", points)
        self._rewards = cast("RewardServiceAsyncStub", rewards_pb2_grpc.RewardServiceStub(channel))
        self._donations = cast(
            "DonationServiceAsyncStub", donations_pb2_grpc.DonationServiceStub(channel)
        )
        self._wallet = cast("WalletServiceAsyncStub", wallet_pb2_grpc.WalletServiceStub(channel))
        self._settlement = cast(
            "SettlementServiceAsyncStub", settlement_pb2_grpc.SettlementServiceStub(channel)
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        channel, self._channel = self._channel, None
        self._members = self._partners = self._points = None
        self._rewards = None
        self._donations = None
        self._wallet = None
        if channel is not None:
            await channel.close()

    # Raw stubs ------------------------------------------------------------------------------

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The call credentials to pass as `metadata=` to the raw stubs."""
        return self._metadata

    @property
    def members(self) -> MemberServiceAsyncStub:
        if self._members is None:
            raise RuntimeError("open the client first: async with CoalitionClient(...)")
        return self._members

    @property
    def partners(self) -> PartnerServiceAsyncStub:
        if self._partners is None:
            raise RuntimeError("open the client first: async with CoalitionClient(...)")
        return self._partners

    @property
    def points(self) -> PointsServiceAsyncStub:
        if self._points is None:
            raise RuntimeError("open the client first: async with CoalitionClient(...)")
        return self._points

    @property
    def rewards(self) -> RewardServiceAsyncStub:
        if self._rewards is None:
            raise RuntimeError("open the client first: async with CoalitionClient(...)")
        return self._rewards

    @property
    def donations(self) -> DonationServiceAsyncStub:
        if self._donations is None:
            raise RuntimeError("open the client first: async with CoalitionClient(...)")
        return self._donations

    @property
    def settlement(self) -> SettlementServiceAsyncStub:
        if self._settlement is None:
            raise RuntimeError("open the client first: async with CoalitionClient(...)")
        return self._settlement

    @property
    def wallet(self) -> WalletServiceAsyncStub:
        if self._wallet is None:
            raise RuntimeError("open the client first: async with CoalitionClient(...)")
        return self._wallet

    async def _call(self, method: Any, request: Any) -> Any:
        """One logical call: the same request (same request_id) on every attempt."""

        async def attempt() -> Any:
            return await method(request, metadata=self._metadata, timeout=self.timeout_s)

        return await call_with_retry(attempt, self.retry)

    # Members --------------------------------------------------------------------------------

    async def enroll_member(
        self,
        display_name: str,
        *,
        email: str = "",
        phone_number: str = "",
        locale: str = "",
        marketing_consent: bool = False,
        default_region: str = "",
        request_id: str | None = None,
    ) -> members_pb2.Member:
        """Enroll a member; the answer carries their new loyalty number."""
        request = members_pb2.EnrollMemberRequest(
            request_id=_new_request_id(request_id),
            member=members_pb2.Member(
                display_name=display_name,
                email=email,
                phone_number=phone_number,
                locale=locale,
                marketing_consent=marketing_consent,
            ),
            default_region=default_region,
        )
        response: members_pb2.EnrollMemberResponse = await self._call(
            self.members.EnrollMember, request
        )
        return response.member

    async def get_member(self, name: str) -> members_pb2.Member:
        """The member named "members/{member}" (the raw GetMember also returns the balance)."""
        response: members_pb2.GetMemberResponse = await self._call(
            self.members.GetMember, members_pb2.GetMemberRequest(name=name)
        )
        return response.member

    async def lookup_member(
        self,
        *,
        loyalty_number: str | None = None,
        phone_number: str | None = None,
        member: str | None = None,
        default_region: str = "",
    ) -> members_pb2.Member:
        """Find a member by exactly one of loyalty number, phone number or member name."""
        if [loyalty_number, phone_number, member].count(None) != 2:
            raise ValueError("give exactly one of loyalty_number, phone_number, member")
        request = members_pb2.LookupMemberRequest(default_region=default_region)
        if loyalty_number is not None:
            request.loyalty_number = loyalty_number
        elif phone_number is not None:
            request.phone_number = phone_number
        elif member is not None:
            request.member = member
        response: members_pb2.LookupMemberResponse = await self._call(
            self.members.LookupMember, request
        )
        return response.member

    async def get_balance(self, member: common_pb2.MemberRef | str) -> common_pb2.Balance:
        """The member's balance; a string is read as by `member_ref`."""
        response: members_pb2.GetBalanceResponse = await self._call(
            self.members.GetBalance, members_pb2.GetBalanceRequest(member=member_ref(member))
        )
        return response.balance

    # Points ---------------------------------------------------------------------------------

    async def earn_points(
        self,
        member: common_pb2.MemberRef | str,
        *,
        amount_minor: int,
        currency_code: str,
        category: str = "",
        partner_reference: str = "",
        request_id: str | None = None,
    ) -> common_pb2.PointsTransaction:
        """Credit points for a purchase at the calling partner; returns the EARN transaction."""
        request = points_pb2.EarnPointsRequest(
            request_id=_new_request_id(request_id),
            member=member_ref(member),
            purchase=common_pb2.Purchase(
                amount_minor=amount_minor, currency_code=currency_code, category=category
            ),
            partner_reference=partner_reference,
        )
        response: points_pb2.EarnPointsResponse = await self._call(self.points.EarnPoints, request)
        return response.transaction

    async def redeem_points(
        self,
        member: common_pb2.MemberRef | str,
        points: int,
        *,
        partner_reference: str = "",
        request_id: str | None = None,
    ) -> common_pb2.PointsTransaction:
        """Burn points at the calling partner; FailedPreconditionError (INSUFFICIENT_POINTS)."""
        request = points_pb2.RedeemPointsRequest(
            request_id=_new_request_id(request_id),
            member=member_ref(member),
            points=points,
            partner_reference=partner_reference,
        )
        response: points_pb2.RedeemPointsResponse = await self._call(
            self.points.RedeemPoints, request
        )
        return response.transaction

    # Rewards --------------------------------------------------------------------------------

    async def create_reward(
        self, reward: rewards_pb2.Reward, *, parent: str = "", request_id: str | None = None
    ) -> rewards_pb2.Reward:
        """Publish a reward under the calling partner (the operator names `parent`)."""
        request = rewards_pb2.CreateRewardRequest(
            request_id=_new_request_id(request_id), parent=parent, reward=reward
        )
        response: rewards_pb2.CreateRewardResponse = await self._call(
            self.rewards.CreateReward, request
        )
        return response.reward

    async def list_rewards(
        self, *, partner: str = "", available_only: bool = False, page_token: str = ""
    ) -> rewards_pb2.ListRewardsResponse:
        """One page of the catalog; pass next_page_token back for the next."""
        request = rewards_pb2.ListRewardsRequest(
            partner=partner, available_only=available_only, page_token=page_token
        )
        response: rewards_pb2.ListRewardsResponse = await self._call(
            self.rewards.ListRewards, request
        )
        return response

    async def redeem_reward(
        self, member: common_pb2.MemberRef | str, reward: str, *, request_id: str | None = None
    ) -> rewards_pb2.RedeemRewardResponse:
        """Spend a member's points on a reward ("partners/{p}/rewards/{r}"): the voucher and the
        REWARD transaction. FailedPreconditionError: INSUFFICIENT_POINTS, OUT_OF_STOCK,
        REWARD_NOT_AVAILABLE."""
        request = rewards_pb2.RedeemRewardRequest(
            request_id=_new_request_id(request_id), member=member_ref(member), reward=reward
        )
        response: rewards_pb2.RedeemRewardResponse = await self._call(
            self.rewards.RedeemReward, request
        )
        return response

    async def validate_voucher(self, code: str) -> rewards_pb2.ValidateVoucherResponse:
        """A voucher of the calling partner's rewards, and whether it can be consumed now."""
        response: rewards_pb2.ValidateVoucherResponse = await self._call(
            self.rewards.ValidateVoucher, rewards_pb2.ValidateVoucherRequest(code=code)
        )
        return response

    async def consume_voucher(
        self, code: str, *, request_id: str | None = None
    ) -> rewards_pb2.Voucher:
        """Use a voucher once. FailedPreconditionError: VOUCHER_ALREADY_CONSUMED,
        VOUCHER_EXPIRED, VOUCHER_REFUNDED; a retry with the same request_id is safe."""
        request = rewards_pb2.ConsumeVoucherRequest(
            request_id=_new_request_id(request_id), code=code
        )
        response: rewards_pb2.ConsumeVoucherResponse = await self._call(
            self.rewards.ConsumeVoucher, request
        )
        return response.voucher

    # Donations ------------------------------------------------------------------------------

    async def list_charities(
        self, *, cause: str = "", page_token: str = ""
    ) -> donations_pb2.ListCharitiesResponse:
        """One page of the charities taking donations, by name; pass next_page_token back."""
        request = donations_pb2.ListCharitiesRequest(cause=cause, page_token=page_token)
        response: donations_pb2.ListCharitiesResponse = await self._call(
            self.donations.ListCharities, request
        )
        return response

    async def donate_points(
        self,
        member: common_pb2.MemberRef | str,
        charity: str,
        points: int,
        *,
        request_id: str | None = None,
    ) -> donations_pb2.DonatePointsResponse:
        """Give a member's points to a charity ("charities/{c}"): the donation (receipt number,
        value, any sponsor's match) and the DONATION transaction. FailedPreconditionError:
        INSUFFICIENT_POINTS, BELOW_MINIMUM_DONATION, CHARITY_NOT_ACCEPTING."""
        request = donations_pb2.DonatePointsRequest(
            request_id=_new_request_id(request_id),
            member=member_ref(member),
            charity=charity,
            points=points,
        )
        response: donations_pb2.DonatePointsResponse = await self._call(
            self.donations.DonatePoints, request
        )
        return response

    async def get_donation_receipt(
        self,
        name: str,
        fmt: donations_pb2.ReceiptFormat.ValueType = donations_pb2.RECEIPT_FORMAT_DATA,
    ) -> donations_pb2.GetDonationReceiptResponse:
        """A donation's receipt as data, or with `document` rendered as HTML or PDF."""
        request = donations_pb2.GetDonationReceiptRequest(name=name, format=fmt)
        response: donations_pb2.GetDonationReceiptResponse = await self._call(
            self.donations.GetDonationReceipt, request
        )
        return response

    async def list_donations(
        self, parent: str, *, page_token: str = ""
    ) -> donations_pb2.ListDonationsResponse:
        """One page of a charity's ("charities/{c}", the charity itself) or a member's
        ("members/{m}", the operator) donations, newest first."""
        request = donations_pb2.ListDonationsRequest(parent=parent, page_token=page_token)
        response: donations_pb2.ListDonationsResponse = await self._call(
            self.donations.ListDonations, request
        )
        return response

    # Wallet cards ---------------------------------------------------------------------------

    async def issue_wallet_card(
        self, member: common_pb2.MemberRef | str, *, request_id: str | None = None
    ) -> wallet_pb2.IssueWalletCardResponse:
        """The member's wallet card, created or brought up to date: the signed Apple `.pkpass`
        bytes, the "Save to Google Wallet" URL and the card page URL (give those to the member
        only). FailedPreconditionError: WALLET_NOT_CONFIGURED."""
        request = wallet_pb2.IssueWalletCardRequest(
            request_id=_new_request_id(request_id), member=member_ref(member)
        )
        response: wallet_pb2.IssueWalletCardResponse = await self._call(
            self.wallet.IssueWalletCard, request
        )
        return response

    async def get_wallet_card(self, member: common_pb2.MemberRef | str) -> wallet_pb2.WalletCard:
        """What the member's card shows now and how many devices follow it.
        NotFoundError: WALLET_CARD_NOT_FOUND when none was issued."""
        request = wallet_pb2.GetWalletCardRequest(member=member_ref(member))
        response: wallet_pb2.GetWalletCardResponse = await self._call(
            self.wallet.GetWalletCard, request
        )
        return response.card

    # Settlement (a partner sees its own) -----------------------------------------------------

    async def get_statement(self, period: str, partner: str) -> settlement_pb2.Statement:
        """A partner's statement for a closed period ("2026-03", "partners/grand-hotel").
        FailedPreconditionError: PERIOD_NOT_CLOSED; NotFoundError: STATEMENT_NOT_FOUND."""
        name = f"settlementPeriods/{period}/statements/{partner.removeprefix('partners/')}"
        request = settlement_pb2.GetStatementRequest(name=name)
        response: settlement_pb2.GetStatementResponse = await self._call(
            self.settlement.GetStatement, request
        )
        return response.statement

    async def list_statement_lines(
        self, period: str, partner: str, *, page_size: int = 0, page_token: str = ""
    ) -> settlement_pb2.ListStatementLinesResponse:
        """One page of a statement's lines, each traceable to its transaction."""
        parent = f"settlementPeriods/{period}/statements/{partner.removeprefix('partners/')}"
        request = settlement_pb2.ListStatementLinesRequest(
            parent=parent, page_size=page_size, page_token=page_token
        )
        response: settlement_pb2.ListStatementLinesResponse = await self._call(
            self.settlement.ListStatementLines, request
        )
        return response

    async def reconcile_file(
        self,
        period: str,
        content: bytes,
        *,
        partner: str = "",
        request_id: str | None = None,
    ) -> settlement_pb2.ReconciliationResult:
        """Match a CSV of the partner's own transactions (partner_reference,points) against the
        ledger for a period; partner: empty means the caller. InvalidArgumentError: INVALID_FILE
        (its field violations name the lines)."""
        request = settlement_pb2.ReconcilePartnerFileRequest(
            request_id=_new_request_id(request_id),
            partner=partner,
            period=f"settlementPeriods/{period}",
            file_content=content,
        )
        response: settlement_pb2.ReconcilePartnerFileResponse = await self._call(
            self.settlement.ReconcilePartnerFile, request
        )
        return response.result

    # Partners (operator only) ---------------------------------------------------------------

    async def create_partner(
        self,
        partner_id: str,
        *,
        display_name: str,
        type: partners_pb2.PartnerType.ValueType | str,
        base_earn_rate: str = "",
        earn_currency_code: str = "",
        settlement_currency_code: str = "",
        webhook_url: str = "",
        authorized_airlines: list[str] | None = None,
        time_zone: str = "",
        request_id: str | None = None,
    ) -> partners_pb2.Partner:
        """Register a partner (operator only). `type` is a PartnerType or a name ("HOTEL")."""
        request = partners_pb2.CreatePartnerRequest(
            request_id=_new_request_id(request_id),
            partner_id=partner_id,
            partner=partners_pb2.Partner(
                display_name=display_name,
                type=_partner_type(type),
                base_earn_rate=base_earn_rate,
                earn_currency_code=earn_currency_code,
                settlement_currency_code=settlement_currency_code,
                webhook_url=webhook_url,
                authorized_airlines=authorized_airlines or [],
                time_zone=time_zone,
            ),
        )
        response: partners_pb2.CreatePartnerResponse = await self._call(
            self.partners.CreatePartner, request
        )
        return response.partner

    async def create_api_key(
        self, parent: str, *, display_name: str = "", request_id: str | None = None
    ) -> tuple[partners_pb2.ApiKey, str]:
        """Create an API key for a partner ("partners/{id}" or the bare id; operator only).

        Returns the key and its secret. The secret is in the first answer only: a replay of the
        same request_id returns the key with an empty secret.
        """
        if not parent.startswith(_PARTNER_NAME_PREFIX):
            parent = f"{_PARTNER_NAME_PREFIX}{parent}"
        request = partners_pb2.CreateApiKeyRequest(
            request_id=_new_request_id(request_id), parent=parent, display_name=display_name
        )
        response: partners_pb2.CreateApiKeyResponse = await self._call(
            self.partners.CreateApiKey, request
        )
        return response.api_key, response.secret
