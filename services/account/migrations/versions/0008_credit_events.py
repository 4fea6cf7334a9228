"""Account: the credit offers' and lines' partner events outbox (relayed to identity's partner
event log under its own lease row of outbox_relays).

Revision ID: account_0008
"""

import sqlalchemy as sa
from alembic import op

revision = "account_0008"
down_revision = "account_0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "credit_events",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("partner_id", sa.String(64), nullable=False),
        sa.Column("consent_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("resource", sa.String(80), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("related", sa.String(80), nullable=False),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("credit_events")
