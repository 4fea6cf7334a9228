"""The simulator's settings, read once at start-up from ``OBM_*`` like every service's."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from meshlib.app import ServiceSettings

DEFAULT_PORT = 50060
DEFAULT_RULES_FILE = Path(__file__).parent / "rules.yaml"


class SchemeSettings(ServiceSettings):
    """The shared service settings (port, store, TLS, logs, identity_target for the JWKS) plus
    the simulator's own."""

    model_config = SettingsConfigDict(env_prefix="OBM_", extra="ignore", frozen=True)

    # OBM_SCHEME_RULES_FILE: how "the other bank" answers (see schemesim/README.md).
    scheme_rules_file: Path = DEFAULT_RULES_FILE
    # OBM_SCHEME_JWKS_FILE: trust the keys in this JWKS file instead of fetching identity's
    # (a scheme registers its participants' keys; tests use a TestIssuer's key set).
    scheme_jwks_file: Path | None = None
    # How often due returns enter the feed (ListReturns also collects them before it reads).
    scheme_returns_interval_seconds: float = Field(default=1.0, gt=0, le=3600)
    # How long a call the rules never answer is held open at most (the caller's deadline
    # normally ends it first).
    scheme_silence_seconds: float = Field(default=3600.0, gt=0)
