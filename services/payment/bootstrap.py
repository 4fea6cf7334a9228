"""Payment's wiring: the one place that builds its adapters and service layer.

Tests inject the outside world through :func:`payment_spec`: the service token provider
(e.g. a ``TestIssuer``), the consent lookup and the partner directory.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

from meshlib.admission import WaveAdmission
from meshlib.app import Runtime, ServiceSpec, Wiring
from meshlib.auth.consent import ConsentLookup
from meshlib.errors import Unavailable
from meshlib.events import bus_for
from meshlib.periodic import Periodic
from meshlib.server import Lifecycle, ServiceRegistration
from openbank.payment.v1 import payment_admin_pb2_grpc, payment_pb2_grpc
from services.payment.domain.checks import load_rules
from services.payment.downstream import GrpcLedger, GrpcPartnerDirectory, GrpcSettlement
from services.payment.metrics import publish_payment_gauges
from services.payment.payments_service import (
    PartnerDirectory,
    PaymentCommands,
    PaymentEvents,
    PaymentQueries,
    RecoveryLoop,
)
from services.payment.saga import PaymentSaga, exit_at_failpoint
from services.payment.servicer import PaymentAdminServicer, PaymentServicer
from services.payment.settings import PaymentSettings
from services.payment.unit_of_work import PaymentUnitOfWork

log = logging.getLogger("services.payment")

VERSIONS_DIR = Path(__file__).parent / "migrations" / "versions"
SERVICE_SCOPES = [
    "ledger:write",
    "ledger:read",
    "settlement:write",
    "settlement:admin",
    "consents:read",
    "identity:admin",
]

Bearer = Callable[[], Awaitable[str]]
BearerFactory = Callable[[Runtime], Bearer]
ConsentLookupFactory = Callable[[Runtime, Bearer], ConsentLookup]
PartnerDirectoryFactory = Callable[[Runtime, Bearer], PartnerDirectory]


def service_token_bearer(runtime: Runtime) -> Bearer:
    """Service tokens from identity (client_credentials with the configured internal client)."""
    settings: PaymentSettings = runtime.settings
    if not settings.service_client_id or not settings.service_client_secret:
        log.warning("no service client credentials: calls to account and settlement will fail UNAVAILABLE")

        async def missing() -> str:
            raise Unavailable("the payment service has no service credentials")

        return missing
    from meshlib.auth.service_tokens import ServiceTokenSource

    tokens = ServiceTokenSource(
        runtime.channel(settings.identity_target),
        settings.service_client_id,
        settings.service_client_secret,
        SERVICE_SCOPES,
    )
    return tokens.token


def identity_consent_lookup(runtime: Runtime, bearer: Bearer) -> ConsentLookup:
    """Identity-backed consent views (cached briefly, invalidated over the bus)."""
    from meshlib.auth.consent_client import IdentityConsentLookup

    settings: PaymentSettings = runtime.settings
    lookup = IdentityConsentLookup(runtime.channel(settings.identity_target), bearer)
    bus = bus_for(settings.redis_url)
    lookup.attach(bus)
    runtime.extras["consent_bus"] = bus
    return lookup


def identity_partner_directory(runtime: Runtime, bearer: Bearer) -> PartnerDirectory:
    """Partner limits from identity's PartnerService (cached)."""
    settings: PaymentSettings = runtime.settings
    return GrpcPartnerDirectory(
        runtime.channel(settings.identity_target),
        bearer,
        settings.downstream_deadline_seconds,
        settings.downstream_attempts,
        settings.directory_cache_seconds,
    )


async def wire(
    runtime: Runtime,
    *,
    bearer: BearerFactory = service_token_bearer,
    consent_lookup: ConsentLookupFactory = identity_consent_lookup,
    partner_directory: PartnerDirectoryFactory = identity_partner_directory,
) -> Wiring:
    """Build payment's layers on the runtime's database."""
    settings: PaymentSettings = runtime.settings
    uow = partial(PaymentUnitOfWork, runtime.database)
    token = bearer(runtime)
    deadline, attempts = settings.downstream_deadline_seconds, settings.downstream_attempts
    ledger = GrpcLedger(
        runtime.channel(settings.account_target), token, deadline, attempts, settings.hold_timeout_seconds
    )
    settlement = GrpcSettlement(
        runtime.channel(settings.settlement_target), token, deadline, attempts, settings.directory_cache_seconds
    )
    lease = dt.timedelta(seconds=settings.saga_lease_seconds)
    saga = PaymentSaga(uow, ledger, settlement, lease=lease, failpoint=exit_at_failpoint(settings.payment_failpoint))
    consents = consent_lookup(runtime, token)
    commands = PaymentCommands(
        uow,
        saga,
        consents,
        partner_directory(runtime, token),
        settlement,
        load_rules(settings.velocity_rules_file),
        lease=lease,
        saga_inline=settings.saga_inline,
        accounts=ledger,
        admission=WaveAdmission(max_waves=settings.admission_waves, release_after=settings.admission_release_seconds)
        if settings.admission_waves
        else None,
    )
    queries = PaymentQueries(uow, consents)
    events = PaymentEvents(
        uow, poll_seconds=settings.watch_poll_seconds, max_streams_per_partner=settings.max_streams_per_partner
    )
    recovery = RecoveryLoop(saga, commands, settings.recovery_interval_seconds)
    runtime.extras.update(saga=saga, commands=commands, queries=queries, recovery=recovery)
    gauges = Periodic("payment-metrics", settings.metrics_interval_seconds, partial(publish_payment_gauges, uow))
    lifecycle = Lifecycle(on_start=[recovery.start, gauges.start], on_stop=[recovery.stop, gauges.stop])
    bus = runtime.extras.get("consent_bus")
    if bus is not None:
        lifecycle.on_start.insert(0, bus.start)
        lifecycle.on_stop.append(bus.close)
    return Wiring(
        registrations=[
            ServiceRegistration(
                "openbank.payment.v1.PaymentService",
                PaymentServicer(queries, commands, events),
                payment_pb2_grpc.add_PaymentServiceServicer_to_server,
            ),
            ServiceRegistration(
                "openbank.payment.v1.PaymentAdminService",
                PaymentAdminServicer(queries, commands),
                payment_admin_pb2_grpc.add_PaymentAdminServiceServicer_to_server,
            ),
        ],
        lifecycle=lifecycle,
    )


def payment_spec(
    *,
    bearer: BearerFactory = service_token_bearer,
    consent_lookup: ConsentLookupFactory = identity_consent_lookup,
    partner_directory: PartnerDirectoryFactory = identity_partner_directory,
) -> ServiceSpec:
    """The service's spec; tests inject a token provider, a consent lookup and partner limits."""
    return ServiceSpec(
        name="payment",
        versions_dir=VERSIONS_DIR,
        settings_class=PaymentSettings,
        wire=partial(wire, bearer=bearer, consent_lookup=consent_lookup, partner_directory=partner_directory),
    )


SPEC = payment_spec()
