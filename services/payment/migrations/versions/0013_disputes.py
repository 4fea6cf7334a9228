"""Payment: disputes of settled payments and the split of their loss.

Revision ID: payment_0013
"""

import sqlalchemy as sa
from alembic import op

revision = "payment_0013"
down_revision = "payment_0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "disputes",
        sa.Column("dispute_id", sa.String(64), primary_key=True),
        sa.Column("payment_id", sa.String(64), nullable=False),
        sa.Column("partner_id", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("category", sa.String(16), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        sa.Column("description", sa.String(500), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("opened_by", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decide_by", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decision_note", sa.String(500), nullable=False),
        sa.Column("partner_share_minor", sa.BigInteger, nullable=False),
        sa.Column("bank_share_minor", sa.BigInteger, nullable=False),
        sa.Column("refund_payment_ids", sa.String(200), nullable=False),
    )
    op.create_index("ix_disputes_partner_created", "disputes", ["partner_id", "created_at", "dispute_id"])
    op.create_index("ix_disputes_payment", "disputes", ["payment_id"])
    op.create_index("ix_disputes_state_decide_by", "disputes", ["state", "decide_by"])


def downgrade() -> None:
    op.drop_table("disputes")
