"""The credit line's tables (issue 28 item 2), on the account service's metadata: the offers
the bank made and the lines customers accepted. The limit itself lives on the account row
(``accounts.overdraft_limit``), where the ledger checks every debit."""

import sqlalchemy as sa

from services.account.tables import metadata

ACTIVE_LINE = sa.text("state = 'ACTIVE'")

credit_offers = sa.Table(
    "credit_offers",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("account_id", sa.String(64), sa.ForeignKey("accounts.id"), nullable=False, index=True),
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
    # The expiry sweep's look-up (account_0009).
    sa.Index("ix_credit_offers_state_expires", "state", "expires_at"),
)

credit_lines = sa.Table(
    "credit_lines",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("account_id", sa.String(64), sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("customer_id", sa.String(64), nullable=False, index=True),
    sa.Column("offer_id", sa.String(64), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("limit_minor", sa.BigInteger, nullable=False),
    sa.Column("apr_bps", sa.Integer, nullable=False),
    sa.Column("accrued_through", sa.Date, nullable=False),
    sa.Column("carry_parts", sa.BigInteger, nullable=False),
    sa.Column("deferred", sa.BigInteger, nullable=False),
    sa.Column("interest_charged", sa.BigInteger, nullable=False),
    # The accrual job's lease (one replica accrues a line at a time).
    sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
    sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
    sa.Index("ix_credit_lines_account", "account_id"),
    # At most one active line per account, whatever races.
    sa.Index(
        "ux_credit_lines_active_account",
        "account_id",
        unique=True,
        sqlite_where=ACTIVE_LINE,
        postgresql_where=ACTIVE_LINE,
    ),
)

# The partner's events of offers and lines (events.v1 CREDIT_*_STATE_CHANGED), written in the
# transaction of the change, relayed in order to identity's partner event log
# (services/account/credit_events.py) under the lease row "credit-events" of outbox_relays.
credit_events = sa.Table(
    "credit_events",
    metadata,
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("partner_id", sa.String(64), nullable=False),
    sa.Column("consent_id", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(8), nullable=False),  # OFFER | LINE
    sa.Column("resource", sa.String(80), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("reason", sa.String(32), nullable=False),
    sa.Column("account_id", sa.String(64), nullable=False),
    sa.Column("related", sa.String(80), nullable=False),
    sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
)
