"""Payment's tables (SQLAlchemy Core); the migrations create exactly these."""

import sqlalchemy as sa

from meshlib.audit import audit_tables
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
    # Added by payment_0002: who pays, where the money goes, and who drives the saga.
    sa.Column("customer_id", sa.String(64), nullable=False, server_default=""),
    sa.Column("creditor_ledger_account_id", sa.String(64), nullable=False, server_default=""),
    sa.Column("payer_participant_id", sa.String(64), nullable=False, server_default=""),
    sa.Column("payee_participant_id", sa.String(64), nullable=False, server_default=""),
    sa.Column("hold_requested", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
    # Added by payment_0007: a refund names the payment it refunds and its return reason.
    sa.Column("original_payment_id", sa.String(64), nullable=False, server_default=""),
    sa.Column("return_reason", sa.String(4), nullable=False, server_default=""),
    # Added by payment_0008: a future-dated payment's time, a standing order's execution.
    sa.Column("requested_execution_time", sa.DateTime(timezone=True), nullable=True),
    sa.Column("standing_order_id", sa.String(64), nullable=False, server_default=""),
    sa.Column("execution_number", sa.Integer, nullable=False, server_default="0"),
    # Added by payment_0009: the payment's fee (fixed at creation) and where it goes.
    sa.Column("fee_minor", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("fee_debit_account_id", sa.String(64), nullable=False, server_default=""),
    sa.Column("fee_credit_account_id", sa.String(64), nullable=False, server_default=""),
    sa.Column("fee_payer_participant_id", sa.String(64), nullable=False, server_default=""),
    sa.Column("fee_payee_participant_id", sa.String(64), nullable=False, server_default=""),
    # Added by payment_0011: a payment to another bank names its creditor there.
    sa.Column("creditor_scheme_account", sa.String(34), nullable=False, server_default=""),
    sa.Column("creditor_scheme_account_kind", sa.String(8), nullable=False, server_default=""),
    sa.Column("creditor_name", sa.String(140), nullable=False, server_default=""),
    sa.Column("creditor_agent_bic", sa.String(11), nullable=False, server_default=""),
    # Added by payment_0017: the kind of its settlement obligation (PAYMENT; LOSS_SHARE for a
    # partner's share of a dispute's loss).
    sa.Column("obligation_kind", sa.String(16), nullable=False, server_default="PAYMENT"),
    sa.Index("ix_payments_customer_creditor_scheme_account", "customer_id", "creditor_scheme_account"),
    sa.Index("ix_payments_type_state", "payment_type", "state"),
)

# Where the payment service is in a feed of the clearing scheme (payment_0011): the returns
# feed's cursor, kept once its returns are handled, and the lease of the replica reading it.
clearing_feeds = sa.Table(
    "clearing_feeds",
    metadata,
    sa.Column("feed", sa.String(32), primary_key=True),
    sa.Column("cursor", sa.String(64), nullable=False, server_default=""),
    sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
    sa.Column("holder", sa.String(64), nullable=False, server_default=""),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
)

# Standing orders (payment_0008): the scheduler claims a due one with a lease, runs its next
# execution (a payment whose idempotency key is the order and the execution's number) and
# then advances it, so no execution runs twice whoever runs it and whenever it crashes.
standing_orders = sa.Table(
    "standing_orders",
    metadata,
    sa.Column("order_id", sa.String(64), primary_key=True),
    sa.Column("partner_id", sa.String(64), nullable=False),
    sa.Column("consent_id", sa.String(64), nullable=False),
    sa.Column("customer_id", sa.String(64), nullable=False, server_default=""),
    sa.Column("debtor_account_id", sa.String(64), nullable=False),
    sa.Column("creditor_account_id", sa.String(64), nullable=True),
    sa.Column("creditor_wallet_partner_id", sa.String(64), nullable=True),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("amount_minor", sa.BigInteger, nullable=False),
    sa.Column("payment_type", sa.String(32), nullable=False),
    sa.Column("frequency", sa.String(16), nullable=False),
    sa.Column("first_execution_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("execution_count", sa.Integer, nullable=True),
    sa.Column("final_execution_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("executions_done", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_execution_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("remittance_information", sa.String(140), nullable=False, server_default=""),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
    sa.Index("ix_standing_orders_due", "state", "next_execution_at"),
    sa.Index("ix_standing_orders_consent_created", "consent_id", "created_at"),
)

# Running totals of each customer's counted payments (not REJECTED or CANCELLED) per currency,
# kept in the transactions that add or drop a counted payment (payment_0003): the velocity
# history reads one row instead of every payment the customer ever made.
customer_totals = sa.Table(
    "payment_customer_totals",
    metadata,
    sa.Column("customer_id", sa.String(64), primary_key=True),
    sa.Column("currency", sa.String(3), primary_key=True),
    sa.Column("payments", sa.BigInteger, nullable=False),
    sa.Column("amount_minor", sa.BigInteger, nullable=False),
)

# Running sums of counted payments per consent and per partner, by currency and UTC day, kept
# like the customer totals (payment_0004): a consent's period limit sums at most 31 rows and a
# partner's daily limit reads one, instead of every payment of the period.
spent_days = sa.Table(
    "payment_spent_days",
    metadata,
    sa.Column("scope", sa.String(16), primary_key=True),  # the payments column: consent_id or partner_id
    sa.Column("scope_id", sa.String(64), primary_key=True),
    sa.Column("currency", sa.String(3), primary_key=True),
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("amount_minor", sa.BigInteger, nullable=False),
)

# One row per saga step outcome, written before the downstream call ("started") and after it.
payment_steps = sa.Table(
    "payment_steps",
    metadata,
    sa.Column("step_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("payment_id", sa.String(64), nullable=False, index=True),
    sa.Column("step", sa.String(32), nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("detail", sa.String(256), nullable=False, server_default=""),
    sa.Column("trace_id", sa.String(32), nullable=False, server_default=""),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
)

# The outbox: one row per state change, in the same transaction; seq is the stream cursor.
payment_events = sa.Table(
    "payment_events",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("payment_id", sa.String(64), nullable=False),
    sa.Column("partner_id", sa.String(64), nullable=False),
    sa.Column("previous_state", sa.String(32), nullable=False),
    sa.Column("state", sa.String(32), nullable=False),
    sa.Column("status_reason", sa.String(64), nullable=False, server_default=""),
    sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_payment_events_partner_seq", "partner_id", "seq"),
)

# The outbox relay's position and lease (services/payment/event_relay.py): one row per relay.
outbox_relays = sa.Table(
    "outbox_relays",
    metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("position", sa.BigInteger, nullable=False),
    sa.Column("owner", sa.String(64), nullable=True),
    sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
)

# Disputes of settled payments and how their loss was split (services/payment/disputes.py).
disputes = sa.Table(
    "disputes",
    metadata,
    sa.Column("dispute_id", sa.String(64), primary_key=True),
    sa.Column("payment_id", sa.String(64), nullable=False),
    sa.Column("partner_id", sa.String(64), nullable=False),
    sa.Column("customer_id", sa.String(64), nullable=False),
    sa.Column("category", sa.String(16), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("amount_minor", sa.BigInteger, nullable=False),
    sa.Column("description", sa.String(500), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("opened_by", sa.String(16), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("decide_by", sa.DateTime(timezone=True), nullable=False),
    sa.Column("decision_note", sa.String(500), nullable=False),
    sa.Column("partner_share_minor", sa.BigInteger, nullable=False),
    sa.Column("bank_share_minor", sa.BigInteger, nullable=False),
    # Space-separated ids of the refunds that paid the customer ("" until they are recorded).
    sa.Column("refund_payment_ids", sa.String(200), nullable=False),
    sa.Index("ix_disputes_partner_created", "partner_id", "created_at", "dispute_id"),
    sa.Index("ix_disputes_payment", "payment_id"),
    sa.Index("ix_disputes_state_decide_by", "state", "decide_by"),
)

# Each payment's risk decision (services/payment/domain/risk.py) and, for one that waits for the
# customer (step-up) or an operator (review), until when and who decided.
risk_decisions = sa.Table(
    "risk_decisions",
    metadata,
    sa.Column("payment_id", sa.String(64), primary_key=True),
    sa.Column("partner_id", sa.String(64), nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("score", sa.Integer, nullable=False),
    sa.Column("rules_version", sa.String(64), nullable=False),
    sa.Column("rules_fired", sa.String(500), nullable=False),
    sa.Column("signals", sa.Text, nullable=False),  # JSON object of text values
    sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("failed_attempts", sa.Integer, nullable=False),
    sa.Column("resolution", sa.String(16), nullable=False),  # "" while waiting, else what ended it
    sa.Column("resolved_by", sa.String(128), nullable=False),
    sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("note", sa.String(500), nullable=False),
    sa.Index("ix_risk_decisions_waiting", "resolution", "expires_at"),
)

# The kill switch (services/payment/capabilities.py): capabilities switched off, per partner or "*".
capability_switches = sa.Table(
    "capability_switches",
    metadata,
    sa.Column("capability", sa.String(32), primary_key=True),
    sa.Column("scope", sa.String(64), primary_key=True),
    sa.Column("switched_off_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("operator", sa.String(128), nullable=False),
)

# Dynamic isolation (services/payment/domain/isolation.py, payment_0016): each customer's
# capabilities, when last used and whether paused or lowered; their changes' outbox, relayed
# to the partner event log by the isolation sweep's lease holder.
customer_capabilities = sa.Table(
    "customer_capabilities",
    metadata,
    sa.Column("customer_id", sa.String(64), primary_key=True),
    sa.Column("capability", sa.String(32), primary_key=True),
    sa.Column("since", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("limit_minor", sa.BigInteger, nullable=True),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("reason", sa.String(128), nullable=False),
    sa.Column("policy_version", sa.String(64), nullable=False),
    sa.Column("changed_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("changed_by", sa.String(128), nullable=False),
)
isolation_events = sa.Table(
    "isolation_events",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("customer_id", sa.String(64), nullable=False),
    sa.Column("capability", sa.String(32), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("limit_minor", sa.BigInteger, nullable=True),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("reason", sa.String(128), nullable=False),
    sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
)

idempotency_keys = idempotency_table(metadata)
# Who created and cancelled payments and every state they went through (meshlib.audit).
audit = audit_tables(metadata)
