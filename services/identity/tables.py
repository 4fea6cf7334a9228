"""Identity's tables (SQLAlchemy Core); the migrations create exactly these.

Secrets are never stored in clear: client secrets and passwords as Argon2id hashes,
authorization codes and refresh tokens as SHA-256 digests, TOTP seeds and private signing
keys encrypted with the deployment passphrase.
"""

import sqlalchemy as sa

from meshlib.audit import audit_tables
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
    sa.Column("activates_at", sa.DateTime(timezone=True), nullable=True),
)

idempotency_keys = idempotency_table(metadata)
# Who changed partners, consents, customers and keys (meshlib.audit).
audit = audit_tables(metadata)

partners = sa.Table(
    "partners",
    metadata,
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
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("tokens_valid_after", sa.DateTime(timezone=True), nullable=True),
    sa.Column("certificate_bound_tokens", sa.Boolean, nullable=False, server_default=sa.false()),
    # Registered redirect URIs, one per line (none contains whitespace).
    sa.Column("redirect_uris", sa.Text, nullable=False, server_default=""),
    # Added by identity_0011: the risk-sharing agreement, basis points per dispute category.
    sa.Column("fraud_share_bps", sa.Integer, nullable=False, server_default="0"),
    sa.Column("not_received_share_bps", sa.Integer, nullable=False, server_default="0"),
    sa.Column("wrong_amount_share_bps", sa.Integer, nullable=False, server_default="0"),
    # Added by identity_0015: the bank's assessment of the partner (LOW, MEDIUM, HIGH).
    sa.Column("risk_tier", sa.String(16), nullable=False, server_default="LOW"),
)

customers = sa.Table(
    "customers",
    metadata,
    sa.Column("customer_id", sa.String(64), primary_key=True),
    sa.Column("username", sa.String(64), nullable=False, unique=True),
    sa.Column("display_name", sa.String(200), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("password_hash", sa.Text, nullable=False),
    sa.Column("sealed_totp_seed", sa.LargeBinary, nullable=False),
    sa.Column("failed_attempts", sa.Integer, nullable=False),
    sa.Column("last_totp_step", sa.BigInteger, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

consents = sa.Table(
    "consents",
    metadata,
    sa.Column("consent_id", sa.String(64), primary_key=True),
    sa.Column("partner_id", sa.String(64), nullable=False, index=True),
    sa.Column("customer_id", sa.String(64), nullable=True, index=True),
    sa.Column("state", sa.String(32), nullable=False),
    sa.Column("paused", sa.Boolean, nullable=False),
    sa.Column("permissions", sa.Text, nullable=False),
    sa.Column("account_ids", sa.Text, nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("per_payment_currency", sa.String(3), nullable=True),
    sa.Column("per_payment_minor", sa.BigInteger, nullable=True),
    sa.Column("period_limit_currency", sa.String(3), nullable=True),
    sa.Column("period_limit_minor", sa.BigInteger, nullable=True),
    sa.Column("period", sa.String(8), nullable=True),
    sa.Column("reads_per_day", sa.Integer, nullable=False),
    sa.Column("code_challenge", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("authorised_at", sa.DateTime(timezone=True), nullable=True),
    # A payment mandate's control parameters (meshlib.mandates.Mandate.to_json); NULL: none.
    sa.Column("mandate", sa.Text, nullable=True),
)

authorization_codes = sa.Table(
    "authorization_codes",
    metadata,
    sa.Column("code_hash", sa.String(64), primary_key=True),
    sa.Column("consent_id", sa.String(64), nullable=False, index=True),
    sa.Column("partner_id", sa.String(64), nullable=False),
    sa.Column("customer_id", sa.String(64), nullable=False),
    sa.Column("code_challenge", sa.String(64), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
)

refresh_tokens = sa.Table(
    "refresh_tokens",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("family_id", sa.String(64), nullable=False, index=True),
    sa.Column("partner_id", sa.String(64), nullable=False),
    sa.Column("client_id", sa.String(64), nullable=False),
    sa.Column("consent_id", sa.String(64), nullable=False, index=True),
    sa.Column("customer_id", sa.String(64), nullable=False),
    sa.Column("scopes", sa.Text, nullable=False),
    sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
)

access_tokens = sa.Table(
    "access_tokens",
    metadata,
    sa.Column("jti", sa.String(64), primary_key=True),
    sa.Column("client_id", sa.String(64), nullable=False),
    sa.Column("partner_id", sa.String(64), nullable=True, index=True),
    sa.Column("consent_id", sa.String(64), nullable=True, index=True),
    sa.Column("family_id", sa.String(64), nullable=True, index=True),
    sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
)

client_assertions = sa.Table(
    "client_assertions",
    metadata,
    sa.Column("client_id", sa.String(64), primary_key=True),
    sa.Column("jti", sa.String(128), primary_key=True),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False, index=True),
)

# Pushed authorisation requests (RFC 9126): only the request_uri's digest is stored.
authorization_requests = sa.Table(
    "authorization_requests",
    metadata,
    sa.Column("request_id", sa.String(64), primary_key=True),
    sa.Column("request_uri_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("partner_id", sa.String(64), nullable=False),
    sa.Column("client_id", sa.String(64), nullable=False),
    sa.Column("consent_id", sa.String(64), nullable=False, index=True),
    sa.Column("redirect_uri", sa.String(512), nullable=False),
    sa.Column("code_challenge", sa.String(64), nullable=False),
    sa.Column("state", sa.String(256), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("opened_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("decide_before", sa.DateTime(timezone=True), nullable=True),
    sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("decision", sa.String(16), nullable=True),
)

# Decoupled authorisations (CIBA poll mode): only the auth_req_id's digest is stored.
decoupled_authorizations = sa.Table(
    "decoupled_authorizations",
    metadata,
    sa.Column("request_id", sa.String(64), primary_key=True),
    sa.Column("auth_req_id_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("partner_id", sa.String(64), nullable=False),
    sa.Column("client_id", sa.String(64), nullable=False),
    sa.Column("consent_id", sa.String(64), nullable=False, index=True),
    sa.Column("customer_id", sa.String(64), nullable=True, index=True),
    sa.Column("binding_message", sa.String(256), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("interval_seconds", sa.Integer, nullable=False),
    sa.Column("last_polled_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("decision", sa.String(16), nullable=True),
    sa.Column("tokens_issued_at", sa.DateTime(timezone=True), nullable=True),
)

# The partner event log (openbank.events.v1): one gapless sequence per partner, numbered at
# append under the partner's head row (partner_event_heads), so numbers follow commit order.
partner_events = sa.Table(
    "partner_events",
    metadata,
    sa.Column("partner_id", sa.String(64), primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True),
    sa.Column("event_id", sa.String(64), nullable=False, unique=True),
    # Unique across the bank: an event relayed twice is appended once.
    sa.Column("source_key", sa.String(128), nullable=False, unique=True),
    sa.Column("event_type", sa.String(32), nullable=False),
    sa.Column("resource", sa.String(128), nullable=False),
    sa.Column("consent_id", sa.String(64), nullable=False, server_default=""),
    sa.Column("data", sa.Text, nullable=False, server_default="{}"),
    sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_partner_events_recorded_at", "recorded_at"),
)

partner_event_heads = sa.Table(
    "partner_event_heads",
    metadata,
    sa.Column("partner_id", sa.String(64), primary_key=True),
    sa.Column("last_seq", sa.BigInteger, nullable=False),
    # Aggregated polling: the partner has handled everything up to here.
    sa.Column("acknowledged_seq", sa.BigInteger, nullable=False, server_default="0"),
    # Retention: every event up to here is gone; an older cursor must resynchronise.
    sa.Column("purged_seq", sa.BigInteger, nullable=False, server_default="0"),
)

# Which expiry events a consent has had (one "expiring" and one "expired" per expire time).
consent_expiry_notices = sa.Table(
    "consent_expiry_notices",
    metadata,
    sa.Column("consent_id", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(32), primary_key=True),
    sa.Column("expires_at", sa.DateTime(timezone=True), primary_key=True),
)

# Push delivery (openbank.events.v1.EventService.SetEventEndpoint): one endpoint per partner, its
# delivery position and status, and the lease of the replica delivering to it.
event_endpoints = sa.Table(
    "event_endpoints",
    metadata,
    sa.Column("partner_id", sa.String(64), primary_key=True),
    sa.Column("target", sa.String(255), nullable=False),
    sa.Column("insecure", sa.Boolean, nullable=False),
    sa.Column("max_attempts", sa.Integer, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("delivered_seq", sa.BigInteger, nullable=False),
    sa.Column("failed_attempts", sa.Integer, nullable=False),
    sa.Column("last_error", sa.String(64), nullable=False, server_default=""),
    sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("lease_owner", sa.String(64), nullable=True),
    sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

# Applications for new customers' accounts through a partner (OnboardingService).
applications = sa.Table(
    "applications",
    metadata,
    sa.Column("application_id", sa.String(32), primary_key=True),
    sa.Column("partner_id", sa.String(64), nullable=False, index=True),
    sa.Column("state", sa.String(16), nullable=False, index=True),
    sa.Column("reason", sa.String(32), nullable=False),
    sa.Column("applicant", sa.Text, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("consent_permissions", sa.Text, nullable=False),
    sa.Column("code_challenge", sa.String(128), nullable=False),
    sa.Column("identity_key", sa.String(64), nullable=False, index=True),
    sa.Column("document_key", sa.String(64), nullable=False, index=True),
    sa.Column("customer_id", sa.String(32), nullable=True, index=True),
    sa.Column("username", sa.String(64), nullable=True),
    sa.Column("account_id", sa.String(64), nullable=True),
    sa.Column("consent_id", sa.String(32), nullable=True),
    sa.Column("sealed_activation_code", sa.LargeBinary, nullable=True),
    sa.Column("activation_code_hash", sa.String(64), nullable=True),
    sa.Column("decided_by", sa.String(128), nullable=True),
    sa.Column("customer_code_hash", sa.String(128), nullable=True),
    sa.Column("customer_code_expires_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("activation_attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("activation_locked_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)
