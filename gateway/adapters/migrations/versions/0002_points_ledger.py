"""points ledger

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 16:28:23.637494

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""

    op.create_table(
        "ledger_transactions",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("partner_id", sa.String(length=63), nullable=False),
        sa.Column("channel_partner_id", sa.String(length=63), nullable=True),
        sa.Column("type", sa.String(length=20), nullable=False),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("open_points", sa.BigInteger(), nullable=False),
        sa.Column("reversed_points", sa.BigInteger(), nullable=False),
        sa.Column("related_id", sa.String(length=32), nullable=True),
        sa.Column("partner_reference", sa.String(length=128), nullable=False),
        sa.Column("breakdown", sa.Text(), nullable=False),
        sa.Column("due_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("occur_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("available_after", sa.BigInteger(), nullable=False),
        sa.Column("pending_after", sa.BigInteger(), nullable=False),
        sa.Column("held_after", sa.BigInteger(), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["channel_partner_id"],
            ["partners.id"],
            name=op.f("fk_ledger_transactions_channel_partner_id_partners"),
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_ledger_transactions_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partners.id"], name=op.f("fk_ledger_transactions_partner_id_partners")
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_ledger_transactions")),
        sa.UniqueConstraint("id", name=op.f("uq_ledger_transactions_id")),
    )
    with op.batch_alter_table("ledger_transactions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_ledger_transactions_member_seq", ["member_id", "seq"], unique=False
        )
        batch_op.create_index(
            "ix_ledger_transactions_open_due", ["state", "due_time"], unique=False
        )
        batch_op.create_index(
            "ix_ledger_transactions_partner_seq", ["partner_id", "seq"], unique=False
        )

    op.create_table(
        "member_balances",
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("available", sa.BigInteger(), nullable=False),
        sa.Column("pending", sa.BigInteger(), nullable=False),
        sa.Column("held", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_member_balances_member_id_members")
        ),
        sa.PrimaryKeyConstraint("member_id", name=op.f("pk_member_balances")),
    )
    op.create_table(
        "ledger_postings",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "transaction_seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("account", sa.String(length=100), nullable=False),
        sa.Column("asset", sa.String(length=16), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["transaction_seq"],
            ["ledger_transactions.seq"],
            name=op.f("fk_ledger_postings_transaction_seq_ledger_transactions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_postings")),
    )
    with op.batch_alter_table("ledger_postings", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ledger_postings_account"), ["account"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_ledger_postings_transaction_seq"), ["transaction_seq"], unique=False
        )

    # Members enrolled before the ledger start with empty balances.
    op.execute(
        "INSERT INTO member_balances (member_id, available, pending, held) "
        "SELECT id, 0, 0, 0 FROM members"
    )


def downgrade() -> None:
    """Downgrade schema."""

    with op.batch_alter_table("ledger_postings", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ledger_postings_transaction_seq"))
        batch_op.drop_index(batch_op.f("ix_ledger_postings_account"))

    op.drop_table("ledger_postings")
    op.drop_table("member_balances")
    with op.batch_alter_table("ledger_transactions", schema=None) as batch_op:
        batch_op.drop_index("ix_ledger_transactions_partner_seq")
        batch_op.drop_index("ix_ledger_transactions_open_due")
        batch_op.drop_index("ix_ledger_transactions_member_seq")

    op.drop_table("ledger_transactions")
