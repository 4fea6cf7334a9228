"""Typed configuration read from the environment once, at start-up.

Every process builds its settings object in its ``main`` (never at import time) and passes
it down explicitly. Variables share the ``OBM_`` prefix; a few standard names
(``OTEL_EXPORTER_OTLP_ENDPOINT``, ``REDIS_URL``, ``DATABASE_URL``) are honoured as well.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, TypeVar

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

LogFormat = Literal["json", "console"]
SettingsT = TypeVar("SettingsT", bound=BaseSettings)


class ServerSettings(BaseSettings):
    """Settings shared by every gRPC process (the four services and the gateway)."""

    model_config = SettingsConfigDict(env_prefix="OBM_", extra="ignore", frozen=True)

    service_name: str = "openbank"
    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535)
    # How long in-flight calls may run after SIGTERM before they are cancelled.
    shutdown_grace_seconds: float = Field(default=5.0, gt=0, le=120)
    max_message_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    max_concurrent_streams: int = Field(default=256, ge=1)
    # The most metadata (headers) a caller may send; bigger calls are refused by gRPC itself.
    max_metadata_bytes: int = Field(default=16 * 1024, ge=1024)
    keepalive_time_ms: int = Field(default=30_000, ge=1000)
    keepalive_timeout_ms: int = Field(default=10_000, ge=100)
    log_level: str = "INFO"
    log_format: LogFormat = "json"
    # Optional TLS for the listening port; mutual TLS when a client CA is given too.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None
    otlp_endpoint: str | None = Field(
        default=None, validation_alias=AliasChoices("OBM_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
    )
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    # Plaintext port serving only grpc.health.v1, for kubelet probes when the main port is TLS.
    health_port: int | None = Field(default=None, ge=0, le=65535)


class StorageSettings(BaseSettings):
    """Where a service keeps its data: a SQLite file by default, PostgreSQL by URL."""

    model_config = SettingsConfigDict(env_prefix="OBM_", extra="ignore", frozen=True)

    database_url: str | None = Field(default=None, validation_alias=AliasChoices("OBM_DATABASE_URL", "DATABASE_URL"))
    data_dir: Path = Path("data")
    db_pool_size: int = Field(default=10, ge=1, le=200)
    run_migrations: bool = True


def load_settings(settings_class: type[SettingsT], **overrides: object) -> SettingsT:
    """Build a settings object from the environment, with explicit overrides winning."""
    return settings_class(**overrides)
