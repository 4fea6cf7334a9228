"""Payment: idempotency keys led by request_id on PostgreSQL (meshlib.idempotency.lead_key_with_request_id).

Revision ID: payment_0005
"""

from alembic import op

from meshlib.idempotency import lead_key_with_request_id

revision = "payment_0005"
down_revision = "payment_0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    lead_key_with_request_id(op)


def downgrade() -> None:
    lead_key_with_request_id(op, undo=True)
