"""Identity: the partner event log (openbank.events.v1): partner_events numbered per partner
under partner_event_heads, and the consents' expiry notices.

Revision ID: identity_0009
"""

import sqlalchemy as sa
from alembic import op

revision = "identity_0009"
down_revision = "identity_0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "partner_events",
        sa.Column("partner_id", sa.String(64), primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True),
        sa.Column("event_id", sa.String(64), nullable=False, unique=True),
        sa.Column("source_key", sa.String(128), nullable=False, unique=True),
        sa.Column("event_type", sa.String(32), nullable=False),
        sa.Column("resource", sa.String(128), nullable=False),
        sa.Column("consent_id", sa.String(64), nullable=False, server_default=""),
        sa.Column("data", sa.Text, nullable=False, server_default="{}"),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_partner_events_recorded_at", "partner_events", ["recorded_at"])
    op.create_table(
        "partner_event_heads",
        sa.Column("partner_id", sa.String(64), primary_key=True),
        sa.Column("last_seq", sa.BigInteger, nullable=False),
        sa.Column("acknowledged_seq", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("purged_seq", sa.BigInteger, nullable=False, server_default="0"),
    )
    op.create_table(
        "consent_expiry_notices",
        sa.Column("consent_id", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(32), primary_key=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), primary_key=True),
    )


def downgrade() -> None:
    op.drop_table("consent_expiry_notices")
    op.drop_table("partner_event_heads")
    op.drop_table("partner_events")
