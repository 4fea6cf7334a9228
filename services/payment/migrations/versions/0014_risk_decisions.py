"""Payment: risk decisions of payments waiting for step-up or review (who decided, until when).

Revision ID: payment_0014
"""

import sqlalchemy as sa
from alembic import op

revision = "payment_0014"
down_revision = "payment_0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "risk_decisions",
        sa.Column("payment_id", sa.String(64), primary_key=True),
        sa.Column("partner_id", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("score", sa.Integer, nullable=False),
        sa.Column("rules_version", sa.String(64), nullable=False),
        sa.Column("rules_fired", sa.String(500), nullable=False),
        sa.Column("signals", sa.Text, nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("failed_attempts", sa.Integer, nullable=False),
        sa.Column("resolution", sa.String(16), nullable=False),
        sa.Column("resolved_by", sa.String(128), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("note", sa.String(500), nullable=False),
    )
    op.create_index("ix_risk_decisions_waiting", "risk_decisions", ["resolution", "expires_at"])


def downgrade() -> None:
    op.drop_index("ix_risk_decisions_waiting", "risk_decisions")
    op.drop_table("risk_decisions")
