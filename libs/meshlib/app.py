"""The one way a service process starts.

``run_service(spec)`` reads settings from the environment, sets up logging and tracing,
opens the database and migrates it, lets the service wire its layers (``spec.wire``),
serves with health/reflection/interceptors, and stops gracefully on SIGTERM. Tests call
``start_service(spec, settings)`` to get the same process in-memory on port 0.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import grpc
from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from meshlib.audit.service import audit_keeper, audit_registration
from meshlib.audit.store import AuditStore, AuditTables
from meshlib.auth.certificates import DEFAULT_CERTIFICATE_FORWARDERS, CertificateSource, ForwardedCertificate
from meshlib.auth.interceptor import AuthInterceptor
from meshlib.auth.jwks_client import identity_jwks_fetcher
from meshlib.auth.verifier import JwksCache, JwtVerifier, VerifierSettings
from meshlib.clients import ChannelSettings, open_channel
from meshlib.config import ServerSettings, StorageSettings
from meshlib.logs import configure_logging
from meshlib.policy import contract_policies
from meshlib.server import Lifecycle, MeshServer, ServiceRegistration
from meshlib.storage.database import Database, database_url_for
from meshlib.storage.migrations import require_migrated, upgrade_to_head
from meshlib.telemetry import configure_tracing

log = logging.getLogger("meshlib.app")

DEFAULT_PORTS = {"gateway": 50050, "identity": 50051, "account": 50052, "payment": 50053, "settlement": 50054}


class InsecureSettings(ValueError):
    """A process was asked to start outside the local mesh with a development secret (one that
    ships in this repository) or a weak one; ``OBM_ALLOW_DEV_SECRETS`` is for the local mesh."""


class ServiceSettings(ServerSettings, StorageSettings):
    """Settings every service reads: its server, its store, where its peers are, and tokens."""

    model_config = SettingsConfigDict(env_prefix="OBM_", extra="ignore", frozen=True)

    identity_target: str = f"127.0.0.1:{DEFAULT_PORTS['identity']}"
    account_target: str = f"127.0.0.1:{DEFAULT_PORTS['account']}"
    payment_target: str = f"127.0.0.1:{DEFAULT_PORTS['payment']}"
    settlement_target: str = f"127.0.0.1:{DEFAULT_PORTS['settlement']}"
    token_issuer: str = "https://identity.openbank.local"
    token_audience: str = "openbank-mesh"
    token_leeway_seconds: float = Field(default=5.0, ge=0, le=30)
    # Only the local mesh (``make up``, meshcli) and the dev overlay set this: a service then
    # starts with the development secrets that ship here (InsecureSettings anywhere else).
    allow_dev_secrets: bool = False
    # A verifier refetches the JWKS (in the background) once its copy is this old, so a
    # rotated-in key (published by identity a longer "publish lead" before it signs) is
    # known before its first token arrives; an unknown kid refetches at once too.
    jwks_max_age_seconds: float = Field(default=30.0, gt=0, le=3600)
    # Redis: rate limits (gateway) and the invalidation bus (consent, partner and token
    # changes reach every process at once). Without it: in-process defaults.
    redis_url: str | None = Field(
        default=None, validation_alias=AliasChoices("redis_url", "OBM_REDIS_URL", "REDIS_URL")
    )
    invalidation_channel: str = "openbank:invalidations"
    # While the bus is subscribed, open streams' status re-check (a safety net: the bus ends
    # them at once on a revocation) runs this seldom; while it is down, every few seconds.
    stream_recheck_seconds_bus_up: float = Field(default=30.0, gt=0, le=600)
    # How often business gauges (positions, payments by state) are refreshed from the store.
    metrics_interval_seconds: float = Field(default=5.0, gt=0, le=300)
    # Internal client credentials this service uses to call its peers.
    service_client_id: str | None = None
    service_client_secret: str | None = None
    # Client-side TLS towards peers (mTLS in Kubernetes).
    peer_tls_ca_file: Path | None = None
    peer_tls_cert_file: Path | None = None
    peer_tls_key_file: Path | None = None
    # Peers (DNS names in their mesh mTLS certificates) whose forwarded partner certificate
    # thumbprint this service believes, for certificate-bound tokens (RFC 8705): the gateway.
    # From any other peer, or without mTLS, the header is ignored (meshlib.auth.certificates).
    certificate_forwarders: tuple[str, ...] = DEFAULT_CERTIFICATE_FORWARDERS
    # The audit trail: how often new records are chained, and how long records are kept
    # (0 keeps them for ever; the default is seven years).
    audit_seal_seconds: float = Field(default=1.0, gt=0, le=60)
    audit_retention_days: int = Field(default=2555, ge=0)


C = TypeVar("C")


@dataclass
class Wiring(Generic[C]):
    """What a service hands back from ``wire``: its servicers, lifecycle hooks and the
    components it built (a dataclass of the service's own, for its hooks and for tests)."""

    registrations: list[ServiceRegistration]
    components: C
    lifecycle: Lifecycle = field(default_factory=Lifecycle)
    extra_interceptors: list[grpc.aio.ServerInterceptor] = field(default_factory=list)


@dataclass
class Runtime:
    """Shared things a service's ``wire`` may use: settings, database, verifier, channels."""

    settings: Any
    database: Database
    verifier: JwtVerifier
    channels: dict[str, grpc.aio.Channel] = field(default_factory=dict)
    # The partner's TLS client certificate of the current call (certificate-bound tokens).
    certificates: CertificateSource = field(default_factory=ForwardedCertificate)

    def channel(self, target: str) -> grpc.aio.Channel:
        """A long-lived channel to a peer, opened once per target."""
        if target not in self.channels:
            self.channels[target] = open_channel(
                ChannelSettings(
                    target=target,
                    tls_ca_file=self.settings.peer_tls_ca_file,
                    tls_cert_file=self.settings.peer_tls_cert_file,
                    tls_key_file=self.settings.peer_tls_key_file,
                    max_message_bytes=self.settings.max_message_bytes,
                )
            )
        return self.channels[target]


@dataclass(frozen=True)
class ServiceSpec(Generic[C]):
    """A service's identity: name, migrations, settings class and wiring function."""

    name: str
    versions_dir: Path
    settings_class: type[ServiceSettings]
    wire: Callable[[Runtime], Awaitable[Wiring[C]]]
    # Identity verifies with its own key store instead of fetching its own JWKS.
    jwks_fetcher: Callable[[Runtime], Callable[[], Awaitable[dict[str, Any]]]] | None = None
    # The service's audit tables (meshlib.audit.audit_tables): it then serves AuditService and
    # seals and purges its trail in the background.
    audit: AuditTables | None = None


def build_verifier(settings: ServiceSettings, fetcher: Callable[[], Awaitable[dict[str, Any]]]) -> JwtVerifier:
    """The shared verifier configured for this deployment's issuer and audience."""
    return JwtVerifier(
        VerifierSettings(
            issuer=settings.token_issuer,
            audience=settings.token_audience,
            leeway_seconds=settings.token_leeway_seconds,
        ),
        JwksCache(fetcher, max_age_seconds=settings.jwks_max_age_seconds),
    )


class RunningService(MeshServer, Generic[C]):
    """A started service: the server, its runtime and the components its wiring built."""

    runtime: Runtime
    components: C
    audit: AuditStore | None


async def start_service(
    spec: ServiceSpec[C],
    settings: ServiceSettings,
    *,
    jwks_fetcher: Callable[[], Awaitable[dict[str, Any]]] | None = None,
) -> RunningService[C]:
    """Open the store, migrate, wire, and start serving; returns the running server.

    Tests pass ``jwks_fetcher`` (e.g. a ``TestIssuer``'s key set) to run a service
    without identity.
    """
    if settings.service_name == "openbank":  # unnamed: the process is the service (logs, metrics)
        settings = settings.model_copy(update={"service_name": spec.name})
    database = Database(
        database_url_for(spec.name, settings), pool_size=settings.db_pool_size, application_name=spec.name
    )
    if settings.run_migrations:
        await upgrade_to_head(database, spec.versions_dir, spec.name)
    else:  # migrated by the release's migration Job (openbank-mesh migrate)
        await require_migrated(database, spec.versions_dir, spec.name)
    runtime = Runtime(
        settings=settings,
        database=database,
        verifier=None,  # type: ignore[arg-type]
        certificates=ForwardedCertificate(settings.certificate_forwarders),
    )
    if jwks_fetcher is not None:
        fetcher = jwks_fetcher
    elif spec.jwks_fetcher is not None:
        fetcher = spec.jwks_fetcher(runtime)
    else:
        fetcher = identity_jwks_fetcher(runtime.channel(settings.identity_target))
    runtime.verifier = build_verifier(settings, fetcher)
    wiring = await spec.wire(runtime)
    auth = AuthInterceptor(runtime.verifier, contract_policies(), certificates=runtime.certificates)

    async def close_resources() -> None:
        for channel in runtime.channels.values():
            await channel.close()
        await database.dispose()

    wiring.lifecycle.on_stop.insert(0, close_resources)

    async def warm_keys() -> None:
        runtime.verifier.keys.warm_up()  # the first call then finds identity's keys

    wiring.lifecycle.on_start.append(warm_keys)
    registrations = list(wiring.registrations)
    audit = AuditStore(database, spec.audit, spec.name) if spec.audit is not None else None
    if audit is not None:
        registrations.append(audit_registration(audit))
        keeper = audit_keeper(
            audit, seal_seconds=settings.audit_seal_seconds, retention_days=settings.audit_retention_days
        )
        wiring.lifecycle.on_start.append(keeper.start)
        # Stopped first, then one last seal before the database closes.
        wiring.lifecycle.on_stop.insert(0, audit.seal)
        wiring.lifecycle.on_stop.insert(0, keeper.stop)
    server: RunningService[C] = RunningService(
        settings,
        registrations,
        interceptors=[auth, *wiring.extra_interceptors],
        error_domain=f"{spec.name}.openbank.dev",
        lifecycle=wiring.lifecycle,
    )
    server.runtime = runtime
    server.components = wiring.components
    server.audit = audit
    await server.start()
    return server


async def migrate_service(spec: ServiceSpec[Any], settings: ServiceSettings) -> str | None:
    """Bring the service's database to this version's head, then close it; returns the revision."""
    database = Database(database_url_for(spec.name, settings), pool_size=1, application_name=f"{spec.name}-migrate")
    try:
        return await upgrade_to_head(database, spec.versions_dir, spec.name)
    finally:
        await database.dispose()


def run_migration(spec: ServiceSpec[Any]) -> int:
    """``<service> migrate``: migrate and exit (0 done, 1 failed, the cause logged)."""
    import asyncio

    settings = spec.settings_class()
    configure_logging(spec.name, settings.log_level, settings.log_format)
    try:
        revision = asyncio.run(migrate_service(spec, settings))
    except Exception:
        log.exception("migration failed", extra={"service": spec.name})
        return 1
    log.info("migrated", extra={"service": spec.name, "revision": revision})
    return 0


def run_service(spec: ServiceSpec, argv: list[str] | None = None) -> None:
    """A service process's ``main``: start, serve until SIGTERM, drain, exit 0.

    ``python -m services.<name> migrate`` migrates the database instead and exits.
    (``openbank-mesh serve <name>`` runs this with its own arguments: only a last
    ``migrate`` means anything.)
    """
    import sys

    from meshlib.server import run_process

    arguments = sys.argv[1:] if argv is None else argv
    if arguments[-1:] == ["migrate"]:
        sys.exit(run_migration(spec))

    async def main() -> None:
        settings = spec.settings_class()
        if not settings.port:
            settings = settings.model_copy(update={"port": DEFAULT_PORTS[spec.name]})
        if settings.service_name == "openbank":
            settings = settings.model_copy(update={"service_name": spec.name})
        configure_logging(spec.name, settings.log_level, settings.log_format)
        configure_tracing(spec.name, settings.otlp_endpoint)
        server = await start_service(spec, settings)
        await server.serve_until_stopped()

    run_process(main)
