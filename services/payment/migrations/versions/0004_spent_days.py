"""Payment: running sums per consent and per partner, by currency and UTC day.

The consent period limit and the partner daily limit used to sum every counted payment of the
period on each CreatePayment (linear in the day's payments); they now sum day rows.

Revision ID: payment_0004
"""

import sqlalchemy as sa
from alembic import op

revision = "payment_0004"
down_revision = "payment_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    spent_days = op.create_table(
        "payment_spent_days",
        sa.Column("scope", sa.String(16), primary_key=True),
        sa.Column("scope_id", sa.String(64), primary_key=True),
        sa.Column("currency", sa.String(3), primary_key=True),
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
    )
    # The sums of the payments already there (counted: neither rejected nor cancelled), by UTC day.
    payments = sa.table(
        "payments",
        sa.column("consent_id"),
        sa.column("partner_id"),
        sa.column("currency"),
        sa.column("amount_minor"),
        sa.column("state"),
        sa.column("created_at"),
    )
    if op.get_bind().dialect.name == "sqlite":
        day = sa.func.date(payments.c.created_at)  # stored as UTC text, 'YYYY-MM-DD HH:MM:SS...'
    else:
        day = sa.cast(sa.func.timezone("UTC", payments.c.created_at), sa.Date)
    for scope in ("consent_id", "partner_id"):
        op.execute(
            spent_days.insert().from_select(
                ["scope", "scope_id", "currency", "day", "amount_minor"],
                sa.select(
                    sa.literal(scope), payments.c[scope], payments.c.currency, day, sa.func.sum(payments.c.amount_minor)
                )
                .where(payments.c.state.not_in(["REJECTED", "CANCELLED"]))
                .group_by(payments.c[scope], payments.c.currency, day),
            )
        )


def downgrade() -> None:
    op.drop_table("payment_spent_days")
