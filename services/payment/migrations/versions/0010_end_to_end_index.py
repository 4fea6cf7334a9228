"""Payment: operators find payments by the partner's end-to-end id (SearchPayments).

Revision ID: payment_0010
"""

from alembic import op

revision = "payment_0010"
down_revision = "payment_0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_payments_end_to_end_id", "payments", ["end_to_end_id"])


def downgrade() -> None:
    op.drop_index("ix_payments_end_to_end_id", "payments")
