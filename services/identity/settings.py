"""Identity settings, read once at start-up."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from meshlib.app import ServiceSettings


class IdentitySettings(ServiceSettings):
    """Signing-key protection and token lifetimes."""

    model_config = SettingsConfigDict(env_prefix="OBM_", extra="ignore", frozen=True)

    # Private signing keys are stored encrypted with this passphrase (a mounted secret in
    # Kubernetes). The default is for the local mesh only.
    signing_key_passphrase: SecretStr = SecretStr("local-development-only")
    signing_key_passphrase_file: Path | None = None
    access_token_ttl_seconds: int = Field(default=300, ge=30, le=3600)

    def passphrase(self) -> bytes:
        """The key-encryption passphrase, from the mounted file when one is configured."""
        if self.signing_key_passphrase_file is not None:
            return self.signing_key_passphrase_file.read_bytes().strip()
        return self.signing_key_passphrase.get_secret_value().encode()
