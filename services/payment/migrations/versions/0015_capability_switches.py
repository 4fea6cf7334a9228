"""Payment: the kill switch, payment capabilities switched off per partner or for all.

Revision ID: payment_0015
"""

import sqlalchemy as sa
from alembic import op

revision = "payment_0015"
down_revision = "payment_0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "capability_switches",
        sa.Column("capability", sa.String(32), primary_key=True),
        sa.Column("scope", sa.String(64), primary_key=True),
        sa.Column("switched_off_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("operator", sa.String(128), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("capability_switches")
