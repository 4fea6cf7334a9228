"""Account: an index for the sweep that marks offers EXPIRED once their validity is over
(and tells the partner), so it does not scan every offer the bank ever made.

Revision ID: account_0009
"""

from alembic import op

revision = "account_0009"
down_revision = "account_0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_credit_offers_state_expires", "credit_offers", ["state", "expires_at"])


def downgrade() -> None:
    op.drop_index("ix_credit_offers_state_expires", table_name="credit_offers")
