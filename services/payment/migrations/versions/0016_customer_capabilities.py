"""Payment: dynamic isolation, each customer's capabilities (last use, paused or lowered, why)
and their changes' outbox; customers' daily sums beside the consents' and partners'.

Revision ID: payment_0016
"""

import sqlalchemy as sa
from alembic import op

revision = "payment_0016"
down_revision = "payment_0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "customer_capabilities",
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
    op.create_table(
        "isolation_events",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("capability", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("limit_minor", sa.BigInteger, nullable=True),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("reason", sa.String(128), nullable=False),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
    )
    # The customers' daily sums (scope customer_id) of the payments already there, as 0004 did
    # for consents and partners: the lowered daily limit and the low-use check read them.
    spent_days = sa.table(
        "payment_spent_days",
        sa.column("scope"),
        sa.column("scope_id"),
        sa.column("currency"),
        sa.column("day"),
        sa.column("amount_minor"),
    )
    payments = sa.table(
        "payments",
        sa.column("customer_id"),
        sa.column("currency"),
        sa.column("amount_minor"),
        sa.column("state"),
        sa.column("created_at"),
        sa.column("original_payment_id"),
    )
    if op.get_bind().dialect.name == "sqlite":
        day = sa.func.date(payments.c.created_at)
    else:
        day = sa.cast(sa.func.timezone("UTC", payments.c.created_at), sa.Date)
    op.execute(
        spent_days.insert().from_select(
            ["scope", "scope_id", "currency", "day", "amount_minor"],
            sa.select(
                sa.literal("customer_id"),
                payments.c.customer_id,
                payments.c.currency,
                day,
                sa.func.sum(payments.c.amount_minor),
            )
            .where(
                payments.c.state.not_in(["REJECTED", "CANCELLED"]),
                payments.c.customer_id != "",
                payments.c.original_payment_id == "",
            )
            .group_by(payments.c.customer_id, payments.c.currency, day),
        )
    )


def downgrade() -> None:
    op.execute("DELETE FROM payment_spent_days WHERE scope = 'customer_id'")
    op.drop_table("isolation_events")
    op.drop_table("customer_capabilities")
