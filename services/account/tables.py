"""The account service's tables (SQLAlchemy Core); the migrations create exactly these."""

import sqlalchemy as sa

from meshlib.audit import audit_tables
from meshlib.idempotency import idempotency_table
from meshlib.outbox import relays_table

metadata = sa.MetaData()

# Running totals live on the account row, updated under its row lock in the same
# transaction as the transfer, so a balance is one read and never a sum over history.
accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("number", sa.String(34), nullable=False, unique=True),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("type", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("overdraft_limit", sa.BigInteger, nullable=False),
    sa.Column("customer_id", sa.String(64), nullable=True, index=True),
    sa.Column("display_name", sa.String(100), nullable=False),
    # Set only on the bank equity account: at most one per currency (a plain unique key).
    sa.Column("equity_currency", sa.String(3), nullable=True, unique=True),
    sa.Column("debits_posted", sa.BigInteger, nullable=False),
    sa.Column("credits_posted", sa.BigInteger, nullable=False),
    sa.Column("debits_pending", sa.BigInteger, nullable=False),
    sa.Column("credits_pending", sa.BigInteger, nullable=False),
    sa.Column("last_entry_seq", sa.BigInteger, nullable=False),
    sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

transfers = sa.Table(
    "transfers",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("debit_account_id", sa.String(64), sa.ForeignKey("accounts.id"), nullable=False, index=True),
    sa.Column("credit_account_id", sa.String(64), sa.ForeignKey("accounts.id"), nullable=False, index=True),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("type", sa.String(16), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("timeout_us", sa.BigInteger, nullable=True),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("reference", sa.String(128), nullable=False, index=True),
    sa.Column("description", sa.String(140), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_transfers_state_expires_at", "state", "expires_at"),
)

# The one condition the partial index on entries.transfer_id covers; a query must spell it
# literally (not as a bound parameter) for SQLite's and PostgreSQL's planners to use it.
PENDING_ENTRY = sa.text("status = 'PENDING'")

# Statement lines (one per side of a transfer). A pending line is replaced by a booked one
# (new sequence) when the hold is posted and deleted when it is voided or expires, so
# keyset pages over (booking_time, seq) never shift. Only pending lines are indexed by
# transfer (the lookup that deletes them); booked ones, nearly all, stay out of it.
entries = sa.Table(
    "entries",
    metadata,
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
    sa.Index("ix_entries_account_booking", "account_id", "booking_time", "seq"),
    sa.Index(
        "ix_entries_pending_transfer_id", "transfer_id", sqlite_where=PENDING_ENTRY, postgresql_where=PENDING_ENTRY
    ),
)

consent_reads = sa.Table(
    "consent_reads",
    metadata,
    sa.Column("consent_id", sa.String(64), primary_key=True),
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("count", sa.Integer, nullable=False),
)

# What wallets read with each consent, per UTC day and permission (the customer's dashboard).
consent_read_activity = sa.Table(
    "consent_read_activity",
    metadata,
    sa.Column("consent_id", sa.String(64), primary_key=True),
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("permission", sa.String(32), primary_key=True),
    sa.Column("count", sa.BigInteger, nullable=False),
    sa.Column("last_read_at", sa.DateTime(timezone=True), nullable=False),
)

# The movements outbox (services/account/event_relay.py): each posting on a customer's account,
# written with the posting, numbered by the store, relayed in order to identity's partner event
# log (which tells the partners whose consents cover the account). Masked number only.
account_events = sa.Table(
    "account_events",
    metadata,
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("account_id", sa.String(64), nullable=False),
    sa.Column("customer_id", sa.String(64), nullable=False),
    sa.Column("direction", sa.String(8), nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("masked_number", sa.String(16), nullable=False),
    sa.Column("reference", sa.String(128), nullable=False),
    sa.Column("transfer_id", sa.String(64), nullable=False),
    sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
)

# The relay's position and lease (meshlib.outbox).
outbox_relays = relays_table(metadata)

idempotency_keys = idempotency_table(metadata)
# Who opened, froze or closed accounts and moved money (meshlib.audit).
audit = audit_tables(metadata)
