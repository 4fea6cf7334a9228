"""Identity: the customer's own activation code (keyed hash, expiry) and wrong-entry lock.

Revision ID: identity_0016
"""

import sqlalchemy as sa
from alembic import op

revision = "identity_0016"
down_revision = "identity_0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("applications") as batch:
        batch.add_column(sa.Column("customer_code_hash", sa.String(128), nullable=True))
        batch.add_column(sa.Column("customer_code_expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("activation_attempts", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("activation_locked_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("applications") as batch:
        for column in ("activation_locked_at", "activation_attempts", "customer_code_expires_at", "customer_code_hash"):
            batch.drop_column(column)
