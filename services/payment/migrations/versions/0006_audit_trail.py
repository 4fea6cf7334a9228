"""Payment: the audit trail (meshlib.audit): payments created, cancelled and every state change.

Revision ID: payment_0006
"""

from alembic import op

from meshlib.audit import create_audit_tables, drop_audit_tables

revision = "payment_0006"
down_revision = "payment_0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_audit_tables(op)


def downgrade() -> None:
    drop_audit_tables(op)
