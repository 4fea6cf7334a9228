"""Identity: the redirect flow: partners' registered redirect URIs and pushed authorisation
requests (RFC 9126), stored by the digest of their request_uri.

Revision ID: identity_0007
"""

import sqlalchemy as sa
from alembic import op

revision = "identity_0007"
down_revision = "identity_0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("partners") as batch:
        batch.add_column(sa.Column("redirect_uris", sa.Text, nullable=False, server_default=""))
    op.create_table(
        "authorization_requests",
        sa.Column("request_id", sa.String(64), primary_key=True),
        sa.Column("request_uri_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("partner_id", sa.String(64), nullable=False),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("consent_id", sa.String(64), nullable=False),
        sa.Column("redirect_uri", sa.String(512), nullable=False),
        sa.Column("code_challenge", sa.String(64), nullable=False),
        sa.Column("state", sa.String(256), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decide_before", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decision", sa.String(16), nullable=True),
    )
    op.create_index("ix_authorization_requests_consent_id", "authorization_requests", ["consent_id"])
    op.create_index("ix_authorization_requests_expires_at", "authorization_requests", ["expires_at"])


def downgrade() -> None:
    op.drop_table("authorization_requests")
    with op.batch_alter_table("partners") as batch:
        batch.drop_column("redirect_uris")
