"""Payment: payments and idempotency keys.

Revision ID: payment_0001
"""

import sqlalchemy as sa
from alembic import op

from meshlib.idempotency import create_idempotency_table

revision = "payment_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "payments",
        sa.Column("payment_id", sa.String(64), primary_key=True),
        sa.Column("partner_id", sa.String(64), nullable=False),
        sa.Column("consent_id", sa.String(64), nullable=False),
        sa.Column("debtor_account_id", sa.String(64), nullable=False),
        sa.Column("creditor_account_id", sa.String(64), nullable=True),
        sa.Column("creditor_wallet_partner_id", sa.String(64), nullable=True),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        sa.Column("payment_type", sa.String(32), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("status_reason", sa.String(64), nullable=False, server_default=""),
        sa.Column("status_reason_message", sa.String(256), nullable=False, server_default=""),
        sa.Column("remittance_information", sa.String(140), nullable=False, server_default=""),
        sa.Column("end_to_end_id", sa.String(35), nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_payments_partner_created", "payments", ["partner_id", "created_at", "payment_id"])
    op.create_index("ix_payments_state_updated", "payments", ["state", "updated_at"])
    create_idempotency_table(op)


def downgrade() -> None:
    op.drop_table("idempotency_keys")
    op.drop_table("payments")
