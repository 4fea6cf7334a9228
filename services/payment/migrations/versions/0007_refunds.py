"""Payment: refunds. A refund is a payment linked to the one it refunds, with a return reason.

Revision ID: payment_0007
"""

import sqlalchemy as sa
from alembic import op

revision = "payment_0007"
down_revision = "payment_0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("payments") as batch:
        batch.add_column(sa.Column("original_payment_id", sa.String(64), nullable=False, server_default=""))
        batch.add_column(sa.Column("return_reason", sa.String(4), nullable=False, server_default=""))
    # A payment's refunds, found without a scan (GetPayment, and the refundable sum).
    op.create_index("ix_payments_original_payment_id", "payments", ["original_payment_id"])


def downgrade() -> None:
    op.drop_index("ix_payments_original_payment_id", "payments")
    with op.batch_alter_table("payments") as batch:
        batch.drop_column("return_reason")
        batch.drop_column("original_payment_id")
