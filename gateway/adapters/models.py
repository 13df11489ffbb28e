"""SQLAlchemy tables. Points and money are BigInteger; every time is aware UTC."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    text,
)
from sqlalchemy import false as sa_false
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC in, aware UTC out, on every database (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert value.tzinfo is not None, "naive datetime reached the database"
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def table_of(model: type[Base]) -> Table:
    """The Core table of a mapped class, typed for insert/update/delete."""
    return cast(Table, model.__table__)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime()}  # noqa: RUF012 (SQLAlchemy API)


class PartnerRow(Base):
    __tablename__ = "partners"

    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    type: Mapped[str] = mapped_column(String(20))
    display_name: Mapped[str] = mapped_column(String(200))
    base_earn_rate: Mapped[str] = mapped_column(String(32))
    """Points per major unit of earn_currency_code, a decimal string (exact, no float)."""
    earn_currency_code: Mapped[str] = mapped_column(String(3))
    settlement_currency_code: Mapped[str] = mapped_column(String(3))
    webhook_url: Mapped[str] = mapped_column(String(2048), default="")
    time_zone: Mapped[str] = mapped_column(String(64), default="UTC")
    webhook_secret_version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    """Webhook signing secrets are derived, never stored; rotating one bumps the version."""
    category_rates: Mapped[str] = mapped_column(Text, default="{}", server_default="{}")
    """JSON {category: decimal string}: points per major unit for that category."""
    earn_rounding: Mapped[str] = mapped_column(String(8), default="DOWN", server_default="DOWN")
    minimum_spend_minor: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    """Minor units of earn_currency_code."""
    transaction_cap_points: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    program: Mapped[str] = mapped_column(Text, default="{}", server_default="{}")
    """Airlines: JSON of their loyalty program (number format, unit, conversion terms)."""
    charity: Mapped[str] = mapped_column(Text, default="{}", server_default="{}")
    """Charities: JSON of their profile (description, causes, minimum, value of points)."""
    create_time: Mapped[datetime]
    update_time: Mapped[datetime]


class PartnerAirlineRow(Base):
    """A travel agency may submit bookings on behalf of this airline."""

    __tablename__ = "partner_airlines"

    agency_id: Mapped[str] = mapped_column(ForeignKey("partners.id"), primary_key=True)
    airline_id: Mapped[str] = mapped_column(ForeignKey("partners.id"), primary_key=True)


class ApiKeyRow(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    partner_id: Mapped[str | None] = mapped_column(ForeignKey("partners.id"), index=True)
    """None for operator keys."""
    role: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    """SHA-256 hex of the secret; the secret itself is never stored."""
    prefix: Mapped[str] = mapped_column(String(16))
    display_name: Mapped[str] = mapped_column(String(200), default="")
    create_time: Mapped[datetime]
    revoke_time: Mapped[datetime | None]


class ClientCertificateRow(Base):
    __tablename__ = "client_certificates"

    serial_number: Mapped[str] = mapped_column(String(40), primary_key=True)
    partner_id: Mapped[str] = mapped_column(ForeignKey("partners.id"), index=True)
    not_after: Mapped[datetime]
    create_time: Mapped[datetime]
    revoke_time: Mapped[datetime | None]


class MemberRow(Base):
    __tablename__ = "members"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    loyalty_number: Mapped[str] = mapped_column(String(12), unique=True)
    display_name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(254), default="")
    phone_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    """HMAC-SHA256 of the E.164 number under the deployment's secret key: the lookup key."""
    phone_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    """AES-GCM of the E.164 number, so it can be shown back to the operator, never in clear."""
    locale: Mapped[str] = mapped_column(String(35), default="en")
    marketing_consent: Mapped[bool] = mapped_column(Boolean, default=False)
    tier: Mapped[str] = mapped_column(String(32), default="BLUE")
    tier_review_time: Mapped[datetime | None] = mapped_column(index=True)
    """When the tier is next reviewed; None at the base tier (nothing to review)."""
    create_time: Mapped[datetime]
    update_time: Mapped[datetime]


class IdempotencyKeyRow(Base):
    """The first outcome of a mutating request, replayed for retries with the same request_id."""

    __tablename__ = "idempotency_keys"

    scope: Mapped[str] = mapped_column(String(80), primary_key=True)
    """"partner:{id}" or "operator": request ids are unique per caller."""
    request_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    method: Mapped[str] = mapped_column(String(120))
    request_hash: Mapped[str] = mapped_column(String(64))
    response: Mapped[bytes | None] = mapped_column(LargeBinary)
    error: Mapped[str | None] = mapped_column(Text)
    """JSON of a stored business failure (kind, reason, message, metadata)."""
    create_time: Mapped[datetime]

    __table_args__ = (Index("ix_idempotency_keys_create_time", "create_time"),)


class LinkedAccountRow(Base):
    """An external id (a partner's account id, an airline program number) linked to a member.

    The id is kept as a keyed hash (the lookup) and encrypted (to show it back), like phone
    numbers. Unlinking sets unlink_time: the row stays, so history keeps its meaning.
    """

    __tablename__ = "linked_accounts"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    member_id: Mapped[str] = mapped_column(ForeignKey("members.id"))
    partner_id: Mapped[str] = mapped_column(ForeignKey("partners.id"))
    """The partner that owns the account, or the airline that runs the program."""
    kind: Mapped[str] = mapped_column(String(8))
    """ACCOUNT or PROGRAM."""
    external_hash: Mapped[str] = mapped_column(String(64))
    external_ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    create_time: Mapped[datetime]
    unlink_time: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_linked_accounts_member_create", "member_id", "create_time"),
        # One external id belongs to at most one member at a time.
        Index(
            "ix_linked_accounts_live_external",
            "partner_id",
            "kind",
            "external_hash",
            unique=True,
            postgresql_where=text("unlink_time IS NULL"),
            sqlite_where=text("unlink_time IS NULL"),
        ),
    )


class LinkCodeRow(Base):
    """A one-time code sent to a member to prove they agree to one link by one caller."""

    __tablename__ = "link_codes"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    member_id: Mapped[str] = mapped_column(ForeignKey("members.id"))
    scope: Mapped[str] = mapped_column(String(80))
    """The caller that asked for it ("partner:{id}"): only it may use the code."""
    account_key: Mapped[str] = mapped_column(String(64))
    """Keyed hash of the account it is for (partner, kind and external id)."""
    code_hash: Mapped[str] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    expire_time: Mapped[datetime]
    use_time: Mapped[datetime | None]
    create_time: Mapped[datetime]

    __table_args__ = (Index("ix_link_codes_member_account", "member_id", "account_key"),)


class ParkedEarnRow(Base):
    """A travel agency's earn for an airline number nobody has linked yet: credited on linking.

    Its points were computed when it was parked (the airline's base rules); linking the number
    within the claim window turns it into an EARN for the member (claim_transaction_id).
    """

    __tablename__ = "parked_earns"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    airline_id: Mapped[str] = mapped_column(ForeignKey("partners.id"))
    agency_id: Mapped[str] = mapped_column(ForeignKey("partners.id"))
    number_hash: Mapped[str] = mapped_column(String(64))
    number_ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    points: Mapped[int] = mapped_column(BigInteger)
    qualifying_points: Mapped[int] = mapped_column(BigInteger, default=0)
    breakdown: Mapped[str] = mapped_column(Text, default="[]")
    partner_reference: Mapped[str] = mapped_column(String(128), default="")
    occur_time: Mapped[datetime | None]
    vest_time: Mapped[datetime | None]
    claim_deadline: Mapped[datetime]
    state: Mapped[str] = mapped_column(String(12))
    """PARKED, CLAIMED or CANCELLED (reversed by the airline or the agency before a claim)."""
    member_id: Mapped[str | None] = mapped_column(ForeignKey("members.id"))
    claim_transaction_id: Mapped[str | None] = mapped_column(String(32))
    claim_time: Mapped[datetime | None]
    create_time: Mapped[datetime]

    __table_args__ = (
        Index("ix_parked_earns_airline_number", "airline_id", "number_hash"),
        Index("ix_parked_earns_state_deadline", "state", "claim_deadline"),
    )


# -- the points ledger -----------------------------------------------------------------------

# SQLite auto-increments only an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit identity.
SEQUENCE = BigInteger().with_variant(Integer(), "sqlite")


class MemberBalanceRow(Base):
    """A member's balances, materialized and guarded; updated with the postings."""

    __tablename__ = "member_balances"

    member_id: Mapped[str] = mapped_column(ForeignKey("members.id"), primary_key=True)
    available: Mapped[int] = mapped_column(BigInteger, default=0)
    """Points, spendable now; negative only after a clawback."""
    pending: Mapped[int] = mapped_column(BigInteger, default=0)
    """Points earned, not yet vested."""
    held: Mapped[int] = mapped_column(BigInteger, default=0)
    """Points reserved by open authorizations."""
    last_activity_time: Mapped[datetime | None]
    """The last earn or burn: the inactivity expiry policy counts from it."""
    last_redeem_time: Mapped[datetime | None]
    """The last burn (redemption, hold, reward): the dormant-members report reads it."""
    reminded_expire_time: Mapped[datetime | None]
    """Inactivity policy: the expiry a "points expiring" reminder was last sent for."""
    wallet_card: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sa_false())
    """The member has a wallet card: a balance change marks it for an update (wallet_changes).
    Read back by the balance UPDATE itself, so members without a card pay nothing for it."""

    __table_args__ = (Index("ix_member_balances_last_activity_time", "last_activity_time"),)


class LedgerTransactionRow(Base):
    __tablename__ = "ledger_transactions"

    seq: Mapped[int] = mapped_column(SEQUENCE, primary_key=True, autoincrement=True)
    """Commit order within the database; newest first in history listings."""
    id: Mapped[str] = mapped_column(String(32), unique=True)
    member_id: Mapped[str] = mapped_column(ForeignKey("members.id"))
    partner_id: Mapped[str] = mapped_column(ForeignKey("partners.id"))
    channel_partner_id: Mapped[str | None] = mapped_column(ForeignKey("partners.id"))
    type: Mapped[str] = mapped_column(String(20))
    state: Mapped[str] = mapped_column(String(12))
    points: Mapped[int] = mapped_column(BigInteger)
    """Signed from the member's point of view (+ earn, - redemption)."""
    open_points: Mapped[int] = mapped_column(BigInteger, default=0)
    """Authorizations: points still held. Pending earns: points still pending."""
    reversed_points: Mapped[int] = mapped_column(BigInteger, default=0)
    """Earns, redemptions, captures: points reversed so far (never more than |points|)."""
    related_id: Mapped[str | None] = mapped_column(String(32))
    partner_reference: Mapped[str] = mapped_column(String(128), default="")
    breakdown: Mapped[str] = mapped_column(Text, default="[]")
    """JSON list of {kind, description, points, source}."""
    due_time: Mapped[datetime | None]
    """Pending earns: when they vest. Authorizations: when the hold expires."""
    occur_time: Mapped[datetime | None]
    available_after: Mapped[int] = mapped_column(BigInteger)
    pending_after: Mapped[int] = mapped_column(BigInteger)
    held_after: Mapped[int] = mapped_column(BigInteger)
    create_time: Mapped[datetime]
    unspent_points: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    """Credits are lots (gateway.domain.expiry): points of this one not yet spent or expired."""
    expire_time: Mapped[datetime | None]
    """FIXED expiry policy: when the lot's unspent points expire."""
    remind_time: Mapped[datetime | None]
    """When the "points expiring" reminder for this lot went out (once per lot)."""
    lapses: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sa_false())
    """Credited under the INACTIVITY policy: expires when the member's account lapses."""
    expired_points: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    """Points of this lot that expired and were not reversed since: a clawback of the earn
    takes these back from the breakage account, not from the member a second time."""
    donated_points: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    """Points of this lot that were about to expire and went to a charity under the member's
    pledge, not reversed since: a clawback of the earn is absorbed by the coalition (the
    charity keeps its gift), not charged to the member a second time."""

    __table_args__ = (
        Index("ix_ledger_transactions_member_seq", "member_id", "seq"),
        Index("ix_ledger_transactions_partner_seq", "partner_id", "seq"),
        # Settlement takes a period's transactions by when they were recorded.
        Index("ix_ledger_transactions_create_time", "create_time"),
        Index("ix_ledger_transactions_open_due", "state", "due_time"),
        # Partial: only lots with points left are ever searched, and they are few per member.
        Index(
            "ix_ledger_transactions_unspent_member",
            "member_id",
            "seq",
            postgresql_where=text("unspent_points > 0"),
            sqlite_where=text("unspent_points > 0"),
        ),
        Index(
            "ix_ledger_transactions_unspent_expire",
            "expire_time",
            postgresql_where=text("unspent_points > 0"),
            sqlite_where=text("unspent_points > 0"),
        ),
    )


class LotDrawRow(Base):
    """Points a debit took from a lot (+), or gave back to it on a refund (-)."""

    __tablename__ = "lot_draws"

    id: Mapped[int] = mapped_column(SEQUENCE, primary_key=True, autoincrement=True)
    debit_seq: Mapped[int] = mapped_column(ForeignKey("ledger_transactions.seq"), index=True)
    """The redemption, authorization or reward that spent the points."""
    lot_seq: Mapped[int] = mapped_column(ForeignKey("ledger_transactions.seq"))
    points: Mapped[int] = mapped_column(BigInteger)


class PostingRow(Base):
    __tablename__ = "ledger_postings"

    id: Mapped[int] = mapped_column(SEQUENCE, primary_key=True, autoincrement=True)
    transaction_seq: Mapped[int] = mapped_column(ForeignKey("ledger_transactions.seq"), index=True)
    account: Mapped[str] = mapped_column(String(100), index=True)
    asset: Mapped[str] = mapped_column(String(16))
    amount: Mapped[int] = mapped_column(BigInteger)
    """Signed; a transaction's postings sum to zero per asset."""


# -- earn rules, campaigns, tiers ------------------------------------------------------------


class ExchangeRateRow(Base):
    """The operator's rates: 1 unit of base_currency is `rate` units of quote_currency."""

    __tablename__ = "exchange_rates"

    id: Mapped[int] = mapped_column(SEQUENCE, primary_key=True, autoincrement=True)
    base_currency: Mapped[str] = mapped_column(String(3))
    quote_currency: Mapped[str] = mapped_column(String(3))
    rate: Mapped[str] = mapped_column(String(32))
    """A decimal string (exact)."""
    effective_time: Mapped[datetime]
    create_time: Mapped[datetime]

    __table_args__ = (
        Index(
            "ix_exchange_rates_pair_effective",
            "base_currency",
            "quote_currency",
            "effective_time",
            unique=True,
        ),
    )


class CampaignRow(Base):
    __tablename__ = "campaigns"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    partner_id: Mapped[str] = mapped_column(ForeignKey("partners.id"))
    display_name: Mapped[str] = mapped_column(String(200))
    start_time: Mapped[datetime]
    end_time: Mapped[datetime]
    days_of_week: Mapped[str] = mapped_column(String(16), default="")
    """ISO weekday digits, e.g. "67" for Saturday and Sunday; empty = every day."""
    start_hour: Mapped[int] = mapped_column(Integer, default=0)
    end_hour: Mapped[int] = mapped_column(Integer, default=0)
    categories: Mapped[str] = mapped_column(Text, default="[]")
    """JSON list of category codes; empty = all."""
    multiplier: Mapped[str] = mapped_column(String(16), default="")
    """A decimal string; empty = none."""
    bonus_points: Mapped[int] = mapped_column(BigInteger, default=0)
    action: Mapped[str] = mapped_column(String(64), default="")
    member_budget_points: Mapped[int] = mapped_column(BigInteger, default=0)
    total_budget_points: Mapped[int] = mapped_column(BigInteger, default=0)
    budget_spent_points: Mapped[int] = mapped_column(BigInteger, default=0)
    """Points paid, kept only for campaigns with a total budget (the guarded counter)."""
    stop_time: Mapped[datetime | None]
    """Set by EndCampaign: no earn recorded from then on gets the bonus, even a backdated one."""
    create_time: Mapped[datetime]

    __table_args__ = (Index("ix_campaigns_partner_end", "partner_id", "end_time"),)


class CampaignAwardRow(Base):
    """Bonus points a campaign paid with one earn: the budgets' source of truth."""

    __tablename__ = "campaign_awards"

    id: Mapped[int] = mapped_column(SEQUENCE, primary_key=True, autoincrement=True)
    campaign_id: Mapped[str] = mapped_column(ForeignKey("campaigns.id"))
    member_id: Mapped[str] = mapped_column(ForeignKey("members.id"))
    transaction_id: Mapped[str] = mapped_column(String(32))
    points: Mapped[int] = mapped_column(BigInteger)
    create_time: Mapped[datetime]

    __table_args__ = (Index("ix_campaign_awards_campaign_member", "campaign_id", "member_id"),)


class QualifyingPointsRow(Base):
    """Tier-qualifying points: + base points of an earn, - their share of each reversal."""

    __tablename__ = "tier_qualifying"

    id: Mapped[int] = mapped_column(SEQUENCE, primary_key=True, autoincrement=True)
    member_id: Mapped[str] = mapped_column(ForeignKey("members.id"))
    transaction_id: Mapped[str] = mapped_column(String(32), index=True)
    """The earn, or the reversal that nets it."""
    points: Mapped[int] = mapped_column(BigInteger)
    earn_time: Mapped[datetime]
    """The earn's time, also on its reversals, so a reversal nets the window its earn is in."""
    record_time: Mapped[datetime]

    __table_args__ = (Index("ix_tier_qualifying_member_earn", "member_id", "earn_time"),)


class OutboxEventRow(Base):
    """Events written in the same transaction as the change they announce; delivered later."""

    __tablename__ = "outbox_events"

    seq: Mapped[int] = mapped_column(SEQUENCE, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(32), unique=True)
    type: Mapped[str] = mapped_column(String(40))
    """"TierChanged", ..."""
    subject: Mapped[str] = mapped_column(String(120))
    """The resource the event is about ("members/{member}")."""
    payload: Mapped[str] = mapped_column(Text)
    """JSON."""
    create_time: Mapped[datetime]

    __table_args__ = (Index("ix_outbox_events_subject_seq", "subject", "seq"),)


class DeliveryRow(Base):
    """One event on its way to one destination: a partner's webhook or a member's inbox."""

    __tablename__ = "outbox_deliveries"

    id: Mapped[int] = mapped_column(SEQUENCE, primary_key=True, autoincrement=True)
    event_seq: Mapped[int] = mapped_column(ForeignKey("outbox_events.seq"), index=True)
    destination: Mapped[str] = mapped_column(String(80))
    """"partner:{id}" (its webhook) or "member:{id}" (the notification channel)."""
    state: Mapped[str] = mapped_column(String(12))
    """PENDING, DELIVERED, SKIPPED (nothing to send it to) or DEAD (attempts exhausted)."""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_time: Mapped[datetime]
    """PENDING: not before this; a claimed delivery is pushed a lease ahead while in flight."""
    last_error: Mapped[str] = mapped_column(String(500), default="")
    create_time: Mapped[datetime]
    update_time: Mapped[datetime]

    __table_args__ = (
        Index(
            "ix_outbox_deliveries_pending_next",
            "next_attempt_time",
            postgresql_where=text("state = 'PENDING'"),
            sqlite_where=text("state = 'PENDING'"),
        ),
        Index("ix_outbox_deliveries_state_id", "state", "id"),
    )


# -- rewards ---------------------------------------------------------------------------------


class RewardRow(Base):
    __tablename__ = "rewards"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    partner_id: Mapped[str] = mapped_column(ForeignKey("partners.id"))
    display_name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    kind: Mapped[str] = mapped_column(String(16))
    points_price: Mapped[int] = mapped_column(BigInteger)
    stock: Mapped[int] = mapped_column(BigInteger, default=0)
    """Units offered; 0 is unlimited (then the counters below are not kept: no hot row)."""
    issued: Mapped[int] = mapped_column(BigInteger, default=0)
    """Vouchers issued: the guarded counter, never above stock + refunded."""
    refunded: Mapped[int] = mapped_column(BigInteger, default=0)
    start_time: Mapped[datetime | None]
    end_time: Mapped[datetime | None]
    voucher_validity_s: Mapped[int] = mapped_column(BigInteger)
    create_time: Mapped[datetime]

    __table_args__ = (Index("ix_rewards_partner_id", "partner_id", "id"),)


class VoucherRow(Base):
    __tablename__ = "vouchers"

    code: Mapped[str] = mapped_column(String(16), primary_key=True)
    reward_id: Mapped[str] = mapped_column(ForeignKey("rewards.id"))
    partner_id: Mapped[str] = mapped_column(ForeignKey("partners.id"))
    """The reward's partner: the only partner that may see, validate or consume it."""
    member_id: Mapped[str] = mapped_column(ForeignKey("members.id"), index=True)
    state: Mapped[str] = mapped_column(String(12))
    issue_time: Mapped[datetime]
    expire_time: Mapped[datetime]
    consume_time: Mapped[datetime | None]
    transaction_id: Mapped[str] = mapped_column(String(32))
    """The REWARD transaction that paid for it."""
    refund_transaction_id: Mapped[str | None] = mapped_column(String(32))
    points: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        Index(
            "ix_vouchers_issued_expire",
            "expire_time",
            postgresql_where=text("state = 'ISSUED'"),
            sqlite_where=text("state = 'ISSUED'"),
        ),
    )


# -- donations -------------------------------------------------------------------------------


class DonationRow(Base):
    """A member's donation to a charity; its receipt number derives from seq and year."""

    __tablename__ = "donations"

    seq: Mapped[int] = mapped_column(SEQUENCE, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(32), unique=True)
    charity_id: Mapped[str] = mapped_column(ForeignKey("partners.id"))
    member_id: Mapped[str] = mapped_column(ForeignKey("members.id"))
    kind: Mapped[str] = mapped_column(String(16))
    points: Mapped[int] = mapped_column(BigInteger)
    matched_points: Mapped[int] = mapped_column(BigInteger, default=0)
    sponsor_id: Mapped[str | None] = mapped_column(ForeignKey("partners.id"))
    matching_campaign_id: Mapped[str | None] = mapped_column(String(32))
    value_minor: Mapped[int] = mapped_column(BigInteger)
    """Minor units of currency: the points at the charity's value when donated."""
    matched_value_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    """Minor units of currency: the matched points, funded by the sponsor."""
    currency: Mapped[str] = mapped_column(String(3))
    transaction_id: Mapped[str] = mapped_column(String(32))
    """The member's DONATION transaction."""
    pledge_id: Mapped[str | None] = mapped_column(String(32))
    pledge_run_time: Mapped[datetime | None]
    """MONTHLY pledges: the due date this donation paid, so a month is never paid twice."""
    create_time: Mapped[datetime]

    __table_args__ = (
        Index("ix_donations_charity_seq", "charity_id", "seq"),
        Index("ix_donations_member_seq", "member_id", "seq"),
        Index("ix_donations_create_time", "create_time"),
        Index("ix_donations_pledge_run", "pledge_id", "pledge_run_time", unique=True),
    )


class MatchingCampaignRow(Base):
    """A sponsor matches donations to one charity, out of a budget of points."""

    __tablename__ = "matching_campaigns"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    sponsor_id: Mapped[str] = mapped_column(ForeignKey("partners.id"))
    charity_id: Mapped[str] = mapped_column(ForeignKey("partners.id"))
    percent: Mapped[int] = mapped_column(Integer)
    """Matched points per 100 donated."""
    budget_points: Mapped[int] = mapped_column(BigInteger)
    spent_points: Mapped[int] = mapped_column(BigInteger, default=0)
    """The guarded counter: matched points paid, never above budget_points."""
    start_time: Mapped[datetime]
    end_time: Mapped[datetime]
    stop_time: Mapped[datetime | None]
    create_time: Mapped[datetime]

    __table_args__ = (Index("ix_matching_campaigns_charity_end", "charity_id", "end_time"),)


class PledgeRow(Base):
    """A member's standing promise to a charity: monthly points, or the points that expire."""

    __tablename__ = "pledges"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    member_id: Mapped[str] = mapped_column(ForeignKey("members.id"))
    charity_id: Mapped[str] = mapped_column(ForeignKey("partners.id"))
    partner_id: Mapped[str | None] = mapped_column(ForeignKey("partners.id"))
    """The partner that took the pledge; None for the operator."""
    kind: Mapped[str] = mapped_column(String(12))
    points: Mapped[int] = mapped_column(BigInteger, default=0)
    start_time: Mapped[datetime]
    next_run_time: Mapped[datetime | None]
    create_time: Mapped[datetime]
    cancel_time: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_pledges_member_create", "member_id", "create_time"),
        Index(
            "ix_pledges_due",
            "next_run_time",
            postgresql_where=text("cancel_time IS NULL"),
            sqlite_where=text("cancel_time IS NULL"),
        ),
        # At most one live EXPIRING pledge per member: expiring points go to one charity.
        Index(
            "ix_pledges_live_expiring",
            "member_id",
            unique=True,
            postgresql_where=text("kind = 'EXPIRING' AND cancel_time IS NULL"),
            sqlite_where=text("kind = 'EXPIRING' AND cancel_time IS NULL"),
        ),
    )


# -- wallet cards ----------------------------------------------------------------------------


class WalletCardRow(Base):
    """A member's wallet card (one per member) and what it shows now."""

    __tablename__ = "wallet_cards"

    member_id: Mapped[str] = mapped_column(ForeignKey("members.id"), primary_key=True)
    serial_number: Mapped[str] = mapped_column(String(40), unique=True)
    """Apple serialNumber and the Google object id suffix; never changes."""
    pass_type_id: Mapped[str] = mapped_column(String(120))
    content: Mapped[str] = mapped_column(Text)
    """JSON of the card's content as last built (balance, tier, expiring points, ...)."""
    update_tag: Mapped[int] = mapped_column(BigInteger, index=True)
    """The wallet tag when the content last changed; tags grow in commit order (wallet_tags)."""
    pushed_tag: Mapped[int] = mapped_column(BigInteger)
    """The tag devices and Google were last told about: a push is due while it is behind."""
    create_time: Mapped[datetime]
    update_time: Mapped[datetime]
    """When the content last changed: the pass's Last-Modified."""


class WalletTagRow(Base):
    """The one counter behind update tags. Taking the next tag locks this row until commit, so
    tags become visible in increasing order and "updated since tag T" never misses a card."""

    __tablename__ = "wallet_tags"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)


class WalletChangeRow(Base):
    """A card whose content may have changed: written in the same transaction as the change,
    coalesced per member (a burst of earns is one update), removed once the card is current."""

    __tablename__ = "wallet_changes"

    member_id: Mapped[str] = mapped_column(ForeignKey("members.id"), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)
    """Bumped by every change; the updater deletes the row only if it is the version it saw."""
    claim_time: Mapped[datetime | None]
    """Not before this: an updater holds the row while it pushes (a lease)."""
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class WalletDeviceRow(Base):
    """An Apple device that registered a pass for updates, with its APNs push token."""

    __tablename__ = "wallet_devices"

    device_library_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    push_token: Mapped[str] = mapped_column(String(200))
    create_time: Mapped[datetime]
    update_time: Mapped[datetime]


class WalletRegistrationRow(Base):
    """Device × pass: the device wants pushes when the pass changes."""

    __tablename__ = "wallet_registrations"

    device_library_id: Mapped[str] = mapped_column(
        ForeignKey("wallet_devices.device_library_id"), primary_key=True
    )
    serial_number: Mapped[str] = mapped_column(
        ForeignKey("wallet_cards.serial_number"), primary_key=True, index=True
    )
    create_time: Mapped[datetime]


# -- settlement ------------------------------------------------------------------------------


class PriceListRow(Base):
    """A version of a partner's prices, valid from valid_from until the next version's."""

    __tablename__ = "price_lists"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    partner_id: Mapped[str] = mapped_column(ForeignKey("partners.id"))
    valid_from: Mapped[datetime]
    currency: Mapped[str] = mapped_column(String(3))
    issue_price: Mapped[str] = mapped_column(String(32))
    """Decimal strings, major units of currency per point (or per program unit)."""
    redemption_rate: Mapped[str] = mapped_column(String(32))
    conversion_price: Mapped[str] = mapped_column(String(32))
    charity_value: Mapped[str] = mapped_column(String(32))
    fee_per_transaction_minor: Mapped[int] = mapped_column(BigInteger)
    """Minor units of currency."""
    fee_percent: Mapped[str] = mapped_column(String(32))
    create_time: Mapped[datetime]

    __table_args__ = (
        Index("ix_price_lists_partner_valid_from", "partner_id", "valid_from", unique=True),
    )


class FxRateRow(Base):
    """Units of currency per one unit of the base currency, for one settlement period."""

    __tablename__ = "settlement_fx_rates"

    period: Mapped[str] = mapped_column(String(7), primary_key=True)
    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    base_currency: Mapped[str] = mapped_column(String(3))
    rate: Mapped[str] = mapped_column(String(32))
    update_time: Mapped[datetime]


class SettlementPeriodRow(Base):
    """A closed period (open periods have no row): its statements are frozen."""

    __tablename__ = "settlement_periods"

    period: Mapped[str] = mapped_column(String(7), primary_key=True)
    """YYYY-MM."""
    base_currency: Mapped[str] = mapped_column(String(3))
    close_time: Mapped[datetime]
    statement_count: Mapped[int] = mapped_column(Integer)
    totals: Mapped[str] = mapped_column(Text)
    """JSON: the netting (margin breakdown) and the points outstanding at the period's end."""


class StatementRow(Base):
    """One partner's frozen statement; amounts are minor units of currency (net: + received)."""

    __tablename__ = "settlement_statements"

    period: Mapped[str] = mapped_column(String(7), primary_key=True)
    partner_id: Mapped[str] = mapped_column(ForeignKey("partners.id"), primary_key=True)
    currency: Mapped[str] = mapped_column(String(3))
    points_issued: Mapped[int] = mapped_column(BigInteger)
    points_redeemed: Mapped[int] = mapped_column(BigInteger)
    points_converted: Mapped[int] = mapped_column(BigInteger)
    units_converted: Mapped[int] = mapped_column(BigInteger)
    points_donated: Mapped[int] = mapped_column(BigInteger)
    points_matched: Mapped[int] = mapped_column(BigInteger)
    points_expired: Mapped[int] = mapped_column(BigInteger)
    issue_minor: Mapped[int] = mapped_column(BigInteger)
    redemption_minor: Mapped[int] = mapped_column(BigInteger)
    conversion_minor: Mapped[int] = mapped_column(BigInteger)
    donation_minor: Mapped[int] = mapped_column(BigInteger)
    fee_minor: Mapped[int] = mapped_column(BigInteger)
    adjustment_minor: Mapped[int] = mapped_column(BigInteger)
    """Manual adjustments and late transactions together (signed like net)."""
    late_minor: Mapped[int] = mapped_column(BigInteger)
    owed_minor: Mapped[int] = mapped_column(BigInteger)
    due_minor: Mapped[int] = mapped_column(BigInteger)
    net_minor: Mapped[int] = mapped_column(BigInteger)
    fx_rate: Mapped[str] = mapped_column(String(32))
    net_base_minor: Mapped[int] = mapped_column(BigInteger)
    breakage_base_minor: Mapped[int] = mapped_column(BigInteger)
    """Memo: the issue price of the partner's points that expired, in the base currency."""
    line_count: Mapped[int] = mapped_column(BigInteger)
    create_time: Mapped[datetime]


class SettlementLineRow(Base):
    """A transaction's effect on one partner account kind, or an adjustment, in a statement.

    Each ledger transaction is settled exactly once (in one period); the unique index makes a
    second settlement of it impossible.
    """

    __tablename__ = "settlement_lines"

    id: Mapped[int] = mapped_column(SEQUENCE, primary_key=True, autoincrement=True)
    period: Mapped[str] = mapped_column(String(7))
    partner_id: Mapped[str] = mapped_column(String(63))
    kind: Mapped[str] = mapped_column(String(20))
    """TRANSACTION, LATE_TRANSACTION or ADJUSTMENT."""
    component: Mapped[str] = mapped_column(String(12))
    """ISSUED, REDEEMED, CONVERTED, DONATED, MATCHED, EXPIRED; ADJUSTMENT for adjustments."""
    transaction_seq: Mapped[int | None] = mapped_column(BigInteger)
    transaction_id: Mapped[str] = mapped_column(String(32))
    """The ledger transaction's id, or the adjustment's."""
    member_id: Mapped[str] = mapped_column(String(40))
    txn_type: Mapped[str] = mapped_column(String(20))
    txn_partner_id: Mapped[str] = mapped_column(String(63))
    """The partner the transaction was made at (fees are charged to it, not to a sponsor)."""
    points: Mapped[int] = mapped_column(BigInteger)
    """Minus the sum of the postings on the partner's account: member-view sign."""
    units: Mapped[int] = mapped_column(BigInteger)
    """Conversions: program units credited."""
    amount_minor: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    """Adjustments only: their money, minor units of the statement's currency."""
    price_list_id: Mapped[str | None] = mapped_column(String(32))
    price_time: Mapped[datetime]
    """Which price list version applies: when the transaction was recorded, or for a reversal
    when the transaction it reverses was (money goes back at the price it came at)."""
    partner_reference: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(Text, default="", server_default="")
    create_time: Mapped[datetime]
    occur_time: Mapped[datetime | None]

    __table_args__ = (
        # Statement lines are listed in create_time order (keyset: create_time, id).
        Index(
            "ix_settlement_lines_period_partner_time",
            "period",
            "partner_id",
            "create_time",
            "id",
        ),
        Index(
            "ix_settlement_lines_transaction",
            "transaction_seq",
            "partner_id",
            "component",
            unique=True,
        ),
    )


class AdjustmentRow(Base):
    """A correcting settlement line, booked in an open period; settled by its close."""

    __tablename__ = "settlement_adjustments"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    period: Mapped[str] = mapped_column(String(7), index=True)
    partner_id: Mapped[str] = mapped_column(ForeignKey("partners.id"))
    points: Mapped[int] = mapped_column(BigInteger)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    """Minor units of currency, + in the partner's favour."""
    currency: Mapped[str] = mapped_column(String(3))
    reason: Mapped[str] = mapped_column(Text)
    reference: Mapped[str] = mapped_column(String(200))
    create_time: Mapped[datetime]


class ReconciliationRow(Base):
    """A partner file matched against the ledger: the result, kept for audit."""

    __tablename__ = "reconciliations"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    partner_id: Mapped[str] = mapped_column(ForeignKey("partners.id"))
    period: Mapped[str] = mapped_column(String(7))
    file_sha256: Mapped[str] = mapped_column(String(64))
    summary: Mapped[str] = mapped_column(Text)
    """JSON of the counts and totals; the discrepancies are in the response and the CSV."""
    discrepancies: Mapped[str] = mapped_column(Text)
    """JSON list of the discrepancies kept (at most RECONCILE_DISCREPANCIES_MAX)."""
    create_time: Mapped[datetime]

    __table_args__ = (Index("ix_reconciliations_partner_create", "partner_id", "create_time"),)
