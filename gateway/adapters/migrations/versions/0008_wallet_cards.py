"""wallet cards, devices, registrations, changes

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-24

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "wallet_devices",
        sa.Column("device_library_id", sa.String(length=128), nullable=False),
        sa.Column("push_token", sa.String(length=200), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("device_library_id", name=op.f("pk_wallet_devices")),
    )
    op.create_table(
        "wallet_tags",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_wallet_tags")),
    )
    op.create_table(
        "wallet_cards",
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("serial_number", sa.String(length=40), nullable=False),
        sa.Column("pass_type_id", sa.String(length=120), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("update_tag", sa.BigInteger(), nullable=False),
        sa.Column("pushed_tag", sa.BigInteger(), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_wallet_cards_member_id_members")
        ),
        sa.PrimaryKeyConstraint("member_id", name=op.f("pk_wallet_cards")),
        sa.UniqueConstraint("serial_number", name=op.f("uq_wallet_cards_serial_number")),
    )
    with op.batch_alter_table("wallet_cards", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_wallet_cards_update_tag"), ["update_tag"], unique=False
        )

    op.create_table(
        "wallet_changes",
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("claim_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_wallet_changes_member_id_members")
        ),
        sa.PrimaryKeyConstraint("member_id", name=op.f("pk_wallet_changes")),
    )
    op.create_table(
        "wallet_registrations",
        sa.Column("device_library_id", sa.String(length=128), nullable=False),
        sa.Column("serial_number", sa.String(length=40), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_library_id"],
            ["wallet_devices.device_library_id"],
            name=op.f("fk_wallet_registrations_device_library_id_wallet_devices"),
        ),
        sa.ForeignKeyConstraint(
            ["serial_number"],
            ["wallet_cards.serial_number"],
            name=op.f("fk_wallet_registrations_serial_number_wallet_cards"),
        ),
        sa.PrimaryKeyConstraint(
            "device_library_id", "serial_number", name=op.f("pk_wallet_registrations")
        ),
    )
    with op.batch_alter_table("wallet_registrations", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_wallet_registrations_serial_number"), ["serial_number"], unique=False
        )

    with op.batch_alter_table("member_balances", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("wallet_card", sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("member_balances", schema=None) as batch_op:
        batch_op.drop_column("wallet_card")

    with op.batch_alter_table("wallet_registrations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_wallet_registrations_serial_number"))

    op.drop_table("wallet_registrations")
    op.drop_table("wallet_changes")
    with op.batch_alter_table("wallet_cards", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_wallet_cards_update_tag"))

    op.drop_table("wallet_cards")
    op.drop_table("wallet_tags")
    op.drop_table("wallet_devices")
