"""Delivery of outbox events: how often and how long to retry, pure.

A delivery is attempted, and on failure retried after an exponentially growing delay with
jitter (so a partner coming back from an outage is not hit by every retry at once), until it
succeeds or runs out of attempts and is dead-lettered for the operator
(`coalition outbox list --state DEAD`, `coalition outbox retry`).
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

DELIVERY_ATTEMPTS_MAX = 12
"""With the default backoff the last attempt comes 12 to 25 hours after the first."""
BACKOFF_BASE_S_DEFAULT = 60.0
BACKOFF_MAX_S_DEFAULT = 8 * 3600.0
LEASE_S_DEFAULT = 120.0
"""A claimed delivery whose worker died is attempted again after this long."""
CLAIM_BATCH_ROWS = 32
"""Deliveries one worker claims and sends concurrently."""


class DeliveryState(enum.StrEnum):
    PENDING = "PENDING"
    DELIVERED = "DELIVERED"
    SKIPPED = "SKIPPED"
    """Nothing to deliver it to: no webhook any more, no email address, not a member notice."""
    DEAD = "DEAD"


@dataclass(frozen=True)
class DeliveryPolicy:
    attempts_max: int = DELIVERY_ATTEMPTS_MAX
    backoff_base_s: float = BACKOFF_BASE_S_DEFAULT
    backoff_max_s: float = BACKOFF_MAX_S_DEFAULT
    lease_s: float = LEASE_S_DEFAULT
    batch: int = CLAIM_BATCH_ROWS

    def __post_init__(self) -> None:
        assert self.attempts_max >= 1 and self.batch >= 1
        assert 0 < self.backoff_base_s <= self.backoff_max_s and self.lease_s > 0

    def retry_after(self, attempts: int, uniform: Callable[[], float] = random.random) -> timedelta:
        """The wait before attempt `attempts + 1`: exponential, capped, with "equal jitter"
        (half fixed, half random), so retries spread out but never come too soon."""
        ceiling = min(self.backoff_max_s, self.backoff_base_s * 2 ** max(attempts - 1, 0))
        return timedelta(seconds=ceiling / 2 + uniform() * ceiling / 2)

    def gives_up(self, attempts: int) -> bool:
        return attempts >= self.attempts_max
