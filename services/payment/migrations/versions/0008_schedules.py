"""Payment: future-dated payments (SCHEDULED until their time) and standing orders.

Revision ID: payment_0008
"""

import sqlalchemy as sa
from alembic import op

revision = "payment_0008"
down_revision = "payment_0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("payments") as batch:
        batch.add_column(sa.Column("requested_execution_time", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("standing_order_id", sa.String(64), nullable=False, server_default=""))
        batch.add_column(sa.Column("execution_number", sa.Integer, nullable=False, server_default="0"))
    # The scheduler's search: SCHEDULED payments by due time.
    op.create_index("ix_payments_state_requested_execution", "payments", ["state", "requested_execution_time"])
    op.create_table(
        "standing_orders",
        sa.Column("order_id", sa.String(64), primary_key=True),
        sa.Column("partner_id", sa.String(64), nullable=False),
        sa.Column("consent_id", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False, server_default=""),
        sa.Column("debtor_account_id", sa.String(64), nullable=False),
        sa.Column("creditor_account_id", sa.String(64), nullable=True),
        sa.Column("creditor_wallet_partner_id", sa.String(64), nullable=True),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        sa.Column("payment_type", sa.String(32), nullable=False),
        sa.Column("frequency", sa.String(16), nullable=False),
        sa.Column("first_execution_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("execution_count", sa.Integer, nullable=True),
        sa.Column("final_execution_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("executions_done", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_execution_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("remittance_information", sa.String(140), nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_standing_orders_due", "standing_orders", ["state", "next_execution_at"])
    op.create_index("ix_standing_orders_consent_created", "standing_orders", ["consent_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_standing_orders_consent_created", "standing_orders")
    op.drop_index("ix_standing_orders_due", "standing_orders")
    op.drop_table("standing_orders")
    op.drop_index("ix_payments_state_requested_execution", "payments")
    with op.batch_alter_table("payments") as batch:
        batch.drop_column("execution_number")
        batch.drop_column("standing_order_id")
        batch.drop_column("requested_execution_time")
