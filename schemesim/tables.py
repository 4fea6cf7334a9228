"""The simulator's tables (SQLAlchemy Core); the migrations create exactly these.

``credit_transfers`` holds every message id the scheme received, with its decision stored as
times (settle_at, return_at), so statuses and returns need no timer that a restart could lose.
``payment_returns`` is the returns feed: a transfer's return enters it (with the next ``seq``)
once due, one writer at a time, so the feed's order is the order of its commits.
"""

import sqlalchemy as sa

metadata = sa.MetaData()

credit_transfers = sa.Table(
    "credit_transfers",
    metadata,
    sa.Column("message_id", sa.String(35), primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("end_to_end_id", sa.String(35), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("amount_minor", sa.BigInteger, nullable=False),
    sa.Column("debtor_name", sa.String(140), nullable=False),
    sa.Column("debtor_account_kind", sa.String(8), nullable=False),
    sa.Column("debtor_account", sa.String(34), nullable=False),
    sa.Column("debtor_agent", sa.String(11), nullable=False),
    sa.Column("creditor_name", sa.String(140), nullable=False),
    sa.Column("creditor_account_kind", sa.String(8), nullable=False),
    sa.Column("creditor_account", sa.String(34), nullable=False),
    sa.Column("creditor_agent", sa.String(11), nullable=False),
    sa.Column("remittance_information", sa.String(140), nullable=False),
    # SETTLE, REJECT, RETURN or DROPPED (the first delivery was "lost on its way in").
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("reason_code", sa.String(4), nullable=False),
    sa.Column("rule", sa.String(64), nullable=False),
    sa.Column("clearing_reference", sa.String(35), nullable=False),
    sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("settle_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("return_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("submitted_by", sa.String(128), nullable=False),
)
sa.Index("ix_credit_transfers_return_at", credit_transfers.c.return_at)

payment_returns = sa.Table(
    "payment_returns",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("return_id", sa.String(35), nullable=False, unique=True),
    sa.Column("message_id", sa.String(35), sa.ForeignKey("credit_transfers.message_id"), nullable=False, unique=True),
    sa.Column("returned_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
)
