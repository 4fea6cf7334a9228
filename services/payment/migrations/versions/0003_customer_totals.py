"""Payment: running totals per customer and currency, and indexes for the beneficiary check.

The velocity history used to aggregate every payment the customer ever made; it now reads
one totals row, counts only the rows of its longest window, and seeks the creditor by index.

Revision ID: payment_0003
"""

import sqlalchemy as sa
from alembic import op

revision = "payment_0003"
down_revision = "payment_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "payment_customer_totals",
        sa.Column("customer_id", sa.String(64), primary_key=True),
        sa.Column("currency", sa.String(3), primary_key=True),
        sa.Column("payments", sa.BigInteger, nullable=False),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
    )
    # The totals of the payments already there (counted: neither rejected nor cancelled).
    op.execute(
        "INSERT INTO payment_customer_totals (customer_id, currency, payments, amount_minor) "
        "SELECT customer_id, currency, COUNT(*), SUM(amount_minor) FROM payments "
        "WHERE state NOT IN ('REJECTED', 'CANCELLED') GROUP BY customer_id, currency"
    )
    op.create_index("ix_payments_customer_creditor_account", "payments", ["customer_id", "creditor_account_id"])
    op.create_index("ix_payments_customer_creditor_wallet", "payments", ["customer_id", "creditor_wallet_partner_id"])


def downgrade() -> None:
    op.drop_index("ix_payments_customer_creditor_wallet", "payments")
    op.drop_index("ix_payments_customer_creditor_account", "payments")
    op.drop_table("payment_customer_totals")
