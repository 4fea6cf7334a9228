"""Identity's wiring: the one place that builds its adapters and service layer."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from meshlib.app import Runtime, ServiceSpec, Wiring
from meshlib.auth.context import Caller
from meshlib.auth.revocation import RevocationCache, TokenStatus
from meshlib.auth.verifier import JwksCache
from meshlib.errors import Unavailable
from meshlib.events import InProcessBus, Invalidation, InvalidationBus, RedisBus
from meshlib.fanout import Fanout, NewEventSignal, PollingSignal
from meshlib.periodic import Periodic
from meshlib.server import ServiceRegistration
from openbank.events.v1 import events_pb2_grpc
from openbank.identity.v1 import (
    authorization_pb2_grpc,
    consent_pb2_grpc,
    customer_pb2_grpc,
    onboarding_pb2_grpc,
    partner_pb2_grpc,
    signing_key_pb2_grpc,
    token_pb2_grpc,
)
from services.identity.account_client import LedgerAccounts
from services.identity.authorization_service import AuthorizationService
from services.identity.authorization_servicer import AuthorizationServicer
from services.identity.common import Clock, EventPublisher, utc_now
from services.identity.consent_service import ConsentService
from services.identity.customer_service import CustomerService, StrongCustomerAuthentication
from services.identity.decoupled_service import DecoupledService
from services.identity.domain.client_throttle import ClientAuthThrottle
from services.identity.domain.secrets import ClientSecretHasher, SecretBox, SecretHasher
from services.identity.event_push import EventEndpoints, EventPusher, PushSettings
from services.identity.event_service import EventLogSettings, PartnerEventLog
from services.identity.event_servicer import EventIntakeServicer, EventServicer
from services.identity.housekeeping import Housekeeping
from services.identity.internal_clients import load_internal_clients
from services.identity.keys_service import KeyService, OwnServiceToken
from services.identity.notifier import customer_notifier
from services.identity.onboarding_accounts import LedgerAccountOpener
from services.identity.onboarding_service import OnboardingService, load_rules, load_screening_list
from services.identity.onboarding_servicer import OnboardingServicer
from services.identity.partner_service import PartnerService
from services.identity.servicer import (
    ConsentServicer,
    CustomerServicer,
    PartnerServicer,
    SigningKeyServicer,
    TokenServicer,
)
from services.identity.settings import IdentitySettings, refuse_development_secrets
from services.identity.tables import audit as audit_tables
from services.identity.token_service import TokenService, TokenSettings
from services.identity.unit_of_work import IdentityUnitOfWork

VERSIONS_DIR = Path(__file__).parent / "migrations" / "versions"


@dataclass(frozen=True)
class IdentityComponents:
    """What identity's wiring built that its hooks and tests reach for."""

    keys: KeyService
    events: EventPublisher
    revocation: RevocationCache
    housekeeping: Housekeeping
    event_log: PartnerEventLog
    event_signal: NewEventSignal
    event_pusher: EventPusher


PARTNER_EVENTS = "partner-events"


def event_bus(settings: IdentitySettings) -> InvalidationBus:
    """Where "a partner's log grew" travels between identity replicas: Redis pub/sub when
    configured (its own channel: no other process reads it), else in-process."""
    if settings.redis_url:
        return RedisBus(settings.redis_url, settings.event_channel)
    return InProcessBus()


def wire_event_log(
    settings: IdentitySettings, database: Any, clock: Clock
) -> tuple[Callable[..., IdentityUnitOfWork], PartnerEventLog, NewEventSignal, list[Any], list[Any]]:
    """The unit of work (announcing grown logs after commit), the event log and its stream
    signal: the fan-out (bus + one sweep query per replica) or the plain per-stream polling.
    Returns also what to start and stop."""
    bus = event_bus(settings)
    signal: NewEventSignal

    async def announce(heads: dict[str, int]) -> None:
        for partner_id, head in heads.items():
            await bus.publish(Invalidation(PARTNER_EVENTS, partner_id, str(head)))

    async def heads_of(partner_ids: list[str]) -> dict[str, int]:
        async with IdentityUnitOfWork(database, read_only=True) as uow:
            return await uow.partner_events.heads(partner_ids)

    starts: list[Any] = [bus.start]
    stops: list[Any] = []
    if settings.event_fanout:
        fanout = Fanout(sweep=heads_of, sweep_seconds=settings.event_sweep_seconds)
        fanout.attach(bus, PARTNER_EVENTS)
        signal = fanout
        starts.append(fanout.start)
        stops.append(fanout.close)
    else:
        signal = PollingSignal(settings.event_poll_seconds)
    stops.append(bus.close)
    uow = partial(IdentityUnitOfWork, database, notify=announce, clock=clock)
    event_log = PartnerEventLog(
        uow,
        clock,
        signal,
        EventLogSettings(
            retention=dt.timedelta(days=settings.event_retention_days),
            expiry_notice=dt.timedelta(days=settings.event_expiry_notice_days),
        ),
    )
    job = Periodic("partner-events-housekeeping", settings.event_housekeeping_seconds, event_log.housekeeping_once)
    return uow, event_log, signal, [*starts, job.start], [job.stop, *stops]


def invalidation_bus(settings: IdentitySettings) -> InvalidationBus:
    """Redis pub/sub when configured, else in-process."""
    if settings.redis_url:
        return RedisBus(settings.redis_url, settings.invalidation_channel)
    return InProcessBus()


async def wire(runtime: Runtime, clock: Clock = utc_now) -> Wiring[IdentityComponents]:
    """Build identity's layers on the runtime's database."""
    settings: IdentitySettings = runtime.settings
    refuse_development_secrets(settings)
    uow, event_log, event_signal, event_starts, event_stops = wire_event_log(settings, runtime.database, clock)
    lifetime = dt.timedelta(seconds=settings.access_token_ttl_seconds)
    publish_lead = dt.timedelta(seconds=settings.signing_key_publish_lead_seconds)
    keys = KeyService(uow, settings.passphrase(), lifetime, clock, publish_lead=publish_lead)
    await keys.ensure_active_key()
    # Identity verifies tokens with its own key store (no call to itself for its JWKS).
    runtime.verifier.keys = JwksCache(keys.jwks, max_age_seconds=settings.jwks_max_age_seconds)

    hasher = SecretHasher(
        time_cost=settings.argon2_time_cost,
        memory_cost_kib=settings.argon2_memory_kib,
        parallelism=settings.argon2_parallelism,
    )
    client_secrets = ClientSecretHasher(settings.passphrase(), legacy=hasher)
    box = await asyncio.to_thread(SecretBox, settings.passphrase())
    inline_clients = settings.internal_clients.get_secret_value() if settings.internal_clients else None
    internal_clients = load_internal_clients(
        settings.internal_clients_file,
        inline_clients,
        client_secrets,
        allow_plain_secrets=settings.allow_dev_secrets,
    )
    bus = invalidation_bus(settings)
    events = EventPublisher(bus)

    ledger_accounts = None
    if settings.verify_consent_accounts:
        service_token = OwnServiceToken(keys, settings.token_issuer, settings.token_audience, ["ledger:read"])
        ledger_accounts = LedgerAccounts(runtime.channel(settings.account_target), service_token.token)
    decoupled = DecoupledService(uow, events, clock, accounts=ledger_accounts)

    tokens = TokenService(
        uow,
        keys,
        client_secrets,
        internal_clients,
        events,
        TokenSettings(
            issuer=settings.token_issuer,
            audience=settings.token_audience,
            access_token_lifetime=lifetime,
            refresh_token_lifetime=dt.timedelta(seconds=settings.refresh_token_ttl_seconds),
        ),
        verify_claims=runtime.verifier.verify_signature_and_claims,
        clock=clock,
        throttle=ClientAuthThrottle(
            max_failures=settings.client_auth_max_failures,
            window_seconds=settings.client_auth_failure_window_seconds,
            max_lockout_seconds=settings.client_auth_max_lockout_seconds,
        ),
        decoupled=decoupled,
    )
    sca = StrongCustomerAuthentication(hasher, box, clock)
    partners = PartnerService(uow, client_secrets, frozenset(settings.rate_limit_tiers), events, clock)
    customers = CustomerService(uow, hasher, box, sca, clock, sandbox=settings.sandbox_customer_secrets)
    consents = ConsentService(uow, sca, events, clock, accounts=ledger_accounts)
    authorizations = AuthorizationService(uow, events, clock, settings.token_issuer, accounts=ledger_accounts)
    # Account opening through partners: rules and the screening list read once here.
    opener_token = OwnServiceToken(keys, settings.token_issuer, settings.token_audience, ["ledger:admin"])
    onboarding = OnboardingService(
        uow,
        hasher,
        box,
        load_rules(settings.onboarding_rules_file),
        load_screening_list(settings.screening_list_file),
        LedgerAccountOpener(runtime.channel(settings.account_target), opener_token.token),
        clock,
        settings.bank_web_url,
        codes=client_secrets,
        notifier=customer_notifier(settings.customer_notifications_file, settings.mail_relay()),
        failpoint=settings.onboarding_failpoint,
    )
    opening = Periodic("onboarding-accounts", 5.0, _quietly(onboarding.open_waiting_accounts))
    event_starts.append(opening.start)
    event_stops.insert(0, opening.stop)

    # Identity's own verifier refuses revoked tokens too, asking its own store on a miss.
    # The caller comes from the verifier, which checked the token's signature on this call
    # (or when the stream opened): its claims cannot change, so only the store's state is read.
    async def introspect_locally(caller: Caller) -> TokenStatus:
        return (await introspect_many_locally([caller]))[0]

    async def introspect_many_locally(callers: Sequence[Caller]) -> list[TokenStatus]:
        answers = await tokens.statuses.of_callers(callers)
        return [TokenStatus(a.active, a.partner_status, a.consent_state, a.consent_paused) for a in answers]

    revocation = RevocationCache(
        introspect_locally,
        ttl_seconds=settings.revocation_cache_ttl_seconds,
        introspect_many=introspect_many_locally,
        stream_recheck_bus_up_seconds=settings.stream_recheck_seconds_bus_up,
        bus_up=getattr(bus, "healthy", None),  # identity's own changes are on its bus, even in-process
    )
    revocation.attach(bus)
    runtime.verifier.revocation = revocation
    housekeeping = Housekeeping(uow, clock)
    push = PushSettings(
        allow_insecure=settings.event_push_allow_insecure,
        base_backoff=dt.timedelta(seconds=settings.event_push_backoff_seconds),
        max_backoff=dt.timedelta(seconds=settings.event_push_max_backoff_seconds),
    )
    endpoints = EventEndpoints(uow, clock, push)
    pusher = EventPusher(uow, clock, partial(keys.sign, typ="secevent+jwt"), settings.token_issuer, push)
    pushing = Periodic("partner-events-push", settings.event_push_seconds, _quietly(pusher.push_once))
    if settings.event_push:
        event_starts.append(pushing.start)
        event_stops[:0] = [pushing.stop, pusher.close]

    wiring = Wiring(
        components=IdentityComponents(
            keys=keys,
            events=events,
            revocation=revocation,
            housekeeping=housekeeping,
            event_log=event_log,
            event_signal=event_signal,
            event_pusher=pusher,
        ),
        registrations=[
            ServiceRegistration(
                "openbank.identity.v1.TokenService",
                TokenServicer(keys, tokens, runtime.certificates),
                token_pb2_grpc.add_TokenServiceServicer_to_server,
            ),
            ServiceRegistration(
                "openbank.identity.v1.PartnerService",
                PartnerServicer(partners),
                partner_pb2_grpc.add_PartnerServiceServicer_to_server,
            ),
            ServiceRegistration(
                "openbank.identity.v1.CustomerService",
                CustomerServicer(customers),
                customer_pb2_grpc.add_CustomerServiceServicer_to_server,
            ),
            ServiceRegistration(
                "openbank.identity.v1.ConsentService",
                ConsentServicer(consents),
                consent_pb2_grpc.add_ConsentServiceServicer_to_server,
            ),
            ServiceRegistration(
                "openbank.identity.v1.AuthorizationService",
                AuthorizationServicer(authorizations, decoupled),
                authorization_pb2_grpc.add_AuthorizationServiceServicer_to_server,
            ),
            ServiceRegistration(
                "openbank.identity.v1.OnboardingService",
                OnboardingServicer(onboarding),
                onboarding_pb2_grpc.add_OnboardingServiceServicer_to_server,
            ),
            ServiceRegistration(
                "openbank.identity.v1.SigningKeyService",
                SigningKeyServicer(keys),
                signing_key_pb2_grpc.add_SigningKeyServiceServicer_to_server,
            ),
            ServiceRegistration(
                "openbank.events.v1.EventService",
                EventServicer(event_log, endpoints),
                events_pb2_grpc.add_EventServiceServicer_to_server,
            ),
            ServiceRegistration(
                "openbank.events.v1.EventIntakeService",
                EventIntakeServicer(event_log),
                events_pb2_grpc.add_EventIntakeServiceServicer_to_server,
            ),
        ],
    )
    wiring.lifecycle.on_start.extend([bus.start, housekeeping.start, *event_starts])
    wiring.lifecycle.on_stop.extend([*event_stops, housekeeping.stop, bus.close])
    return wiring


def _quietly(job: Callable[[], Awaitable[int]]) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        await job()

    return run


def _keys_set_in_wire(runtime: Runtime) -> Callable[[], Awaitable[dict[str, Any]]]:
    """Identity's verifier is built before its key service; ``wire`` gives it the key store.
    (Without this hook the runtime would fetch identity's JWKS from identity over gRPC.)"""

    async def not_wired_yet() -> dict[str, Any]:
        raise Unavailable("identity's signing keys are not loaded yet")

    return not_wired_yet


def build_spec(clock: Clock = utc_now) -> ServiceSpec[IdentityComponents]:
    """Identity's spec; tests pass a controllable clock (token expiry, key retirement)."""
    return ServiceSpec(
        name="identity",
        versions_dir=VERSIONS_DIR,
        settings_class=IdentitySettings,
        wire=partial(wire, clock=clock),
        jwks_fetcher=_keys_set_in_wire,
        audit=audit_tables,
    )


SPEC = build_spec()
