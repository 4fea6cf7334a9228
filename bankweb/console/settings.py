"""The operator console's settings, read from the environment at start-up (never at import)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from meshlib.config import MeshSettings

DEFAULT_CONSOLE_PORT = 8090


class ConsoleSettings(MeshSettings):
    """Where it listens, where the services are, its client credentials, operators, cookies."""

    model_config = SettingsConfigDict(env_prefix="OBM_", extra="ignore", frozen=True)

    host: str = "127.0.0.1"
    console_port: int = Field(default=DEFAULT_CONSOLE_PORT, ge=0, le=65535)
    identity_target: str = "127.0.0.1:50051"
    account_target: str = "127.0.0.1:50052"
    payment_target: str = "127.0.0.1:50053"
    settlement_target: str = "127.0.0.1:50054"
    # The console's own internal OAuth client (see grpc_mesh.CONSOLE_SCOPES).
    service_client_id: str = "console"
    service_client_secret: SecretStr | None = None
    service_client_secret_file: Path | None = None
    peer_tls_ca_file: Path | None = None
    peer_tls_cert_file: Path | None = None
    peer_tls_key_file: Path | None = None
    # The operators (operators.py): a JSON file, read once at start.
    console_operators_file: Path = Path("data/console-operators.json")
    # The console's own audit trail (audit_store.py), one chain every replica shares: PostgreSQL
    # (OBM_DATABASE_URL or _FILE, migrated by `openbank-mesh migrate console`), else a SQLite
    # file in data_dir (the local mesh). run_migrations=false: only check the schema.
    database_url: SecretStr | None = None
    data_dir: Path = Path("data")
    run_migrations: bool = True
    console_secure_cookies: bool = True
    console_session_idle_seconds: int = Field(default=900, ge=30, le=86_400)
    console_signin_attempts: int = Field(default=10, ge=1, le=1000)
    console_signin_attempts_per_address: int = Field(default=50, ge=1, le=100_000)
    console_signin_window_seconds: float = Field(default=300.0, gt=0, le=86_400)
    redis_url: SecretStr | None = None
    log_level: str = "INFO"
    log_format: str = "json"

    def audit_database_url(self) -> str:
        """Where the audit trail lives."""
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite+aiosqlite:///{(self.data_dir / 'console.db').resolve()}"

    def client_secret(self) -> str | None:
        """The client secret, from its file (Kubernetes mounts it) or the environment."""
        if self.service_client_secret_file is not None:
            return self.service_client_secret_file.read_text().strip()
        return self.service_client_secret.get_secret_value() if self.service_client_secret else None
