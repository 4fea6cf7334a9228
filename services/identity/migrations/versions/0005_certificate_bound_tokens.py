"""Identity: whether a partner's access tokens are bound to its TLS client certificate (RFC 8705).

Partners registered with a certificate before this revision get bound tokens, as new ones
do by default: they already needed that certificate for every token, so nothing they do
stops working, and a token that leaks is useless without it.

Revision ID: identity_0005
"""

import sqlalchemy as sa
from alembic import op

revision = "identity_0005"
down_revision = "identity_0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("partners") as batch:
        batch.add_column(sa.Column("certificate_bound_tokens", sa.Boolean, nullable=False, server_default=sa.false()))
    partners = sa.table(
        "partners",
        sa.column("certificate_bound_tokens", sa.Boolean),
        sa.column("tls_client_certificate_sha256", sa.String),
    )
    op.execute(
        partners.update()
        .where(partners.c.tls_client_certificate_sha256.is_not(None))
        .values(certificate_bound_tokens=sa.true())
    )


def downgrade() -> None:
    with op.batch_alter_table("partners") as batch:
        batch.drop_column("certificate_bound_tokens")
