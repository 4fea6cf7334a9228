"""Account: what wallets read with each consent, per UTC day and permission (the customer's
consent dashboard at the bank's web app).

Revision ID: account_0005
"""

import sqlalchemy as sa
from alembic import op

revision = "account_0005"
down_revision = "account_0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "consent_read_activity",
        sa.Column("consent_id", sa.String(64), primary_key=True),
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("permission", sa.String(32), primary_key=True),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.Column("last_read_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("consent_read_activity")
