"""A sample service schema used by the storage tests."""

import sqlalchemy as sa
from alembic import op

from meshlib.idempotency import create_idempotency_table

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notes",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("counter", sa.BigInteger, nullable=False),
    )
    create_idempotency_table(op)


def downgrade() -> None:
    op.drop_table("idempotency_keys")
    op.drop_table("notes")
