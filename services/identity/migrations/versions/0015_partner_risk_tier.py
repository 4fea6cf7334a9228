"""Identity: a partner's risk tier (the bank's assessment, read by payment's risk rules).

Revision ID: identity_0015
"""

import sqlalchemy as sa
from alembic import op

revision = "identity_0015"
down_revision = "identity_0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("partners") as batch:
        batch.add_column(sa.Column("risk_tier", sa.String(16), nullable=False, server_default="LOW"))


def downgrade() -> None:
    with op.batch_alter_table("partners") as batch:
        batch.drop_column("risk_tier")
