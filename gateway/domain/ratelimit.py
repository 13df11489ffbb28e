"""Per-partner rate limits: one token bucket per partner, pure (the caller passes the time).

A partner may make `per_s` requests per second on average and a burst of `burst_s` seconds'
worth at once: the bucket holds `per_s * burst_s` tokens (at least one), refills at `per_s`
tokens per second, and a request takes one token. A request that finds less than one token is
refused with the seconds until one will be there, which the gateway sends as RetryInfo.

The limit is per gateway process: N gateways behind a load balancer admit up to N times it.
That is the price of keeping gateways stateless (no shared counter on the hot path).

`now` is a monotonic clock reading in seconds (time.monotonic() in the gateway), so tests drive
the limiter without sleeping.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

RATE_LIMIT_PER_S_DEFAULT = 1_000.0
"""Requests per second per partner per gateway process (COALITION_RATE_LIMIT_PER_S)."""
RATE_LIMIT_PER_S_MAX = 1_000_000.0
"""Above this a limit means nothing; a larger setting is a typo (0 switches the limit off)."""
RATE_LIMIT_BURST_S = 2.0
"""Seconds' worth of requests a partner that was idle may send at once."""
RATE_LIMIT_PARTNERS_MAX = 10_000
"""Buckets one gateway keeps; past it the least recently seen is dropped (see `take`)."""
ADMIT = 0.0
"""What `take` returns when the request may go ahead."""


@dataclass
class _Bucket:
    tokens: float
    time: float
    """When `tokens` was last brought up to date (monotonic seconds)."""


class RateLimiter:
    """Token buckets by key (a partner id); `take` admits or says how long to wait."""

    def __init__(
        self,
        per_s: float,
        burst_s: float = RATE_LIMIT_BURST_S,
        keys_max: int = RATE_LIMIT_PARTNERS_MAX,
    ) -> None:
        if not 0 < per_s <= RATE_LIMIT_PER_S_MAX:  # NaN fails every comparison
            raise ValueError(f"per_s must be in (0, {RATE_LIMIT_PER_S_MAX:g}], not {per_s!r}")
        if not (burst_s > 0 and math.isfinite(burst_s)):
            raise ValueError(f"burst_s must be positive and finite, not {burst_s!r}")
        if keys_max < 1:
            raise ValueError("keys_max must be at least 1")
        self.per_s = per_s
        self.capacity = max(1.0, per_s * burst_s)
        """Tokens a full bucket holds: the largest burst admitted at once."""
        self.keys_max = keys_max
        # Least recently seen first: the eviction order, kept in O(1) per request.
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str, now: float) -> float:
        """ADMIT (0.0) and one token used, or the seconds (> 0) until `key` has a token.

        A refused request uses no token, so a client that waits the answer is admitted then.
        """
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._new(key, now)
        else:
            self._buckets.move_to_end(key)
            # A clock reading older than the last one (two tasks racing) adds nothing.
            elapsed = max(0.0, now - bucket.time)
            bucket.tokens = min(self.capacity, bucket.tokens + elapsed * self.per_s)
            bucket.time = max(bucket.time, now)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return ADMIT
        return (1.0 - bucket.tokens) / self.per_s

    def _new(self, key: str, now: float) -> _Bucket:
        # Dropping the least recently seen bucket forgets nothing when it was last seen a
        # burst or more ago (it would be full again); only an attack with more than keys_max
        # active partners inside one burst window could gain from it, and partners are few.
        while len(self._buckets) >= self.keys_max:
            self._buckets.popitem(last=False)
        bucket = _Bucket(self.capacity, now)
        self._buckets[key] = bucket
        return bucket
