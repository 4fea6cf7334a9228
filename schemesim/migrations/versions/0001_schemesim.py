"""Scheme simulator: received credit transfers and the returns feed.

Revision ID: schemesim_0001
"""

import sqlalchemy as sa
from alembic import op

revision = "schemesim_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "credit_transfers",
        sa.Column("message_id", sa.String(35), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("end_to_end_id", sa.String(35), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        sa.Column("debtor_name", sa.String(140), nullable=False),
        sa.Column("debtor_account_kind", sa.String(8), nullable=False),
        sa.Column("debtor_account", sa.String(34), nullable=False),
        sa.Column("debtor_agent", sa.String(11), nullable=False),
        sa.Column("creditor_name", sa.String(140), nullable=False),
        sa.Column("creditor_account_kind", sa.String(8), nullable=False),
        sa.Column("creditor_account", sa.String(34), nullable=False),
        sa.Column("creditor_agent", sa.String(11), nullable=False),
        sa.Column("remittance_information", sa.String(140), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("reason_code", sa.String(4), nullable=False),
        sa.Column("rule", sa.String(64), nullable=False),
        sa.Column("clearing_reference", sa.String(35), nullable=False),
        sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("settle_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("return_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("submitted_by", sa.String(128), nullable=False),
    )
    op.create_index("ix_credit_transfers_return_at", "credit_transfers", ["return_at"])
    op.create_table(
        "payment_returns",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("return_id", sa.String(35), nullable=False, unique=True),
        sa.Column(
            "message_id",
            sa.String(35),
            sa.ForeignKey("credit_transfers.message_id"),
            nullable=False,
            unique=True,
        ),
        sa.Column("returned_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("payment_returns")
    op.drop_index("ix_credit_transfers_return_at", table_name="credit_transfers")
    op.drop_table("credit_transfers")
