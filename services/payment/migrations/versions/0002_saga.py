"""Payment: saga columns, saga steps (audit trail) and the event outbox.

Revision ID: payment_0002
"""

import sqlalchemy as sa
from alembic import op

revision = "payment_0002"
down_revision = "payment_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("payments") as batch:
        batch.add_column(sa.Column("customer_id", sa.String(64), nullable=False, server_default=""))
        batch.add_column(sa.Column("creditor_ledger_account_id", sa.String(64), nullable=False, server_default=""))
        batch.add_column(sa.Column("payer_participant_id", sa.String(64), nullable=False, server_default=""))
        batch.add_column(sa.Column("payee_participant_id", sa.String(64), nullable=False, server_default=""))
        batch.add_column(sa.Column("hold_requested", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_payments_consent_created", "payments", ["consent_id", "created_at"])
    op.create_index("ix_payments_customer_created", "payments", ["customer_id", "created_at"])
    op.create_table(
        "payment_steps",
        sa.Column("step_id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("payment_id", sa.String(64), nullable=False),
        sa.Column("step", sa.String(32), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("detail", sa.String(256), nullable=False, server_default=""),
        sa.Column("trace_id", sa.String(32), nullable=False, server_default=""),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_payment_steps_payment_id", "payment_steps", ["payment_id"])
    op.create_table(
        "payment_events",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("payment_id", sa.String(64), nullable=False),
        sa.Column("partner_id", sa.String(64), nullable=False),
        sa.Column("previous_state", sa.String(32), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("status_reason", sa.String(64), nullable=False, server_default=""),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_payment_events_partner_seq", "payment_events", ["partner_id", "seq"])


def downgrade() -> None:
    op.drop_table("payment_events")
    op.drop_table("payment_steps")
    op.drop_index("ix_payments_customer_created", "payments")
    op.drop_index("ix_payments_consent_created", "payments")
    with op.batch_alter_table("payments") as batch:
        for column in (
            "lease_until",
            "hold_requested",
            "payee_participant_id",
            "payer_participant_id",
            "creditor_ledger_account_id",
            "customer_id",
        ):
            batch.drop_column(column)
