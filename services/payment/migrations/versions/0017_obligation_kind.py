"""Payment: the kind of a payment's settlement obligation (PAYMENT, or LOSS_SHARE for a
partner's share of an accepted dispute's loss); every payment before is a PAYMENT.

Revision ID: payment_0017
"""

import sqlalchemy as sa
from alembic import op

revision = "payment_0017"
down_revision = "payment_0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("payments") as batch:
        batch.add_column(sa.Column("obligation_kind", sa.String(16), nullable=False, server_default="PAYMENT"))


def downgrade() -> None:
    with op.batch_alter_table("payments") as batch:
        batch.drop_column("obligation_kind")
