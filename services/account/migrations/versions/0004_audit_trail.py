"""Account: the audit trail (meshlib.audit): who opened, froze or closed accounts and moved money.

Revision ID: account_0004
"""

from alembic import op

from meshlib.audit import create_audit_tables, drop_audit_tables

revision = "account_0004"
down_revision = "account_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_audit_tables(op)


def downgrade() -> None:
    drop_audit_tables(op)
