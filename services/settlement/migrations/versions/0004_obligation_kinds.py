"""Settlement: what an obligation is for (PAYMENT, or LOSS_SHARE: a partner's share of a
dispute's loss); every obligation before is a PAYMENT's.

Revision ID: settlement_0004
"""

import sqlalchemy as sa
from alembic import op

revision = "settlement_0004"
down_revision = "settlement_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("obligations") as batch:
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="PAYMENT"))


def downgrade() -> None:
    with op.batch_alter_table("obligations") as batch:
        batch.drop_column("kind")
