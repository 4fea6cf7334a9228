"""Identity settings, read once at start-up."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from meshlib.app import ServiceSettings


class IdentitySettings(ServiceSettings):
    """Signing-key protection, token lifetimes, internal clients and the invalidation bus."""

    model_config = SettingsConfigDict(env_prefix="OBM_", extra="ignore", frozen=True, populate_by_name=True)

    # Private signing keys and TOTP seeds are stored encrypted with this passphrase (a
    # mounted secret in Kubernetes). The default is for the local mesh only.
    signing_key_passphrase: SecretStr = SecretStr("local-development-only")
    signing_key_passphrase_file: Path | None = None
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
    # Argon2id cost (RFC 9106 "second recommended option" by default; tests lower it).
    argon2_time_cost: int = Field(default=3, ge=1)
    argon2_memory_kib: int = Field(default=65536, ge=8)
    argon2_parallelism: int = Field(default=4, ge=1)

    def passphrase(self) -> bytes:
        """The key-encryption passphrase, from the mounted file when one is configured."""
        if self.signing_key_passphrase_file is not None:
            return self.signing_key_passphrase_file.read_bytes().strip()
        return self.signing_key_passphrase.get_secret_value().encode()
