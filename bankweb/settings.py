"""The bank web app's settings, read from the environment at start-up (never at import)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from meshlib.config import MeshSettings

DEFAULT_BANKWEB_PORT = 8080


class BankWebSettings(MeshSettings):
    """Where it listens, where identity and account are, its client credentials, its cookies."""

    model_config = SettingsConfigDict(env_prefix="OBM_", extra="ignore", frozen=True)

    host: str = "127.0.0.1"
    bankweb_port: int = Field(default=DEFAULT_BANKWEB_PORT, ge=0, le=65535)
    identity_target: str = "127.0.0.1:50051"
    account_target: str = "127.0.0.1:50052"
    # Payment's audit trail: the payments a wallet made with a consent (the dashboard).
    payment_target: str = "127.0.0.1:50053"
    # The bank web app's own internal OAuth client (scopes consents:authorise, audit:read).
    service_client_id: str = "bankweb"
    service_client_secret: SecretStr | None = None
    peer_tls_ca_file: Path | None = None
    peer_tls_cert_file: Path | None = None
    peer_tls_key_file: Path | None = None
    # Cookies carry the Secure flag (and the __Host- prefix) unless this is false: only the
    # local mesh, served over plain http on 127.0.0.1, turns it off.
    bankweb_secure_cookies: bool = True
    bankweb_session_idle_seconds: int = Field(default=900, ge=30, le=86_400)
    # Sign-in attempts allowed per username and per client address in a window (identity's
    # lock-out after five failures in a row applies on top).
    bankweb_signin_attempts: int = Field(default=10, ge=1, le=1000)
    bankweb_signin_attempts_per_address: int = Field(default=50, ge=1, le=100_000)
    bankweb_signin_window_seconds: float = Field(default=300.0, gt=0, le=86_400)
    # Sessions in Redis (shared by every replica) when set; in-process otherwise.
    redis_url: SecretStr | None = None
    log_level: str = "INFO"
    log_format: str = "json"
