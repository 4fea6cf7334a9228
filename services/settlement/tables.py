"""Settlement's tables (SQLAlchemy Core); the migrations create exactly these.

Money columns are BIGINT minor units. ``settlement_windows`` has a partial unique index so
a currency can never have two OPEN windows, whatever the code does.
"""

import sqlalchemy as sa

from meshlib.audit import audit_tables
from meshlib.idempotency import idempotency_table

metadata = sa.MetaData()

OPEN_WINDOW_PREDICATE = sa.text("state = 'OPEN'")

participants = sa.Table(
    "participants",
    metadata,
    # Insertion order, for stable oldest-first pagination.
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(64), nullable=False, unique=True),
    sa.Column("type", sa.String(16), nullable=False),
    sa.Column("partner_id", sa.String(64), nullable=True),
    # "bank" or "partner:<id>": one bank, one wallet per partner.
    sa.Column("registration_key", sa.String(80), nullable=False, unique=True),
    sa.Column("settlement_account", sa.String(128), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

net_debit_caps = sa.Table(
    "net_debit_caps",
    metadata,
    sa.Column("participant_id", sa.String(64), sa.ForeignKey("participants.id"), primary_key=True),
    sa.Column("currency", sa.String(3), primary_key=True),
    sa.Column("cap_minor", sa.BigInteger, nullable=False),
    sa.Column("alarm_threshold_percent", sa.Integer, nullable=False),
)

positions = sa.Table(
    "positions",
    metadata,
    sa.Column("participant_id", sa.String(64), sa.ForeignKey("participants.id"), primary_key=True),
    sa.Column("currency", sa.String(3), primary_key=True),
    sa.Column("net_minor", sa.BigInteger, nullable=False),
    sa.Column("reserved_minor", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
)

settlement_windows = sa.Table(
    "settlement_windows",
    metadata,
    # Creation order, for stable newest-first pagination.
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(64), nullable=False, unique=True),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("settlement_reference", sa.String(128), nullable=False, server_default=""),
    sa.Index(
        "ux_settlement_windows_one_open",
        "currency",
        unique=True,
        sqlite_where=OPEN_WINDOW_PREDICATE,
        postgresql_where=OPEN_WINDOW_PREDICATE,
    ),
)

obligations = sa.Table(
    "obligations",
    metadata,
    # The payment id.
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("payer_id", sa.String(64), sa.ForeignKey("participants.id"), nullable=False),
    sa.Column("payee_id", sa.String(64), sa.ForeignKey("participants.id"), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("amount_minor", sa.BigInteger, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("window_id", sa.String(64), sa.ForeignKey("settlement_windows.id"), nullable=True, index=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    # Added by settlement_0004: PAYMENT or LOSS_SHARE (domain.obligations.OBLIGATION_KINDS).
    sa.Column("kind", sa.String(16), nullable=False, server_default="PAYMENT"),
)

idempotency_keys = idempotency_table(metadata)
# Who changed participants, caps, windows and positions (meshlib.audit).
audit = audit_tables(metadata)
