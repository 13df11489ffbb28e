"""settlement: price lists, FX rates, periods, statements, lines, adjustments, reconciliations

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-24

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "settlement_fx_rates",
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("base_currency", sa.String(length=3), nullable=False),
        sa.Column("rate", sa.String(length=32), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("period", "currency", name=op.f("pk_settlement_fx_rates")),
    )
    op.create_table(
        "settlement_lines",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("partner_id", sa.String(length=63), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("component", sa.String(length=12), nullable=False),
        sa.Column("transaction_seq", sa.BigInteger(), nullable=True),
        sa.Column("transaction_id", sa.String(length=32), nullable=False),
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("txn_type", sa.String(length=20), nullable=False),
        sa.Column("txn_partner_id", sa.String(length=63), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("units", sa.BigInteger(), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("price_list_id", sa.String(length=32), nullable=True),
        sa.Column("price_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("partner_reference", sa.String(length=128), nullable=False),
        sa.Column("reason", sa.Text(), server_default="", nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("occur_time", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_settlement_lines")),
    )
    with op.batch_alter_table("settlement_lines", schema=None) as batch_op:
        batch_op.create_index(
            "ix_settlement_lines_period_partner_time",
            ["period", "partner_id", "create_time", "id"],
            unique=False,
        )
        batch_op.create_index(
            "ix_settlement_lines_transaction",
            ["transaction_seq", "partner_id", "component"],
            unique=True,
        )

    op.create_table(
        "settlement_periods",
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("base_currency", sa.String(length=3), nullable=False),
        sa.Column("close_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("statement_count", sa.Integer(), nullable=False),
        sa.Column("totals", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("period", name=op.f("pk_settlement_periods")),
    )
    op.create_table(
        "price_lists",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("partner_id", sa.String(length=63), nullable=False),
        sa.Column("valid_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("issue_price", sa.String(length=32), nullable=False),
        sa.Column("redemption_rate", sa.String(length=32), nullable=False),
        sa.Column("conversion_price", sa.String(length=32), nullable=False),
        sa.Column("charity_value", sa.String(length=32), nullable=False),
        sa.Column("fee_per_transaction_minor", sa.BigInteger(), nullable=False),
        sa.Column("fee_percent", sa.String(length=32), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partners.id"], name=op.f("fk_price_lists_partner_id_partners")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_price_lists")),
    )
    with op.batch_alter_table("price_lists", schema=None) as batch_op:
        batch_op.create_index(
            "ix_price_lists_partner_valid_from", ["partner_id", "valid_from"], unique=True
        )

    op.create_table(
        "reconciliations",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("partner_id", sa.String(length=63), nullable=False),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("file_sha256", sa.String(length=64), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("discrepancies", sa.Text(), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partners.id"], name=op.f("fk_reconciliations_partner_id_partners")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reconciliations")),
    )
    with op.batch_alter_table("reconciliations", schema=None) as batch_op:
        batch_op.create_index(
            "ix_reconciliations_partner_create", ["partner_id", "create_time"], unique=False
        )

    op.create_table(
        "settlement_adjustments",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("partner_id", sa.String(length=63), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("reference", sa.String(length=200), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["partners.id"],
            name=op.f("fk_settlement_adjustments_partner_id_partners"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_settlement_adjustments")),
    )
    with op.batch_alter_table("settlement_adjustments", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_settlement_adjustments_period"), ["period"], unique=False
        )

    op.create_table(
        "settlement_statements",
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("partner_id", sa.String(length=63), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("points_issued", sa.BigInteger(), nullable=False),
        sa.Column("points_redeemed", sa.BigInteger(), nullable=False),
        sa.Column("points_converted", sa.BigInteger(), nullable=False),
        sa.Column("units_converted", sa.BigInteger(), nullable=False),
        sa.Column("points_donated", sa.BigInteger(), nullable=False),
        sa.Column("points_matched", sa.BigInteger(), nullable=False),
        sa.Column("points_expired", sa.BigInteger(), nullable=False),
        sa.Column("issue_minor", sa.BigInteger(), nullable=False),
        sa.Column("redemption_minor", sa.BigInteger(), nullable=False),
        sa.Column("conversion_minor", sa.BigInteger(), nullable=False),
        sa.Column("donation_minor", sa.BigInteger(), nullable=False),
        sa.Column("fee_minor", sa.BigInteger(), nullable=False),
        sa.Column("adjustment_minor", sa.BigInteger(), nullable=False),
        sa.Column("late_minor", sa.BigInteger(), nullable=False),
        sa.Column("owed_minor", sa.BigInteger(), nullable=False),
        sa.Column("due_minor", sa.BigInteger(), nullable=False),
        sa.Column("net_minor", sa.BigInteger(), nullable=False),
        sa.Column("fx_rate", sa.String(length=32), nullable=False),
        sa.Column("net_base_minor", sa.BigInteger(), nullable=False),
        sa.Column("breakage_base_minor", sa.BigInteger(), nullable=False),
        sa.Column("line_count", sa.BigInteger(), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["partners.id"],
            name=op.f("fk_settlement_statements_partner_id_partners"),
        ),
        sa.PrimaryKeyConstraint("period", "partner_id", name=op.f("pk_settlement_statements")),
    )
    with op.batch_alter_table("ledger_transactions", schema=None) as batch_op:
        batch_op.create_index("ix_ledger_transactions_create_time", ["create_time"], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("ledger_transactions", schema=None) as batch_op:
        batch_op.drop_index("ix_ledger_transactions_create_time")

    op.drop_table("settlement_statements")
    with op.batch_alter_table("settlement_adjustments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_settlement_adjustments_period"))

    op.drop_table("settlement_adjustments")
    with op.batch_alter_table("reconciliations", schema=None) as batch_op:
        batch_op.drop_index("ix_reconciliations_partner_create")

    op.drop_table("reconciliations")
    with op.batch_alter_table("price_lists", schema=None) as batch_op:
        batch_op.drop_index("ix_price_lists_partner_valid_from")

    op.drop_table("price_lists")
    op.drop_table("settlement_periods")
    with op.batch_alter_table("settlement_lines", schema=None) as batch_op:
        batch_op.drop_index("ix_settlement_lines_transaction")
        batch_op.drop_index("ix_settlement_lines_period_partner_time")

    op.drop_table("settlement_lines")
    op.drop_table("settlement_fx_rates")
