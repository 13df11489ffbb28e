"""linked accounts, link codes, parked earns, airline programs

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "link_codes",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("scope", sa.String(length=80), nullable=False),
        sa.Column("account_key", sa.String(length=64), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("expire_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("use_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_link_codes_member_id_members")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_link_codes")),
    )
    with op.batch_alter_table("link_codes", schema=None) as batch_op:
        batch_op.create_index(
            "ix_link_codes_member_account", ["member_id", "account_key"], unique=False
        )

    op.create_table(
        "linked_accounts",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("partner_id", sa.String(length=63), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("external_hash", sa.String(length=64), nullable=False),
        sa.Column("external_ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("unlink_time", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_linked_accounts_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partners.id"], name=op.f("fk_linked_accounts_partner_id_partners")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_linked_accounts")),
    )
    with op.batch_alter_table("linked_accounts", schema=None) as batch_op:
        batch_op.create_index(
            "ix_linked_accounts_live_external",
            ["partner_id", "kind", "external_hash"],
            unique=True,
            postgresql_where=sa.text("unlink_time IS NULL"),
            sqlite_where=sa.text("unlink_time IS NULL"),
        )
        batch_op.create_index(
            "ix_linked_accounts_member_create", ["member_id", "create_time"], unique=False
        )

    op.create_table(
        "parked_earns",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("airline_id", sa.String(length=63), nullable=False),
        sa.Column("agency_id", sa.String(length=63), nullable=False),
        sa.Column("number_hash", sa.String(length=64), nullable=False),
        sa.Column("number_ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("qualifying_points", sa.BigInteger(), nullable=False),
        sa.Column("breakdown", sa.Text(), nullable=False),
        sa.Column("partner_reference", sa.String(length=128), nullable=False),
        sa.Column("occur_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("vest_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claim_deadline", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("member_id", sa.String(length=40), nullable=True),
        sa.Column("claim_transaction_id", sa.String(length=32), nullable=True),
        sa.Column("claim_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["agency_id"], ["partners.id"], name=op.f("fk_parked_earns_agency_id_partners")
        ),
        sa.ForeignKeyConstraint(
            ["airline_id"], ["partners.id"], name=op.f("fk_parked_earns_airline_id_partners")
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_parked_earns_member_id_members")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_parked_earns")),
    )
    with op.batch_alter_table("parked_earns", schema=None) as batch_op:
        batch_op.create_index(
            "ix_parked_earns_airline_number", ["airline_id", "number_hash"], unique=False
        )
        batch_op.create_index(
            "ix_parked_earns_state_deadline", ["state", "claim_deadline"], unique=False
        )

    with op.batch_alter_table("partners", schema=None) as batch_op:
        batch_op.add_column(sa.Column("program", sa.Text(), server_default="{}", nullable=False))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("partners", schema=None) as batch_op:
        batch_op.drop_column("program")

    with op.batch_alter_table("parked_earns", schema=None) as batch_op:
        batch_op.drop_index("ix_parked_earns_state_deadline")
        batch_op.drop_index("ix_parked_earns_airline_number")

    op.drop_table("parked_earns")
    with op.batch_alter_table("linked_accounts", schema=None) as batch_op:
        batch_op.drop_index("ix_linked_accounts_member_create")
        batch_op.drop_index(
            "ix_linked_accounts_live_external",
            postgresql_where=sa.text("unlink_time IS NULL"),
            sqlite_where=sa.text("unlink_time IS NULL"),
        )

    op.drop_table("linked_accounts")
    with op.batch_alter_table("link_codes", schema=None) as batch_op:
        batch_op.drop_index("ix_link_codes_member_account")

    op.drop_table("link_codes")
