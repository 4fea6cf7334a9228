"""Identity: payment mandates (variable recurring payments, sweeping): a consent's mandate,
its control parameters as JSON (fixed when the consent is created, never changed).

Revision ID: identity_0010
"""

import sqlalchemy as sa
from alembic import op

revision = "identity_0010"
down_revision = "identity_0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("consents") as batch:
        batch.add_column(sa.Column("mandate", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("consents") as batch:
        batch.drop_column("mandate")
