"""The SDK's retry loop and error parsing, without any network: fake calls raise AioRpcError."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from coalition.v1 import common_pb2, members_pb2
from partners.sdk import (
    CoalitionClient,
    CoalitionError,
    InvalidArgumentError,
    RetryPolicy,
    UnavailableError,
    call_with_retry,
    error_from_rpc,
    member_ref,
)

UNREACHABLE = "127.0.0.1:9"  # a channel is created but never used: the stubs are replaced


def unavailable() -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(),
        details="connection refused",
    )


def rich_error(code: grpc.StatusCode, message: str, *details: Any) -> grpc.aio.AioRpcError:
    packed = []
    for detail in details:
        holder = any_pb2.Any()
        holder.Pack(detail)
        packed.append(holder)
    status = status_pb2.Status(code=code.value[0], message=message, details=packed)
    return grpc.aio.AioRpcError(
        code,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(("grpc-status-details-bin", status.SerializeToString())),
        details=message,
    )


class Recorder:
    """A fake unary-unary multicallable: fails `failures` times with UNAVAILABLE, then answers."""

    def __init__(self, failures: int, response: Any) -> None:
        self.failures = failures
        self.response = response
        self.request_ids: list[str] = []
        self.metadata: list[Any] = []

    async def __call__(self, request: Any, *, metadata: Any, **_: Any) -> Any:
        self.request_ids.append(request.request_id)
        self.metadata.append(metadata)
        if len(self.request_ids) <= self.failures:
            raise unavailable()
        return self.response


def tiny(attempts: int, retries: list[tuple[int, float]] | None = None) -> RetryPolicy:
    def on_retry(attempt: int, err: CoalitionError, delay: float) -> None:
        assert isinstance(err, UnavailableError)
        if retries is not None:
            retries.append((attempt, delay))

    return RetryPolicy(
        attempts_max=attempts, backoff_s_initial=0.001, backoff_s_max=0.002, on_retry=on_retry
    )


async def test_retry_loop_retries_unavailable_until_success() -> None:
    calls = 0

    async def attempt() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise unavailable()
        return "ok"

    retries: list[tuple[int, float]] = []
    assert await call_with_retry(attempt, tiny(3, retries)) == "ok"
    assert calls == 3
    assert [a for a, _ in retries] == [1, 2]
    assert all(0.0 <= delay <= 0.002 for _, delay in retries)


async def test_retry_loop_gives_up_after_attempts_max() -> None:
    calls = 0

    async def attempt() -> str:
        nonlocal calls
        calls += 1
        raise unavailable()

    with pytest.raises(UnavailableError) as caught:
        await call_with_retry(attempt, tiny(3))
    assert calls == 3
    assert caught.value.attempts == 3
    assert isinstance(caught.value.__cause__, grpc.aio.AioRpcError)


async def test_retry_loop_does_not_retry_other_codes() -> None:
    calls = 0

    async def attempt() -> str:
        nonlocal calls
        calls += 1
        raise rich_error(grpc.StatusCode.INVALID_ARGUMENT, "bad")

    with pytest.raises(InvalidArgumentError) as caught:
        await call_with_retry(attempt, tiny(5))
    assert calls == 1
    assert caught.value.attempts == 1


async def test_mutation_reuses_one_request_id_across_retries() -> None:
    enrolled = members_pb2.Member(name="members/m1", display_name="Ada")
    fake = Recorder(failures=2, response=members_pb2.EnrollMemberResponse(member=enrolled))
    retries: list[tuple[int, float]] = []
    async with CoalitionClient(UNREACHABLE, "secret-key", retry=tiny(3, retries)) as client:
        client.members.EnrollMember = fake  # type: ignore[method-assign]
        member = await client.enroll_member("Ada")
        assert member == enrolled
        first_ids = list(fake.request_ids)

        fake.request_ids.clear()
        fake.failures = 0
        await client.enroll_member("Ada")
        second_id = fake.request_ids[0]

    assert len(first_ids) == 3 and len(set(first_ids)) == 1
    uuid.UUID(first_ids[0])  # generated, a uuid4 string
    assert second_id != first_ids[0]  # a new logical call gets a new id
    assert [a for a, _ in retries] == [1, 2]
    assert fake.metadata[0] == (("authorization", "Bearer secret-key"),)


async def test_given_request_id_is_sent_on_every_retry() -> None:
    fake = Recorder(failures=2, response=members_pb2.EnrollMemberResponse())
    async with CoalitionClient(UNREACHABLE, "k", retry=tiny(3)) as client:
        client.members.EnrollMember = fake  # type: ignore[method-assign]
        await client.enroll_member("Ada", request_id="enroll-42")
    assert fake.request_ids == ["enroll-42"] * 3


async def test_points_mutation_exhausting_retries_raises_unavailable() -> None:
    fake = Recorder(failures=99, response=None)
    async with CoalitionClient(UNREACHABLE, "k", retry=tiny(2)) as client:
        client.points.RedeemPoints = fake  # type: ignore[method-assign]
        with pytest.raises(UnavailableError) as caught:
            await client.redeem_points("123456789012", 10)
    assert caught.value.attempts == 2
    assert len(fake.request_ids) == 2 and fake.request_ids[0] == fake.request_ids[1]


def test_error_from_rpc_reads_error_info_bad_request_and_retry_info() -> None:
    err = error_from_rpc(
        rich_error(
            grpc.StatusCode.INVALID_ARGUMENT,
            "check digit mismatch",
            error_details_pb2.ErrorInfo(
                reason="INVALID_LOYALTY_NUMBER", domain="coalition.v1", metadata={"k": "v"}
            ),
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field="loyalty_number", description="wrong check digit"
                    )
                ]
            ),
            error_details_pb2.RetryInfo(
                retry_delay=duration_pb2.Duration(seconds=2, nanos=500_000_000)
            ),
        )
    )
    assert isinstance(err, InvalidArgumentError)
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.reason == "INVALID_LOYALTY_NUMBER"
    assert err.message == "check digit mismatch"
    assert err.metadata == {"k": "v"}
    assert err.field_violations == [("loyalty_number", "wrong check digit")]
    assert err.retry_after_s == 2.5


def test_error_from_rpc_without_details_falls_back_to_the_status_line() -> None:
    err = error_from_rpc(
        grpc.aio.AioRpcError(grpc.StatusCode.DATA_LOSS, None, None, details="gone")
    )
    assert type(err) is CoalitionError
    assert (err.code, err.reason, err.message) == (grpc.StatusCode.DATA_LOSS, "", "gone")
    assert err.field_violations == [] and err.retry_after_s is None


def test_error_from_rpc_reads_details_even_when_the_status_line_disagrees() -> None:
    status = status_pb2.Status(code=code_pb2.NOT_FOUND, message="inner")
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason="MEMBER_NOT_FOUND", domain="coalition.v1"))
    status.details.append(info)
    raw = grpc.aio.AioRpcError(
        grpc.StatusCode.NOT_FOUND,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(("grpc-status-details-bin", status.SerializeToString())),
        details="outer",  # differs from the Status message: from_call refuses it
    )
    err = error_from_rpc(raw)
    assert err.reason == "MEMBER_NOT_FOUND"


def test_backoff_is_full_jitter_under_a_capped_exponential_bound() -> None:
    policy = RetryPolicy(attempts_max=10, backoff_s_initial=0.1, backoff_s_max=0.5)
    for attempt, bound in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.5), (9, 0.5)]:
        delays = [policy.backoff_s(attempt) for _ in range(200)]
        assert all(0.0 <= d <= bound for d in delays)
        assert max(delays) > bound / 2  # spread over the range, not a fixed delay


def test_member_ref_reads_loyalty_numbers_names_and_phones() -> None:
    assert member_ref("123456789012") == common_pb2.MemberRef(loyalty_number="123456789012")
    assert member_ref("members/abc") == common_pb2.MemberRef(member="members/abc")
    assert member_ref("+14155550123") == common_pb2.MemberRef(phone_number="+14155550123")
    ref = common_pb2.MemberRef(member="members/x")
    assert member_ref(ref) is ref


def test_client_needs_a_key_or_a_client_certificate() -> None:
    with pytest.raises(ValueError):
        CoalitionClient(UNREACHABLE)
