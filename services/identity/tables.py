"""Identity's tables (SQLAlchemy Core); the migrations create exactly these."""

import sqlalchemy as sa

from meshlib.idempotency import idempotency_table

metadata = sa.MetaData()

signing_keys = sa.Table(
    "signing_keys",
    metadata,
    sa.Column("kid", sa.String(64), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("public_jwk", sa.Text, nullable=False),
    sa.Column("encrypted_private_pem", sa.LargeBinary, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("retire_after", sa.DateTime(timezone=True), nullable=True),
)

idempotency_keys = idempotency_table(metadata)
