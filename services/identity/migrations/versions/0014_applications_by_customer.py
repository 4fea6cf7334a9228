"""Identity: applications found by their customer (the customer's dashboard lists its own).

Revision ID: identity_0014
"""

from alembic import op

revision = "identity_0014"
down_revision = "identity_0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_applications_customer_id", "applications", ["customer_id"])


def downgrade() -> None:
    op.drop_index("ix_applications_customer_id", table_name="applications")
