"""Account: idempotency keys led by request_id on PostgreSQL (meshlib.idempotency.lead_key_with_request_id).

Revision ID: account_0003
"""

from alembic import op

from meshlib.idempotency import lead_key_with_request_id

revision = "account_0003"
down_revision = "account_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    lead_key_with_request_id(op)


def downgrade() -> None:
    lead_key_with_request_id(op, undo=True)
