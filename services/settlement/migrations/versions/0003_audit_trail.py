"""Settlement: the audit trail (meshlib.audit): participants, caps, windows and positions.

Revision ID: settlement_0003
"""

from alembic import op

from meshlib.audit import create_audit_tables, drop_audit_tables

revision = "settlement_0003"
down_revision = "settlement_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_audit_tables(op)


def downgrade() -> None:
    drop_audit_tables(op)
