"""Identity: the decoupled flow (CIBA poll mode): decoupled authorisations, stored by the
digest of their auth_req_id.

Revision ID: identity_0008
"""

import sqlalchemy as sa
from alembic import op

revision = "identity_0008"
down_revision = "identity_0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "decoupled_authorizations",
        sa.Column("request_id", sa.String(64), primary_key=True),
        sa.Column("auth_req_id_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("partner_id", sa.String(64), nullable=False),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("consent_id", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=True),
        sa.Column("binding_message", sa.String(256), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("interval_seconds", sa.Integer, nullable=False),
        sa.Column("last_polled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decision", sa.String(16), nullable=True),
        sa.Column("tokens_issued_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_decoupled_authorizations_consent_id", "decoupled_authorizations", ["consent_id"])
    op.create_index("ix_decoupled_authorizations_customer_id", "decoupled_authorizations", ["customer_id"])
    op.create_index("ix_decoupled_authorizations_expires_at", "decoupled_authorizations", ["expires_at"])


def downgrade() -> None:
    op.drop_table("decoupled_authorizations")
