"""Identity: partners, customers, consents, authorization codes, refresh and access tokens.

Revision ID: identity_0002
"""

import sqlalchemy as sa
from alembic import op

revision = "identity_0002"
down_revision = "identity_0001"
branch_labels = None
depends_on = None


def _ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "partners",
        sa.Column("partner_id", sa.String(64), primary_key=True),
        sa.Column("client_id", sa.String(64), nullable=False, unique=True),
        sa.Column("display_name", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("allowed_scopes", sa.Text, nullable=False),
        sa.Column("rate_limit_tier", sa.String(64), nullable=False),
        sa.Column("per_payment_currency", sa.String(3), nullable=True),
        sa.Column("per_payment_minor", sa.BigInteger, nullable=True),
        sa.Column("daily_currency", sa.String(3), nullable=True),
        sa.Column("daily_minor", sa.BigInteger, nullable=True),
        sa.Column("auth_method", sa.String(32), nullable=False),
        sa.Column("public_key_pem", sa.Text, nullable=True),
        sa.Column("client_secret_hash", sa.Text, nullable=True),
        sa.Column("tls_client_certificate_sha256", sa.String(64), nullable=True),
        _ts("created_at"),
        _ts("updated_at"),
        _ts("tokens_valid_after", nullable=True),
    )
    op.create_table(
        "customers",
        sa.Column("customer_id", sa.String(64), primary_key=True),
        sa.Column("username", sa.String(64), nullable=False, unique=True),
        sa.Column("display_name", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.Text, nullable=False),
        sa.Column("sealed_totp_seed", sa.LargeBinary, nullable=False),
        sa.Column("failed_attempts", sa.Integer, nullable=False),
        sa.Column("last_totp_step", sa.BigInteger, nullable=True),
        _ts("created_at"),
        _ts("updated_at"),
    )
    op.create_table(
        "consents",
        sa.Column("consent_id", sa.String(64), primary_key=True),
        sa.Column("partner_id", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=True),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("paused", sa.Boolean, nullable=False),
        sa.Column("permissions", sa.Text, nullable=False),
        sa.Column("account_ids", sa.Text, nullable=False),
        _ts("expires_at"),
        sa.Column("per_payment_currency", sa.String(3), nullable=True),
        sa.Column("per_payment_minor", sa.BigInteger, nullable=True),
        sa.Column("period_limit_currency", sa.String(3), nullable=True),
        sa.Column("period_limit_minor", sa.BigInteger, nullable=True),
        sa.Column("period", sa.String(8), nullable=True),
        sa.Column("reads_per_day", sa.Integer, nullable=False),
        sa.Column("code_challenge", sa.String(64), nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
        _ts("authorised_at", nullable=True),
    )
    op.create_index("ix_consents_partner_id", "consents", ["partner_id"])
    op.create_index("ix_consents_customer_id", "consents", ["customer_id"])
    op.create_table(
        "authorization_codes",
        sa.Column("code_hash", sa.String(64), primary_key=True),
        sa.Column("consent_id", sa.String(64), nullable=False),
        sa.Column("partner_id", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("code_challenge", sa.String(64), nullable=False),
        _ts("expires_at"),
        _ts("used_at", nullable=True),
    )
    op.create_index("ix_authorization_codes_consent_id", "authorization_codes", ["consent_id"])
    op.create_table(
        "refresh_tokens",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("family_id", sa.String(64), nullable=False),
        sa.Column("partner_id", sa.String(64), nullable=False),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("consent_id", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("scopes", sa.Text, nullable=False),
        _ts("issued_at"),
        _ts("expires_at"),
        _ts("used_at", nullable=True),
        _ts("revoked_at", nullable=True),
    )
    op.create_index("ix_refresh_tokens_family_id", "refresh_tokens", ["family_id"])
    op.create_index("ix_refresh_tokens_consent_id", "refresh_tokens", ["consent_id"])
    op.create_table(
        "access_tokens",
        sa.Column("jti", sa.String(64), primary_key=True),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("partner_id", sa.String(64), nullable=True),
        sa.Column("consent_id", sa.String(64), nullable=True),
        sa.Column("family_id", sa.String(64), nullable=True),
        _ts("issued_at"),
        _ts("expires_at"),
        _ts("revoked_at", nullable=True),
    )
    op.create_index("ix_access_tokens_partner_id", "access_tokens", ["partner_id"])
    op.create_index("ix_access_tokens_consent_id", "access_tokens", ["consent_id"])
    op.create_index("ix_access_tokens_family_id", "access_tokens", ["family_id"])
    op.create_index("ix_access_tokens_expires_at", "access_tokens", ["expires_at"])
    op.create_table(
        "client_assertions",
        sa.Column("client_id", sa.String(64), primary_key=True),
        sa.Column("jti", sa.String(128), primary_key=True),
        _ts("expires_at"),
    )
    op.create_index("ix_client_assertions_expires_at", "client_assertions", ["expires_at"])


def downgrade() -> None:
    for table in (
        "client_assertions",
        "access_tokens",
        "refresh_tokens",
        "authorization_codes",
        "consents",
        "customers",
        "partners",
    ):
        op.drop_table(table)
