"""Identity: partners' push endpoints for their event log (delivery position, status, lease).

Revision ID: identity_0012
"""

import sqlalchemy as sa
from alembic import op

revision = "identity_0012"
down_revision = "identity_0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "event_endpoints",
        sa.Column("partner_id", sa.String(64), primary_key=True),
        sa.Column("target", sa.String(255), nullable=False),
        sa.Column("insecure", sa.Boolean, nullable=False),
        sa.Column("max_attempts", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("delivered_seq", sa.BigInteger, nullable=False),
        sa.Column("failed_attempts", sa.Integer, nullable=False),
        sa.Column("last_error", sa.String(64), nullable=False, server_default=""),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("event_endpoints")
