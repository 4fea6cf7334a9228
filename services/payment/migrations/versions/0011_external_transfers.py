"""Payment: payments to other banks (the external creditor) and the scheme's returns feed cursor.

Revision ID: payment_0011
"""

import sqlalchemy as sa
from alembic import op

revision = "payment_0011"
down_revision = "payment_0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("payments") as batch:
        batch.add_column(sa.Column("creditor_scheme_account", sa.String(34), nullable=False, server_default=""))
        batch.add_column(sa.Column("creditor_scheme_account_kind", sa.String(8), nullable=False, server_default=""))
        batch.add_column(sa.Column("creditor_name", sa.String(140), nullable=False, server_default=""))
        batch.add_column(sa.Column("creditor_agent_bic", sa.String(11), nullable=False, server_default=""))
    op.create_index(
        "ix_payments_customer_creditor_scheme_account", "payments", ["customer_id", "creditor_scheme_account"]
    )
    op.create_index("ix_payments_type_state", "payments", ["payment_type", "state"])
    op.create_table(
        "clearing_feeds",
        sa.Column("feed", sa.String(32), primary_key=True),
        sa.Column("cursor", sa.String(64), nullable=False, server_default=""),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("holder", sa.String(64), nullable=False, server_default=""),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("clearing_feeds")
    op.drop_index("ix_payments_type_state", "payments")
    op.drop_index("ix_payments_customer_creditor_scheme_account", "payments")
    with op.batch_alter_table("payments") as batch:
        for column in (
            "creditor_agent_bic",
            "creditor_name",
            "creditor_scheme_account_kind",
            "creditor_scheme_account",
        ):
            batch.drop_column(column)
