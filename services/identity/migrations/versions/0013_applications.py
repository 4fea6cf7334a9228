"""Identity: applications for new customers' accounts through a partner (embedded finance).

Revision ID: identity_0013
"""

import sqlalchemy as sa
from alembic import op

revision = "identity_0013"
down_revision = "identity_0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "applications",
        sa.Column("application_id", sa.String(32), primary_key=True),
        sa.Column("partner_id", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("applicant", sa.Text, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("consent_permissions", sa.Text, nullable=False),
        sa.Column("code_challenge", sa.String(128), nullable=False),
        sa.Column("identity_key", sa.String(64), nullable=False),
        sa.Column("document_key", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(32), nullable=True),
        sa.Column("username", sa.String(64), nullable=True),
        sa.Column("account_id", sa.String(64), nullable=True),
        sa.Column("consent_id", sa.String(32), nullable=True),
        sa.Column("sealed_activation_code", sa.LargeBinary, nullable=True),
        sa.Column("activation_code_hash", sa.String(64), nullable=True),
        sa.Column("decided_by", sa.String(128), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    for column in ("partner_id", "state", "identity_key", "document_key"):
        op.create_index(f"ix_applications_{column}", "applications", [column])


def downgrade() -> None:
    op.drop_table("applications")
