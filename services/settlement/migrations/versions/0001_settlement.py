"""Settlement: participants, caps, positions, windows, obligations, idempotency keys.

Revision ID: settlement_0001
"""

import sqlalchemy as sa
from alembic import op

from meshlib.idempotency import create_idempotency_table

revision = "settlement_0001"
down_revision = None
branch_labels = None
depends_on = None

OPEN_WINDOW_PREDICATE = sa.text("state = 'OPEN'")


def upgrade() -> None:
    op.create_table(
        "participants",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("partner_id", sa.String(64), nullable=True),
        sa.Column("registration_key", sa.String(80), nullable=False, unique=True),
        sa.Column("settlement_account", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "net_debit_caps",
        sa.Column("participant_id", sa.String(64), sa.ForeignKey("participants.id"), primary_key=True),
        sa.Column("currency", sa.String(3), primary_key=True),
        sa.Column("cap_minor", sa.BigInteger, nullable=False),
        sa.Column("alarm_threshold_percent", sa.Integer, nullable=False),
    )
    op.create_table(
        "positions",
        sa.Column("participant_id", sa.String(64), sa.ForeignKey("participants.id"), primary_key=True),
        sa.Column("currency", sa.String(3), primary_key=True),
        sa.Column("net_minor", sa.BigInteger, nullable=False),
        sa.Column("reserved_minor", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "settlement_windows",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("settlement_reference", sa.String(128), nullable=False, server_default=""),
    )
    op.create_index(
        "ux_settlement_windows_one_open",
        "settlement_windows",
        ["currency"],
        unique=True,
        sqlite_where=OPEN_WINDOW_PREDICATE,
        postgresql_where=OPEN_WINDOW_PREDICATE,
    )
    op.create_table(
        "obligations",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("payer_id", sa.String(64), sa.ForeignKey("participants.id"), nullable=False),
        sa.Column("payee_id", sa.String(64), sa.ForeignKey("participants.id"), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("window_id", sa.String(64), sa.ForeignKey("settlement_windows.id"), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_obligations_window_id", "obligations", ["window_id"])
    create_idempotency_table(op)


def downgrade() -> None:
    op.drop_table("idempotency_keys")
    op.drop_index("ix_obligations_window_id", table_name="obligations")
    op.drop_table("obligations")
    op.drop_index("ux_settlement_windows_one_open", table_name="settlement_windows")
    op.drop_table("settlement_windows")
    op.drop_table("positions")
    op.drop_table("net_debit_caps")
    op.drop_table("participants")
