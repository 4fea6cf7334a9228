"""Payment's tables (SQLAlchemy Core); the migrations create exactly these."""

import sqlalchemy as sa

from meshlib.idempotency import idempotency_table

metadata = sa.MetaData()

payments = sa.Table(
    "payments",
    metadata,
    sa.Column("payment_id", sa.String(64), primary_key=True),
    sa.Column("partner_id", sa.String(64), nullable=False),
    sa.Column("consent_id", sa.String(64), nullable=False),
    sa.Column("debtor_account_id", sa.String(64), nullable=False),
    sa.Column("creditor_account_id", sa.String(64), nullable=True),
    sa.Column("creditor_wallet_partner_id", sa.String(64), nullable=True),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("amount_minor", sa.BigInteger, nullable=False),
    sa.Column("payment_type", sa.String(32), nullable=False),
    sa.Column("state", sa.String(32), nullable=False),
    sa.Column("status_reason", sa.String(64), nullable=False, server_default=""),
    sa.Column("status_reason_message", sa.String(256), nullable=False, server_default=""),
    sa.Column("remittance_information", sa.String(140), nullable=False, server_default=""),
    sa.Column("end_to_end_id", sa.String(35), nullable=False, server_default=""),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

idempotency_keys = idempotency_table(metadata)
