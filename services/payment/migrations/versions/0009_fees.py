"""Payment: the fee of a payment (fixed at creation) and where it goes.

Revision ID: payment_0009
"""

import sqlalchemy as sa
from alembic import op

revision = "payment_0009"
down_revision = "payment_0008"
branch_labels = None
depends_on = None

_COLUMNS = (
    "fee_debit_account_id",
    "fee_credit_account_id",
    "fee_payer_participant_id",
    "fee_payee_participant_id",
)


def upgrade() -> None:
    with op.batch_alter_table("payments") as batch:
        batch.add_column(sa.Column("fee_minor", sa.BigInteger, nullable=False, server_default="0"))
        for name in _COLUMNS:
            batch.add_column(sa.Column(name, sa.String(64), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("payments") as batch:
        for name in reversed(_COLUMNS):
            batch.drop_column(name)
        batch.drop_column("fee_minor")
