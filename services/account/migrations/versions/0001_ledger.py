"""Account: accounts with running totals, transfers, statement entries, consent reads, idempotency keys.

Revision ID: account_0001
"""

import sqlalchemy as sa
from alembic import op

from meshlib.idempotency import create_idempotency_table

revision = "account_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("number", sa.String(34), nullable=False, unique=True),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("overdraft_limit", sa.BigInteger, nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=True),
        sa.Column("display_name", sa.String(100), nullable=False),
        sa.Column("equity_currency", sa.String(3), nullable=True, unique=True),
        sa.Column("debits_posted", sa.BigInteger, nullable=False),
        sa.Column("credits_posted", sa.BigInteger, nullable=False),
        sa.Column("debits_pending", sa.BigInteger, nullable=False),
        sa.Column("credits_pending", sa.BigInteger, nullable=False),
        sa.Column("last_entry_seq", sa.BigInteger, nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_accounts_customer_id", "accounts", ["customer_id"])
    op.create_table(
        "transfers",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("debit_account_id", sa.String(64), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("credit_account_id", sa.String(64), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("timeout_us", sa.BigInteger, nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reference", sa.String(128), nullable=False),
        sa.Column("description", sa.String(140), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_transfers_debit_account_id", "transfers", ["debit_account_id"])
    op.create_index("ix_transfers_credit_account_id", "transfers", ["credit_account_id"])
    op.create_index("ix_transfers_reference", "transfers", ["reference"])
    op.create_index("ix_transfers_created_at", "transfers", ["created_at"])
    op.create_index("ix_transfers_state_expires_at", "transfers", ["state", "expires_at"])
    op.create_table(
        "entries",
        sa.Column("account_id", sa.String(64), sa.ForeignKey("accounts.id"), primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True),
        sa.Column("transfer_id", sa.String(64), nullable=False),
        sa.Column("direction", sa.String(8), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("booking_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reference", sa.String(128), nullable=False),
        sa.Column("description", sa.String(140), nullable=False),
    )
    op.create_index("ix_entries_transfer_id", "entries", ["transfer_id"])
    op.create_index("ix_entries_account_booking", "entries", ["account_id", "booking_time", "seq"])
    op.create_table(
        "consent_reads",
        sa.Column("consent_id", sa.String(64), primary_key=True),
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("count", sa.Integer, nullable=False),
    )
    create_idempotency_table(op)


def downgrade() -> None:
    op.drop_table("idempotency_keys")
    op.drop_table("consent_reads")
    op.drop_table("entries")
    op.drop_table("transfers")
    op.drop_table("accounts")
