"""A sample service schema with an audit trail, used by the audit tests."""

import sqlalchemy as sa
from alembic import op

from meshlib.audit import create_audit_tables, drop_audit_tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("notes", sa.Column("id", sa.String(64), primary_key=True), sa.Column("text", sa.Text))
    create_audit_tables(op)


def downgrade() -> None:
    drop_audit_tables(op)
    op.drop_table("notes")
