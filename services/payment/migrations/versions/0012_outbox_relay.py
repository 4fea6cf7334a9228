"""Payment: the outbox relay's position and lease (payment_events handed to identity's
partner event log, one replica at a time).

Revision ID: payment_0012
"""

import sqlalchemy as sa
from alembic import op

revision = "payment_0012"
down_revision = "payment_0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "outbox_relays",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("position", sa.BigInteger, nullable=False),
        sa.Column("owner", sa.String(64), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("outbox_relays")
