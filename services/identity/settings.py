"""Identity settings, read once at start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from meshlib.app import InsecureSettings, ServiceSettings
from services.identity.notifier import MailRelayRefused, SmtpRelay

DEVELOPMENT_PASSPHRASE = "local-development-only"
# Passphrases that ship in this repository (the default, the dev overlay's); never in production.
KNOWN_DEVELOPMENT_PASSPHRASES = frozenset({DEVELOPMENT_PASSPHRASE, "openbank-dev-only-passphrase"})
MIN_PASSPHRASE_BYTES = 16


class IdentitySettings(ServiceSettings):
    """Signing-key protection, token lifetimes, internal clients and the invalidation bus."""

    model_config = SettingsConfigDict(env_prefix="OBM_", extra="ignore", frozen=True, populate_by_name=True)

    # Private signing keys and TOTP seeds are stored encrypted with this passphrase (a
    # mounted secret in Kubernetes). The default is for the local mesh only: identity
    # refuses to start with it (or any known development secret) unless allow_dev_secrets.
    signing_key_passphrase: SecretStr = SecretStr(DEVELOPMENT_PASSPHRASE)
    signing_key_passphrase_file: Path | None = None
    # A sandbox (the local mesh; a partners' test deployment): CreateCustomer may set a test
    # customer's TOTP secret, so test customers can be published. Never in production.
    sandbox_customer_secrets: bool = False
    # A rotated-in key is published this long before it signs: more than any verifier's
    # OBM_JWKS_MAX_AGE_SECONDS plus identity's own one-second JWKS cache.
    signing_key_publish_lead_seconds: float = Field(default=60.0, ge=0, le=3600)
    access_token_ttl_seconds: int = Field(default=300, ge=30, le=3600)
    refresh_token_ttl_seconds: int = Field(default=30 * 24 * 3600, ge=60)
    # Rate-limit tiers a partner may be given (keys of the rate-limit configuration).
    rate_limit_tiers: tuple[str, ...] = ("bronze", "silver", "gold")
    # The mesh's own OAuth clients: a YAML/JSON file and/or inline JSON (see internal_clients.py).
    internal_clients_file: Path | None = None
    internal_clients: SecretStr | None = None
    # Check with the account service that the accounts a customer picks are its own.
    verify_consent_accounts: bool = True
    # Invalidations ("consent", "partner", "token") go over Redis pub/sub when redis_url is set.
    revocation_cache_ttl_seconds: float = Field(default=5.0, gt=0, le=60)
    # Failed client authentications per client_id (per replica): this many within the
    # window lock the client out, 1 s at first, doubling up to the maximum.
    client_auth_max_failures: int = Field(default=10, ge=1)
    client_auth_failure_window_seconds: float = Field(default=60.0, gt=0)
    client_auth_max_lockout_seconds: float = Field(default=300.0, gt=0)
    # Argon2id cost of customer passwords (RFC 9106 "second recommended option" by default;
    # tests lower it). Client secrets use a keyed hash (domain.secrets.ClientSecretHasher).
    argon2_time_cost: int = Field(default=3, ge=1)
    argon2_memory_kib: int = Field(default=65536, ge=8)
    argon2_parallelism: int = Field(default=4, ge=1)
    # The partner event log (openbank.events.v1): events older than this are purged, and a
    # cursor before them must resynchronise (CURSOR_EXPIRED).
    event_retention_days: float = Field(default=30.0, gt=0)
    # CONSENT_EXPIRING_SOON this long before a consent's expiry.
    event_expiry_notice_days: float = Field(default=7.0, ge=0)
    # Expiry events and retention run this often on every replica.
    event_housekeeping_seconds: float = Field(default=60.0, gt=0)
    # Streams are woken by the fan-out (the bus, and one sweep query per replica this often);
    # false wires the plain per-stream polling every event_poll_seconds instead.
    event_fanout: bool = True
    event_sweep_seconds: float = Field(default=2.0, gt=0)
    event_poll_seconds: float = Field(default=0.1, gt=0)
    # Push delivery to partners' registered endpoints (SetEventEndpoint): how often each replica
    # looks for due endpoints, the first retry's delay (doubling up to the maximum), and whether
    # a partner may register a plaintext endpoint (local sandboxes only).
    event_push: bool = True
    event_push_seconds: float = Field(default=0.5, gt=0)
    event_push_backoff_seconds: float = Field(default=1.0, gt=0)
    event_push_max_backoff_seconds: float = Field(default=300.0, gt=0)
    event_push_allow_insecure: bool = False
    # The bus channel of "a partner's log grew" (apart from the invalidations every process reads).
    event_channel: str = "openbank:partner-events"
    # Streams one HTTP/2 connection may carry. A gateway replica forwards every partner's
    # StreamEvents over its one connection to identity (and asks identity about tokens over it),
    # so the common 256 would cap the streams a gateway holds at 256 and, past them, queue its
    # token introspections behind them (the calls fail "cannot confirm the token's status").
    max_concurrent_streams: int = Field(default=8192, ge=1)
    # Account opening through partners (OnboardingService): the bank's rules (minimum age, terms
    # versions, document rules, currencies) and its sanctions / watch list, each read once at
    # start; the bank web app's address for the customers' one-time activation pages.
    onboarding_rules_file: Path = Path(__file__).parent / "onboarding_rules.yaml"
    screening_list_file: Path = Path(__file__).parent / "screening_list.csv"
    bank_web_url: str = "http://127.0.0.1:8443"
    # The local and test sender of customer messages (the new customer's activation code): one
    # JSON line per message appended to this file (``openbank-mesh up`` sets it in the data
    # directory). Production wires a real sender (notifier.py); unset, nothing is delivered.
    customer_notifications_file: Path | None = None
    # Production's sender of customer messages: the bank's mail relay (SMTP, STARTTLS by default,
    # its certificate checked against the system's CAs or this CA file). The password is a mounted
    # file. A plaintext relay is accepted only on this host (a sidecar) or in a development mesh.
    customer_notifications_smtp_host: str | None = None
    customer_notifications_smtp_port: int = Field(default=587, ge=1, le=65535)
    customer_notifications_smtp_security: Literal["starttls", "tls", "none"] = "starttls"
    customer_notifications_smtp_username: str | None = None
    customer_notifications_smtp_password_file: Path | None = None
    customer_notifications_smtp_ca_file: Path | None = None
    customer_notifications_from: str = ""
    # Crash tests only: identity exits abruptly at this step of account opening
    # (onboarding_service.FAILPOINTS; an unknown name stops the start).
    onboarding_failpoint: str | None = None

    @model_validator(mode="after")
    def _lead_outlasts_verifier_caches(self) -> IdentitySettings:
        if 0 < self.signing_key_publish_lead_seconds <= self.jwks_max_age_seconds + 1:
            raise ValueError(
                "signing_key_publish_lead_seconds must exceed jwks_max_age_seconds + 1 "
                "(or be 0 for an emergency rotation that signs at once)"
            )
        return self

    def mail_relay(self) -> SmtpRelay | None:
        """The configured mail relay, checked (a refusal stops the start), or None."""
        if not self.customer_notifications_smtp_host:
            return None
        relay = SmtpRelay(
            host=self.customer_notifications_smtp_host,
            port=self.customer_notifications_smtp_port,
            sender=self.customer_notifications_from,
            security=self.customer_notifications_smtp_security,
            username=self.customer_notifications_smtp_username,
            password_file=self.customer_notifications_smtp_password_file,
            ca_file=self.customer_notifications_smtp_ca_file,
        )
        try:
            relay.check(allow_plaintext_anywhere=self.allow_dev_secrets)
        except MailRelayRefused as refused:
            raise InsecureSettings(str(refused)) from None
        return relay

    def passphrase(self) -> bytes:
        """The key-encryption passphrase, from the mounted file when one is configured."""
        if self.signing_key_passphrase_file is not None:
            return self.signing_key_passphrase_file.read_bytes().strip()
        return self.signing_key_passphrase.get_secret_value().encode()


def refuse_development_secrets(settings: IdentitySettings) -> None:
    """Start-up check: outside the local mesh (``allow_dev_secrets``) the key-encryption
    passphrase must be configured, not one that ships in this repository, and long enough."""
    if settings.allow_dev_secrets:
        return
    passphrase = settings.passphrase()
    if passphrase.decode(errors="replace") in KNOWN_DEVELOPMENT_PASSPHRASES:
        raise InsecureSettings(
            "identity refuses the development signing-key passphrase: set OBM_SIGNING_KEY_PASSPHRASE_FILE "
            "(a mounted secret), or OBM_ALLOW_DEV_SECRETS=true for a local mesh only"
        )
    if len(passphrase) < MIN_PASSPHRASE_BYTES:
        raise InsecureSettings(f"the signing-key passphrase must be at least {MIN_PASSPHRASE_BYTES} bytes")
