"""charity profiles, donations, matching campaigns, pledges

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "donations",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("charity_id", sa.String(length=63), nullable=False),
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("matched_points", sa.BigInteger(), nullable=False),
        sa.Column("sponsor_id", sa.String(length=63), nullable=True),
        sa.Column("matching_campaign_id", sa.String(length=32), nullable=True),
        sa.Column("value_minor", sa.BigInteger(), nullable=False),
        sa.Column("matched_value_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("transaction_id", sa.String(length=32), nullable=False),
        sa.Column("pledge_id", sa.String(length=32), nullable=True),
        sa.Column("pledge_run_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["charity_id"], ["partners.id"], name=op.f("fk_donations_charity_id_partners")
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_donations_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["sponsor_id"], ["partners.id"], name=op.f("fk_donations_sponsor_id_partners")
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_donations")),
        sa.UniqueConstraint("id", name=op.f("uq_donations_id")),
    )
    with op.batch_alter_table("donations", schema=None) as batch_op:
        batch_op.create_index("ix_donations_charity_seq", ["charity_id", "seq"], unique=False)
        batch_op.create_index("ix_donations_create_time", ["create_time"], unique=False)
        batch_op.create_index("ix_donations_member_seq", ["member_id", "seq"], unique=False)
        batch_op.create_index(
            "ix_donations_pledge_run", ["pledge_id", "pledge_run_time"], unique=True
        )

    op.create_table(
        "matching_campaigns",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("sponsor_id", sa.String(length=63), nullable=False),
        sa.Column("charity_id", sa.String(length=63), nullable=False),
        sa.Column("percent", sa.Integer(), nullable=False),
        sa.Column("budget_points", sa.BigInteger(), nullable=False),
        sa.Column("spent_points", sa.BigInteger(), nullable=False),
        sa.Column("start_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stop_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["charity_id"], ["partners.id"], name=op.f("fk_matching_campaigns_charity_id_partners")
        ),
        sa.ForeignKeyConstraint(
            ["sponsor_id"], ["partners.id"], name=op.f("fk_matching_campaigns_sponsor_id_partners")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_matching_campaigns")),
    )
    with op.batch_alter_table("matching_campaigns", schema=None) as batch_op:
        batch_op.create_index(
            "ix_matching_campaigns_charity_end", ["charity_id", "end_time"], unique=False
        )

    op.create_table(
        "pledges",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("charity_id", sa.String(length=63), nullable=False),
        sa.Column("partner_id", sa.String(length=63), nullable=True),
        sa.Column("kind", sa.String(length=12), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("start_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_run_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cancel_time", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["charity_id"], ["partners.id"], name=op.f("fk_pledges_charity_id_partners")
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_pledges_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partners.id"], name=op.f("fk_pledges_partner_id_partners")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pledges")),
    )
    with op.batch_alter_table("pledges", schema=None) as batch_op:
        batch_op.create_index(
            "ix_pledges_due",
            ["next_run_time"],
            unique=False,
            postgresql_where=sa.text("cancel_time IS NULL"),
            sqlite_where=sa.text("cancel_time IS NULL"),
        )
        batch_op.create_index(
            "ix_pledges_live_expiring",
            ["member_id"],
            unique=True,
            postgresql_where=sa.text("kind = 'EXPIRING' AND cancel_time IS NULL"),
            sqlite_where=sa.text("kind = 'EXPIRING' AND cancel_time IS NULL"),
        )
        batch_op.create_index(
            "ix_pledges_member_create", ["member_id", "create_time"], unique=False
        )

    with op.batch_alter_table("partners", schema=None) as batch_op:
        batch_op.add_column(sa.Column("charity", sa.Text(), server_default="{}", nullable=False))

    with op.batch_alter_table("ledger_transactions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("donated_points", sa.BigInteger(), server_default="0", nullable=False)
        )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("ledger_transactions", schema=None) as batch_op:
        batch_op.drop_column("donated_points")

    with op.batch_alter_table("partners", schema=None) as batch_op:
        batch_op.drop_column("charity")

    with op.batch_alter_table("pledges", schema=None) as batch_op:
        batch_op.drop_index("ix_pledges_member_create")
        batch_op.drop_index(
            "ix_pledges_live_expiring",
            postgresql_where=sa.text("kind = 'EXPIRING' AND cancel_time IS NULL"),
            sqlite_where=sa.text("kind = 'EXPIRING' AND cancel_time IS NULL"),
        )
        batch_op.drop_index(
            "ix_pledges_due",
            postgresql_where=sa.text("cancel_time IS NULL"),
            sqlite_where=sa.text("cancel_time IS NULL"),
        )

    op.drop_table("pledges")
    with op.batch_alter_table("matching_campaigns", schema=None) as batch_op:
        batch_op.drop_index("ix_matching_campaigns_charity_end")

    op.drop_table("matching_campaigns")
    with op.batch_alter_table("donations", schema=None) as batch_op:
        batch_op.drop_index("ix_donations_pledge_run")
        batch_op.drop_index("ix_donations_member_seq")
        batch_op.drop_index("ix_donations_create_time")
        batch_op.drop_index("ix_donations_charity_seq")

    op.drop_table("donations")
