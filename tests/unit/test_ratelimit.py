"""Per-partner rate limits without I/O: the token bucket driven by a hand-held clock, the
RetryInfo it becomes at the gRPC edge, the setting, and the SDK waiting out RetryInfo."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable

import grpc
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from gateway import config
from gateway.domain import errors
from gateway.domain.ratelimit import (
    ADMIT,
    RATE_LIMIT_BURST_S,
    RATE_LIMIT_PER_S_DEFAULT,
    RATE_LIMIT_PER_S_MAX,
    RateLimiter,
)
from gateway.entrypoints.errors import RETRY_DELAY_S_MAX, to_status
from partners.sdk import (
    CoalitionError,
    InvalidArgumentError,
    ResourceExhaustedError,
    RetryPolicy,
    UnavailableError,
    call_with_retry,
)

T0 = 1_000.0
"""An arbitrary monotonic reading: the limiter must not assume the clock starts at zero."""


def drain(limiter: RateLimiter, key: str, now: float) -> int:
    """Take tokens at `now` until refused; how many were admitted."""
    admitted = 0
    while limiter.take(key, now) == ADMIT:
        admitted += 1
        assert admitted <= limiter.capacity, "admitted more than a full bucket"
    return admitted


# -- the bucket ------------------------------------------------------------------------------


def test_a_new_partner_may_burst_the_configured_seconds_then_waits() -> None:
    limiter = RateLimiter(per_s=10, burst_s=2)
    assert limiter.capacity == 20
    assert drain(limiter, "hotel", T0) == 20
    assert limiter.take("hotel", T0) == pytest.approx(0.1)  # one token, at 10 per second


def test_the_default_burst_is_the_named_number_of_seconds() -> None:
    limiter = RateLimiter(per_s=RATE_LIMIT_PER_S_DEFAULT)
    assert limiter.capacity == RATE_LIMIT_PER_S_DEFAULT * RATE_LIMIT_BURST_S


def test_waiting_the_answer_is_enough_and_waiting_less_is_not() -> None:
    limiter = RateLimiter(per_s=4, burst_s=1)
    drain(limiter, "hotel", T0)
    wait = limiter.take("hotel", T0 + 0.1)
    assert wait == pytest.approx(0.25 - 0.1)
    assert limiter.take("hotel", T0 + 0.1 + wait / 2) > 0  # too early: refused again
    assert limiter.take("hotel", T0 + 0.1 + wait) == ADMIT
    assert limiter.take("hotel", T0 + 0.1 + wait) > 0  # that token is spent


def test_a_refused_request_uses_no_token() -> None:
    limiter = RateLimiter(per_s=1, burst_s=1)
    assert limiter.take("hotel", T0) == ADMIT
    for step in range(1, 10):  # hammering while refused does not push the next token away
        assert limiter.take("hotel", T0 + step * 0.1) == pytest.approx(1 - step * 0.1)
    assert limiter.take("hotel", T0 + 1.0) == ADMIT


def test_the_sustained_rate_is_the_limit() -> None:
    limiter = RateLimiter(per_s=50, burst_s=1)
    drain(limiter, "hotel", T0)
    admitted = sum(limiter.take("hotel", T0 + i / 1_000) == ADMIT for i in range(1, 10_001))
    assert admitted == pytest.approx(500, abs=1)  # ten seconds at 50/s


def test_an_idle_partner_never_saves_more_than_one_burst() -> None:
    limiter = RateLimiter(per_s=5, burst_s=2)
    drain(limiter, "hotel", T0)
    assert drain(limiter, "hotel", T0 + 3_600) == 10


def test_partners_have_buckets_of_their_own() -> None:
    limiter = RateLimiter(per_s=1, burst_s=3)
    assert drain(limiter, "hotel", T0) == 3
    assert limiter.take("hotel", T0) > 0
    assert drain(limiter, "taxi", T0) == 3


def test_a_slow_limit_still_admits_one_request() -> None:
    limiter = RateLimiter(per_s=0.1, burst_s=2)  # 0.2 tokens' worth: rounded up to one
    assert limiter.capacity == 1
    assert limiter.take("hotel", T0) == ADMIT
    assert limiter.take("hotel", T0) == pytest.approx(10.0)


def test_a_clock_reading_from_the_past_adds_no_tokens() -> None:
    limiter = RateLimiter(per_s=1, burst_s=1)
    assert limiter.take("hotel", T0) == ADMIT
    assert limiter.take("hotel", T0 - 5) == pytest.approx(1.0)
    assert limiter.take("hotel", T0 + 1) == ADMIT


def test_tracked_partners_are_bounded_dropping_the_least_recently_seen() -> None:
    limiter = RateLimiter(per_s=1, burst_s=1, keys_max=3)
    for key in ("a", "b", "c"):
        assert limiter.take(key, T0) == ADMIT
    assert limiter.take("a", T0 + 0.5) > 0  # "a" is now the most recently seen
    assert limiter.take("d", T0 + 0.5) == ADMIT  # drops "b", the least recently seen
    assert len(limiter) == 3
    assert limiter.take("a", T0 + 0.5) > 0  # kept: still empty
    assert limiter.take("c", T0 + 0.5) > 0  # kept
    assert limiter.take("b", T0 + 0.5) == ADMIT  # forgotten: a fresh bucket


@pytest.mark.parametrize(
    ("per_s", "burst_s", "keys_max"),
    [
        (0, 1, 1),
        (-1, 1, 1),
        (math.nan, 1, 1),
        (math.inf, 1, 1),
        (RATE_LIMIT_PER_S_MAX * 2, 1, 1),
        (1, 0, 1),
        (1, math.inf, 1),
        (1, math.nan, 1),
        (1, 1, 0),
    ],
    ids=[
        "zero",
        "negative",
        "nan",
        "inf",
        "too-high",
        "no-burst",
        "inf-burst",
        "nan-burst",
        "no-keys",
    ],
)
def test_nonsense_limits_are_refused(per_s: float, burst_s: float, keys_max: int) -> None:
    with pytest.raises(ValueError):
        RateLimiter(per_s, burst_s, keys_max)


# -- RetryInfo at the edge -----------------------------------------------------------------


def retry_delay(metadata: dict[str, str]) -> duration_pb2.Duration | None:
    status = to_status(errors.ResourceExhausted("RATE_LIMITED", "slow down", metadata))
    details = dict(status.trailing_metadata)["grpc-status-details-bin"]
    assert isinstance(details, bytes)
    for detail in status_pb2.Status.FromString(details).details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info.retry_delay
    return None


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        ("0.125", (0, 125_000_000)),
        ("2.5", (2, 500_000_000)),
        ("3", (3, 0)),
        ("0.000000001", (0, 1)),
        ("0.0000000001", (0, 1)),  # rounded up, never down to "no wait"
        ("1e9", (RETRY_DELAY_S_MAX, 0)),
    ],
    ids=["ms", "seconds-and-half", "whole", "one-ns", "sub-ns", "capped"],
)
def test_retry_info_carries_sub_second_delays(seconds: str, expected: tuple[int, int]) -> None:
    delay = retry_delay({"retry_after_s": seconds})
    assert delay is not None
    assert (delay.seconds, delay.nanos) == expected


@pytest.mark.parametrize("seconds", ["", "0", "-1", "soon", "NaN", "Infinity"])
def test_no_retry_info_without_a_positive_delay(seconds: str) -> None:
    assert retry_delay({"retry_after_s": seconds} if seconds else {}) is None


# -- the setting -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(None, RATE_LIMIT_PER_S_DEFAULT), ("0", 0.0), ("250", 250.0), ("0.5", 0.5), (" 40 ", 40.0)],
    ids=["default", "off", "whole", "fraction", "spaces"],
)
def test_rate_limit_setting(
    monkeypatch: pytest.MonkeyPatch, raw: str | None, expected: float
) -> None:
    if raw is None:
        monkeypatch.delenv("COALITION_RATE_LIMIT_PER_S", raising=False)
    else:
        monkeypatch.setenv("COALITION_RATE_LIMIT_PER_S", raw)
    assert config.rate_limit_per_s() == expected


@pytest.mark.parametrize("raw", ["-1", "fast", "", "nan", "inf", "1e7"])
def test_a_bad_rate_limit_setting_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, raw: str
) -> None:
    monkeypatch.setenv("COALITION_RATE_LIMIT_PER_S", raw)
    with pytest.raises(config.ConfigError, match="COALITION_RATE_LIMIT_PER_S"):
        config.rate_limit_per_s()


# -- the SDK waits out RetryInfo ---------------------------------------------------------------


def rate_limited(delay: duration_pb2.Duration | None) -> grpc.aio.AioRpcError:
    """RESOURCE_EXHAUSTED as the gateway sends it (with RetryInfo), or without RetryInfo as
    grpc itself answers an oversized message."""
    packed = []
    for detail in (
        error_details_pb2.ErrorInfo(reason="RATE_LIMITED", domain="coalition.v1"),
        error_details_pb2.RetryInfo(retry_delay=delay) if delay is not None else None,
    ):
        if detail is not None:
            holder = any_pb2.Any()
            holder.Pack(detail)
            packed.append(holder)
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    status = status_pb2.Status(code=code.value[0], message="slow down", details=packed)
    return grpc.aio.AioRpcError(
        code,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(("grpc-status-details-bin", status.SerializeToString())),
        details="slow down",
    )


def failing(
    errors_first: list[grpc.aio.AioRpcError],
) -> tuple[list[int], Callable[[], Awaitable[str]]]:
    """A call that fails with each of `errors_first` in turn, then answers "ok"."""
    calls: list[int] = []

    async def attempt() -> str:
        calls.append(len(calls) + 1)
        if len(calls) <= len(errors_first):
            raise errors_first[len(calls) - 1]
        return "ok"

    return calls, attempt


async def test_the_sdk_retries_after_the_delay_the_gateway_asks_for() -> None:
    slept: list[float] = []
    seen: list[CoalitionError] = []

    def on_retry(attempt: int, err: CoalitionError, delay: float) -> None:
        seen.append(err)
        slept.append(delay)

    calls, attempt = failing([rate_limited(duration_pb2.Duration(nanos=20_000_000))])
    policy = RetryPolicy(attempts_max=3, backoff_s_max=0.01, on_retry=on_retry)
    assert await call_with_retry(attempt, policy) == "ok"
    assert len(calls) == 2
    assert isinstance(seen[0], ResourceExhaustedError)
    assert seen[0].retry_after_s == pytest.approx(0.02)
    assert 0.02 <= slept[0] <= 0.03  # never sooner than asked; jitter at most min(d, cap)


def test_the_retry_delay_is_never_shorter_than_asked_and_is_spread() -> None:
    policy = RetryPolicy()
    err = ResourceExhaustedError(
        grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down", reason="RATE_LIMITED", retry_after_s=0.5
    )
    delays = [policy.delay_s(1, err) for _ in range(200)]
    assert all(d is not None and 0.5 <= d <= 1.0 for d in delays)
    assert len(set(delays)) > 1


@pytest.mark.parametrize(
    ("delay", "policy"),
    [
        (None, RetryPolicy(attempts_max=3)),
        (duration_pb2.Duration(seconds=60), RetryPolicy(attempts_max=3)),
        (duration_pb2.Duration(nanos=1_000), RetryPolicy(attempts_max=3, retry_after_s_max=0)),
    ],
    ids=["no-retry-info", "longer-than-the-sdk-waits", "switched-off"],
)
async def test_the_sdk_raises_resource_exhausted_it_should_not_wait_out(
    delay: duration_pb2.Duration | None, policy: RetryPolicy
) -> None:
    calls, attempt = failing([rate_limited(delay)])
    with pytest.raises(ResourceExhaustedError) as caught:
        await call_with_retry(attempt, policy)
    assert len(calls) == 1
    assert caught.value.reason == "RATE_LIMITED"


async def test_the_sdk_gives_up_rate_limited_after_attempts_max() -> None:
    limited = rate_limited(duration_pb2.Duration(nanos=1_000))
    calls, attempt = failing([limited] * 5)
    with pytest.raises(ResourceExhaustedError) as caught:
        await call_with_retry(attempt, RetryPolicy(attempts_max=2))
    assert len(calls) == 2 and caught.value.attempts == 2


def test_other_errors_are_still_not_retried() -> None:
    err = InvalidArgumentError(grpc.StatusCode.INVALID_ARGUMENT, "bad", retry_after_s=1.0)
    assert RetryPolicy().delay_s(1, err) is None


def test_unavailable_with_retry_info_waits_at_least_the_delay() -> None:
    policy = RetryPolicy(backoff_s_initial=0.01, backoff_s_max=0.01)
    told = UnavailableError(grpc.StatusCode.UNAVAILABLE, "database down", retry_after_s=1.0)
    assert all(1.0 <= (policy.delay_s(1, told) or 0) <= 1.01 for _ in range(50))
    plain = UnavailableError(grpc.StatusCode.UNAVAILABLE, "connection refused")
    assert all(0 <= (policy.delay_s(1, plain) or -1) <= 0.01 for _ in range(50))
    too_long = UnavailableError(grpc.StatusCode.UNAVAILABLE, "down", retry_after_s=3_600)
    assert policy.delay_s(1, too_long) is None
