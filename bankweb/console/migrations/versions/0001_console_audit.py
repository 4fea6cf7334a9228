"""Console: the operators' audit trail (meshlib.audit), one chain shared by every replica.

Revision ID: console_0001
"""

from alembic import op

from meshlib.audit import create_audit_tables, drop_audit_tables

revision = "console_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_audit_tables(op)


def downgrade() -> None:
    drop_audit_tables(op)
