"""Identity: the audit trail (meshlib.audit): who changed partners, consents, customers and keys.

Revision ID: identity_0006
"""

from alembic import op

from meshlib.audit import create_audit_tables, drop_audit_tables

revision = "identity_0006"
down_revision = "identity_0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_audit_tables(op)


def downgrade() -> None:
    drop_audit_tables(op)
