"""Typed configuration read from the environment once, at start-up.

Every process builds its settings object in its ``main`` (never at import time) and passes
it down explicitly. Variables share the ``OBM_`` prefix; a few standard names
(``OTEL_EXPORTER_OTLP_ENDPOINT``, ``REDIS_URL``, ``DATABASE_URL``) are honoured as well.

Every setting can also come from a file: ``<VARIABLE>_FILE`` names it (for example
``OBM_DATABASE_URL_FILE=/run/secrets/openbank/identity-database-url``, a mounted Secret), so
database URLs and client secrets need not be environment variables. The file is read once,
when the settings are built; a trailing newline is dropped; setting both the variable and
its ``_FILE`` is refused. A setting that has a ``<name>_file`` setting of its own (identity's
``OBM_INTERNAL_CLIENTS_FILE``, a YAML path) keeps that meaning.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import AliasChoices, Field
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

LogFormat = Literal["json", "console"]
SettingsT = TypeVar("SettingsT", bound=BaseSettings)


FILE_SUFFIX = "_FILE"


def variable_names(settings_class: type[BaseSettings], name: str, field: FieldInfo) -> list[tuple[str, str]]:
    """(variable, key the value is validated under) of each environment variable a field is
    read from: its aliases, else prefix + name."""
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        names = [choice for choice in alias.choices if isinstance(choice, str)]
    elif isinstance(alias, str):
        names = [alias]
    else:
        return [(f"{settings_class.model_config.get('env_prefix', '')}{name}".upper(), name)]
    return [(variable.upper(), variable) for variable in names]


class FileVariablesSource(PydanticBaseSettingsSource):
    """Settings from files named by ``<VARIABLE>_FILE`` (mounted Secrets), read once."""

    def __init__(self, settings_class: type[BaseSettings]) -> None:
        super().__init__(settings_class)
        environment = {key.upper(): value for key, value in os.environ.items()}
        self._values: dict[str, Any] = {}
        for name, field in settings_class.model_fields.items():
            if f"{name}_file" in settings_class.model_fields:
                continue  # the setting has a file setting of its own (its _FILE variable names a path)
            for variable, key in variable_names(settings_class, name, field):
                path = environment.get(variable + FILE_SUFFIX)
                if not path:
                    continue
                if variable in environment:
                    raise ValueError(f"both {variable} and {variable}{FILE_SUFFIX} are set: keep one")
                try:
                    text = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
                except OSError as error:
                    raise ValueError(f"{variable}{FILE_SUFFIX}: cannot read {path}: {error.strerror}") from None
                complex_value = self.field_is_complex(field)
                self._values[key] = self.decode_complex_value(name, field, text) if complex_value else text
                break

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        """Unused: :meth:`__call__` answers for every field at once."""
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._values)


class MeshSettings(BaseSettings):
    """Settings read from the environment, where any variable may be given as a file too."""

    model_config = SettingsConfigDict(env_prefix="OBM_", extra="ignore", frozen=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Explicit values, then variables, then files named by ``_FILE`` variables."""
        return init_settings, env_settings, FileVariablesSource(settings_cls), dotenv_settings, file_secret_settings


class ServerSettings(MeshSettings):
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


class StorageSettings(MeshSettings):
    """Where a service keeps its data: a SQLite file by default, PostgreSQL by URL."""

    model_config = SettingsConfigDict(env_prefix="OBM_", extra="ignore", frozen=True)

    database_url: str | None = Field(default=None, validation_alias=AliasChoices("OBM_DATABASE_URL", "DATABASE_URL"))
    data_dir: Path = Path("data")
    db_pool_size: int = Field(default=10, ge=1, le=200)
    run_migrations: bool = True


class OutboxRelaySettings(MeshSettings):
    """The OBM_EVENT_* settings of every service with an outbox relayed to identity's partner
    event log (payment's events, account's movements and credit events; meshlib.outbox)."""

    model_config = SettingsConfigDict(env_prefix="OBM_", extra="ignore", frozen=True)

    # One replica relays the outbox to identity (needs the events:write scope); false: rows wait.
    event_relay: bool = True
    # How often the relay (and payment's tail) looks for new rows.
    event_tail_seconds: float = Field(default=0.1, gt=0)
    # A missing outbox number may be a transaction still committing: waited for this long.
    event_relay_gap_seconds: float = Field(default=3.0, ge=0)
    event_relay_lease_seconds: float = Field(default=10.0, gt=0)
    # Relayed outbox rows older than this are purged (hourly).
    event_retention_days: float = Field(default=30.0, gt=0)


def load_settings(settings_class: type[SettingsT], **overrides: object) -> SettingsT:
    """Build a settings object from the environment, with explicit overrides winning."""
    return settings_class(**overrides)
