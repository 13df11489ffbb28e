"""foundation: partners, credentials, members, idempotency

Revision ID: 0001
Revises:
Create Date: 2026-11-23 16:12:52.606170

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""

    op.create_table(
        "idempotency_keys",
        sa.Column("scope", sa.String(length=80), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("method", sa.String(length=120), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("response", sa.LargeBinary(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("scope", "request_id", name=op.f("pk_idempotency_keys")),
    )
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.create_index("ix_idempotency_keys_create_time", ["create_time"], unique=False)

    op.create_table(
        "members",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("loyalty_number", sa.String(length=12), nullable=False),
        sa.Column("display_name", sa.String(length=200), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("phone_hash", sa.String(length=64), nullable=True),
        sa.Column("phone_ciphertext", sa.LargeBinary(), nullable=True),
        sa.Column("locale", sa.String(length=35), nullable=False),
        sa.Column("marketing_consent", sa.Boolean(), nullable=False),
        sa.Column("tier", sa.String(length=32), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_members")),
        sa.UniqueConstraint("loyalty_number", name=op.f("uq_members_loyalty_number")),
        sa.UniqueConstraint("phone_hash", name=op.f("uq_members_phone_hash")),
    )
    op.create_table(
        "partners",
        sa.Column("id", sa.String(length=63), nullable=False),
        sa.Column("type", sa.String(length=20), nullable=False),
        sa.Column("display_name", sa.String(length=200), nullable=False),
        sa.Column("base_earn_rate", sa.String(length=32), nullable=False),
        sa.Column("earn_currency_code", sa.String(length=3), nullable=False),
        sa.Column("settlement_currency_code", sa.String(length=3), nullable=False),
        sa.Column("webhook_url", sa.String(length=2048), nullable=False),
        sa.Column("time_zone", sa.String(length=64), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_partners")),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("partner_id", sa.String(length=63), nullable=True),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("display_name", sa.String(length=200), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoke_time", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partners.id"], name=op.f("fk_api_keys_partner_id_partners")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_api_keys_partner_id"), ["partner_id"], unique=False)

    op.create_table(
        "client_certificates",
        sa.Column("serial_number", sa.String(length=40), nullable=False),
        sa.Column("partner_id", sa.String(length=63), nullable=False),
        sa.Column("not_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoke_time", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partners.id"], name=op.f("fk_client_certificates_partner_id_partners")
        ),
        sa.PrimaryKeyConstraint("serial_number", name=op.f("pk_client_certificates")),
    )
    with op.batch_alter_table("client_certificates", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_client_certificates_partner_id"), ["partner_id"], unique=False
        )

    op.create_table(
        "partner_airlines",
        sa.Column("agency_id", sa.String(length=63), nullable=False),
        sa.Column("airline_id", sa.String(length=63), nullable=False),
        sa.ForeignKeyConstraint(
            ["agency_id"], ["partners.id"], name=op.f("fk_partner_airlines_agency_id_partners")
        ),
        sa.ForeignKeyConstraint(
            ["airline_id"], ["partners.id"], name=op.f("fk_partner_airlines_airline_id_partners")
        ),
        sa.PrimaryKeyConstraint("agency_id", "airline_id", name=op.f("pk_partner_airlines")),
    )


def downgrade() -> None:
    """Downgrade schema."""

    op.drop_table("partner_airlines")
    with op.batch_alter_table("client_certificates", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_client_certificates_partner_id"))

    op.drop_table("client_certificates")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_keys_partner_id"))

    op.drop_table("api_keys")
    op.drop_table("partners")
    op.drop_table("members")
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.drop_index("ix_idempotency_keys_create_time")

    op.drop_table("idempotency_keys")
