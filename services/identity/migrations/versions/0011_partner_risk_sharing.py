"""Identity: a partner's risk-sharing agreement (its share of an accepted dispute's loss, basis
points per dispute category).

Revision ID: identity_0011
"""

import sqlalchemy as sa
from alembic import op

revision = "identity_0011"
down_revision = "identity_0010"
branch_labels = None
depends_on = None

_COLUMNS = ("fraud_share_bps", "not_received_share_bps", "wrong_amount_share_bps")


def upgrade() -> None:
    with op.batch_alter_table("partners") as batch:
        for name in _COLUMNS:
            batch.add_column(sa.Column(name, sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("partners") as batch:
        for name in _COLUMNS:
            batch.drop_column(name)
