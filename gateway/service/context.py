"""What every use case needs: the database, the clock and the deployment's secrets."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.adapters.db import Database
from gateway.clock import Clock, SystemClock
from gateway.domain.expiry import ExpiryPolicy
from gateway.domain.links import PARKED_CLAIM_DAYS_DEFAULT
from gateway.domain.pii import PiiVault
from gateway.domain.ratelimit import RATE_LIMIT_PER_S_DEFAULT
from gateway.domain.tiers import DEFAULT_LADDER, Ladder
from partners.ca import CertificateAuthority


@dataclass
class AppContext:
    database: Database
    vault: PiiVault
    clock: Clock = field(default_factory=SystemClock)
    ca: CertificateAuthority | None = None
    """The coalition CA, when this gateway may issue partner certificates."""
    ladder: Ladder = DEFAULT_LADDER
    """The tier ladder (COALITION_TIERS_FILE), the same for every gateway of a deployment."""
    expiry: ExpiryPolicy = field(default_factory=ExpiryPolicy)
    """COALITION_EXPIRY_POLICY; applies to points credited from then on."""
    parked_claim_days: int = PARKED_CLAIM_DAYS_DEFAULT
    """COALITION_PARKED_CLAIM_DAYS: how long an agency earn for an unlinked number waits."""
    base_currency: str = "USD"
    """COALITION_SETTLEMENT_CURRENCY: the currency the settlement netting is in."""
    rate_limit_per_s: float = RATE_LIMIT_PER_S_DEFAULT
    """COALITION_RATE_LIMIT_PER_S: requests per second per partner per gateway process; 0 for
    no limit (the operator is never limited)."""
