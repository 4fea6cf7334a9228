"""Account: credit offers and credit lines (issue 28 item 2). The line's limit is the
account's overdraft limit, so the ledger's check is unchanged.

Revision ID: account_0007
"""

import sqlalchemy as sa
from alembic import op

revision = "account_0007"
down_revision = "account_0006"
branch_labels = None
depends_on = None

ACTIVE_LINE = sa.text("state = 'ACTIVE'")


def upgrade() -> None:
    op.create_table(
        "credit_offers",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("account_id", sa.String(64), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("partner_id", sa.String(64), nullable=False),
        sa.Column("consent_id", sa.String(64), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("refusal", sa.String(32), nullable=True),
        sa.Column("limit_minor", sa.BigInteger, nullable=False),
        sa.Column("apr_bps", sa.Integer, nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("line_id", sa.String(64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_credit_offers_account_id", "credit_offers", ["account_id"])
    op.create_table(
        "credit_lines",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("account_id", sa.String(64), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("offer_id", sa.String(64), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("limit_minor", sa.BigInteger, nullable=False),
        sa.Column("apr_bps", sa.Integer, nullable=False),
        sa.Column("accrued_through", sa.Date, nullable=False),
        sa.Column("carry_parts", sa.BigInteger, nullable=False),
        sa.Column("deferred", sa.BigInteger, nullable=False),
        sa.Column("interest_charged", sa.BigInteger, nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_credit_lines_customer_id", "credit_lines", ["customer_id"])
    op.create_index("ix_credit_lines_account", "credit_lines", ["account_id"])
    op.create_index(
        "ux_credit_lines_active_account",
        "credit_lines",
        ["account_id"],
        unique=True,
        sqlite_where=ACTIVE_LINE,
        postgresql_where=ACTIVE_LINE,
    )


def downgrade() -> None:
    op.drop_table("credit_lines")
    op.drop_table("credit_offers")
