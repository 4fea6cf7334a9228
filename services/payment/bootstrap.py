"""Payment's wiring: the one place that builds its adapters and use cases.

The speed-ups are decorators of the same ports, chosen here (``OBM_PAYMENT_BATCHING``):
batch rpcs to account and settlement, group commit of the journal and of new payments, and
waves of CreatePayments. Tests inject the outside world through :func:`payment_spec`: the
service token provider (e.g. a ``TestIssuer``), the consent lookup and the partner directory.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from meshlib.admission import WaveAdmission
from meshlib.app import Runtime, ServiceSpec, Wiring
from meshlib.auth.consent import ConsentLookup
from meshlib.auth.verifier import RevocationCheck
from meshlib.auth.wiring import identity_peers
from meshlib.clients import PeerCaller
from meshlib.errors import Unavailable
from meshlib.event_intake import IdentityIntake, identity_intake
from meshlib.events import InvalidationBus
from meshlib.fanout import Fanout
from meshlib.outbox import RelayLoop, relay_loop
from meshlib.periodic import Periodic
from meshlib.server import Lifecycle, ServiceRegistration
from meshlib.storage import Transactions
from openbank.payment.v1 import (
    capability_pb2_grpc,
    isolation_pb2_grpc,
    mandate_pb2_grpc,
    payment_admin_pb2_grpc,
    payment_pb2_grpc,
    risk_pb2_grpc,
)
from services.payment.adapters.batching import BatchingLedger, BatchingSettlement
from services.payment.adapters.clearing import CLEARING_SCOPES, GrpcClearingConnector
from services.payment.adapters.group_commit import GroupCommitJournal, GroupCommitRegister
from services.payment.adapters.identity_signals import (
    BoundedIdentitySignals,
    CachedFailedSignIns,
    FailedSignIns,
    GrpcFailedSignIns,
    IdentityRiskSignalsAdapter,
)
from services.payment.adapters.peers import GrpcLedger, GrpcPartnerDirectory, GrpcSettlement
from services.payment.adapters.risk_rules_file import ReloadableRiskRules
from services.payment.adapters.sql_clearing_feeds import SqlClearingFeeds
from services.payment.adapters.sql_journal import SqlPaymentJournal
from services.payment.adapters.sql_register import SqlPaymentRegister
from services.payment.adapters.sql_schedules import SqlSchedules
from services.payment.capabilities import CapabilitySwitches
from services.payment.capability_servicer import CapabilityAdminServicer
from services.payment.clearing_loops import ClearingLoops, ClearingStatusPoller, SchemeReturns
from services.payment.commands import (
    KEY_RETENTION,
    CancelPayment,
    RecoverPayments,
    Recovery,
    RecoveryLoop,
    purge_idempotency_keys,
)
from services.payment.create_payment import AdmittedInWaves, CreatePayment, CreatePaymentHandler, Router
from services.payment.dispute_wiring import dispute_wiring
from services.payment.domain.fees import load_fee_schedule
from services.payment.domain.schedules import scaled_clock
from services.payment.domain.step_up import Waiting
from services.payment.event_relay import OutboxRow, OutboxTail, SqlOutbox, intake_event
from services.payment.fee_charges import FeeCharges
from services.payment.isolation_servicer import CustomerCapabilityServicer, IsolationAdminServicer
from services.payment.isolation_wiring import isolation_wiring
from services.payment.mandate_servicer import MandateServicer
from services.payment.mandate_usage import MandateUsage
from services.payment.metrics import publish_payment_gauges
from services.payment.ports import (
    Clock,
    IdentityRiskSignals,
    PartnerDirectory,
    PaymentJournal,
    PaymentRegister,
    utc_now,
)
from services.payment.queries import PaymentEvents, PaymentQueries
from services.payment.refund_payment import RefundPayment
from services.payment.risk_review import RiskExpiryLoop, RiskReview
from services.payment.risk_servicer import PaymentAuthorisationServicer, RiskAdminServicer
from services.payment.saga import SagaRunner, exit_at_failpoint
from services.payment.scheduler import Scheduler, SchedulerLoop
from services.payment.scheme_steps import SchemeSteps
from services.payment.servicer import PaymentAdminServicer, PaymentServicer
from services.payment.settings import PaymentSettings, refuse_development_secrets
from services.payment.standing_orders import StandingOrders
from services.payment.tables import audit as audit_tables
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
    "tokens:introspect",
    *CLEARING_SCOPES,
]

Bearer = Callable[[], Awaitable[str]]


@dataclass(frozen=True)
class IdentitySide:
    """What payment gets from identity: its service token, consents, the revocation check its
    verifier runs on every call (and open stream), and the invalidation bus."""

    bearer: Bearer
    consents: ConsentLookup
    bus: InvalidationBus | None = None
    revocation: RevocationCheck | None = None
    # Start-up (meshlib.auth.wiring.IdentityPeers.start): the bus, and the first service token
    # fetched in the background; None: just the bus (tests' injected sides).
    start: Callable[[], Awaitable[None]] | None = None
    # What identity knows of the paying customer lately (the risk decision's signals); None:
    # none (tests' injected sides).
    risk_signals: IdentityRiskSignals | None = None


IdentityFactory = Callable[[Runtime], IdentitySide]
PartnerDirectoryFactory = Callable[[Runtime, PeerCaller], PartnerDirectory]


async def _no_credentials() -> str:
    raise Unavailable("the payment service has no service credentials")


def identity_side(runtime: Runtime) -> IdentitySide:
    """The shared identity wiring (``meshlib.auth.wiring``): one token source, the consent
    lookup and the revocation cache, both invalidated over the bus."""
    settings: PaymentSettings = runtime.settings
    peers = identity_peers(
        runtime.channel(settings.identity_target),
        client_id=settings.service_client_id,
        client_secret=settings.service_client_secret,
        redis_url=settings.redis_url,
        channel=settings.invalidation_channel,
        stream_recheck_bus_up_seconds=settings.stream_recheck_seconds_bus_up,
        scopes=SERVICE_SCOPES,
    )
    if peers.tokens is None:
        log.warning("no service client credentials: calls to account and settlement will fail UNAVAILABLE")
    bearer = peers.tokens.token if peers.tokens else _no_credentials
    return IdentitySide(
        bearer,
        peers.consents,
        peers.bus,
        peers.revocation,
        peers.start,
        identity_risk_signals(runtime, bearer, peers.consents),
    )


def identity_events(runtime: Runtime) -> IdentityIntake | None:
    """The one peer both relays to identity's partner event log use (the outbox's, dynamic
    isolation's): one token source with ``events:write``; None when relaying is off or the
    service has no client credentials."""
    settings: PaymentSettings = runtime.settings
    return identity_intake(runtime, enabled=settings.event_relay, deadline_seconds=settings.downstream_deadline_seconds)


def outbox_relay(
    runtime: Runtime, uow: Callable[..., PaymentUnitOfWork], events: IdentityIntake | None
) -> tuple[RelayLoop[OutboxRow], Fanout | None]:
    """The outbox's relay to identity's partner event log (none without ``events``: the rows
    wait), whose ticks also run the tail waking WatchPayments streams; and the tail's fanout
    (None: the streams poll)."""
    settings: PaymentSettings = runtime.settings
    outbox = SqlOutbox(uow)
    tail = OutboxTail(outbox, Fanout()) if settings.event_fanout else None
    relay = relay_loop(
        "payment-events",
        outbox,
        None if events is None else events.sink(intake_event),
        settings,
        clock=utc_now,
        purge=outbox.purge,
        each_tick=None if tail is None else tail.tail_once,
    )
    return relay, None if tail is None else tail.fanout


def identity_partner_directory(runtime: Runtime, call: PeerCaller) -> PartnerDirectory:
    """Partner limits from identity's PartnerService (cached)."""
    settings: PaymentSettings = runtime.settings
    return GrpcPartnerDirectory(runtime.channel(settings.identity_target), call, settings.directory_cache_seconds)


def identity_risk_signals(runtime: Runtime, bearer: Bearer, consents: ConsentLookup) -> IdentityRiskSignals:
    """Failed sign-ins from identity (cached per customer unless the cache is 0 s) and the
    consent's last change from the consent lookup, within a bounded wait (fail open)."""
    settings: PaymentSettings = runtime.settings
    deadline = settings.identity_signals_deadline_seconds
    grpc_source = GrpcFailedSignIns(runtime.channel(settings.identity_target), bearer, deadline)
    failed: FailedSignIns = grpc_source
    if settings.identity_signals_cache_seconds > 0:
        failed = CachedFailedSignIns(grpc_source, settings.identity_signals_cache_seconds)
    return BoundedIdentitySignals(IdentityRiskSignalsAdapter(failed, consents), deadline)


@dataclass(frozen=True)
class PaymentComponents:
    """Payment's use cases and adapters, as wired."""

    create: CreatePaymentHandler
    cancel: CancelPayment
    refund: RefundPayment
    standing_orders: StandingOrders
    scheduler: Scheduler
    recover: RecoverPayments
    recovery: Recovery
    queries: PaymentQueries
    events: PaymentEvents
    saga: SagaRunner
    journal: PaymentJournal
    register: PaymentRegister


async def wire(
    runtime: Runtime,
    *,
    identity: IdentityFactory = identity_side,
    partner_directory: PartnerDirectoryFactory = identity_partner_directory,
) -> Wiring[PaymentComponents]:
    """Build payment's layers on the runtime's database."""
    settings: PaymentSettings = runtime.settings
    refuse_development_secrets(settings)
    uow = partial(PaymentUnitOfWork, runtime.database)
    peers = identity(runtime)
    # Revoked tokens, consents and partners are refused here too, not only at the gateway.
    runtime.verifier.revocation = peers.revocation
    call = PeerCaller(
        peers.bearer, deadline_seconds=settings.downstream_deadline_seconds, attempts=settings.downstream_attempts
    )
    account, settlement = runtime.channel(settings.account_target), runtime.channel(settings.settlement_target)
    lease = dt.timedelta(seconds=settings.saga_lease_seconds)
    sql_journal = SqlPaymentJournal(uow, lease=lease)
    risk_rules = ReloadableRiskRules(settings.rules_file, settings.risk_rules_check_seconds)
    waiting = Waiting(
        step_up=dt.timedelta(seconds=settings.step_up_wait_seconds),
        review=dt.timedelta(seconds=settings.review_wait_seconds),
    )
    sql_register = SqlPaymentRegister(uow, risk_rules, lease=lease, waiting=waiting)
    journal: PaymentJournal
    register: PaymentRegister
    if settings.payment_batching:
        ledger: GrpcLedger = BatchingLedger(account, call, settings.hold_timeout_seconds)
        positions: GrpcSettlement = BatchingSettlement(settlement, call, settings.directory_cache_seconds)
        journal, register = GroupCommitJournal(sql_journal), GroupCommitRegister(sql_register)
    else:
        ledger = GrpcLedger(account, call, settings.hold_timeout_seconds)
        positions = GrpcSettlement(settlement, call, settings.directory_cache_seconds)
        journal, register = sql_journal, sql_register
    scheme_connector: GrpcClearingConnector | None = None
    if settings.scheme_target:
        # One attempt per submission (its deadline is how long an acknowledgement is awaited);
        # a lost one is asked for by status, never by sending blindly again.
        scheme_call = PeerCaller(peers.bearer, deadline_seconds=settings.scheme_deadline_seconds, attempts=1)
        scheme_connector = GrpcClearingConnector(runtime.channel(settings.scheme_target), scheme_call)
    saga = SagaRunner(
        journal,
        ledger,
        positions,
        failpoint=exit_at_failpoint(settings.payment_failpoint),
        scheme=SchemeSteps(scheme_connector, settings.scheme_bank_bic) if scheme_connector else None,
        clearing_poll=dt.timedelta(seconds=settings.clearing_poll_seconds),
        resume_attempts=settings.recovery_resume_attempts,
    )
    partners = partner_directory(runtime, call)
    switches = CapabilitySwitches(Transactions(uow))
    create: CreatePaymentHandler = CreatePayment(
        consents=peers.consents,
        ledger=ledger,
        participants=positions,
        partners=partners,
        register=register,
        saga=saga,
        fees=FeeCharges(load_fee_schedule(settings.fee_schedule_file), settings.fee_income_accounts, positions),
        capabilities=switches,
        identity_signals=peers.risk_signals,
    )
    if settings.payment_batching and settings.admission_waves:
        admission = WaveAdmission(max_waves=settings.admission_waves, release_after=settings.admission_release_seconds)
        create = AdmittedInWaves(create, admission)
    recovery = Recovery(journal, saga)
    schedules_store = SqlSchedules(Transactions(uow))
    scheduler = Scheduler(
        store=schedules_store,
        create=create,
        consents=peers.consents,
        ledger=ledger,
        partners=partners,
        register=register,
        saga=saga,
        lease=dt.timedelta(seconds=settings.schedule_lease_seconds),
        catch_up=dt.timedelta(seconds=settings.schedule_catch_up_seconds),
        clock=scheduler_clock(settings),
        failpoint=exit_at_failpoint(settings.payment_failpoint),
    )
    events = identity_events(runtime)
    relay, fanout = outbox_relay(runtime, uow, events)
    isolation_policy, isolation, isolation_sweep = isolation_wiring(runtime, uow, events)
    components = PaymentComponents(
        create=create,
        cancel=CancelPayment(peers.consents, register),
        refund=RefundPayment(register=register, saga=saga),
        standing_orders=StandingOrders(
            consents=peers.consents, ledger=ledger, router=Router(positions), schedules_store=schedules_store
        ),
        scheduler=scheduler,
        recover=RecoverPayments(uow, recovery),
        recovery=recovery,
        queries=PaymentQueries(uow, peers.consents),
        events=PaymentEvents(
            uow,
            poll_seconds=settings.watch_poll_seconds,
            max_streams_per_partner=settings.max_streams_per_partner,
            signal=fanout,
        ),
        saga=saga,
        journal=journal,
        register=register,
    )
    loop = RecoveryLoop(
        recovery,
        settings.recovery_interval_seconds,
        hourly=lambda: purge_idempotency_keys(uow, utc_now(), KEY_RETENTION),
    )
    scheduling = SchedulerLoop(scheduler, settings.schedule_interval_seconds)
    clearing_loops: list[ClearingLoops] = []
    if scheme_connector is not None:
        returns = SchemeReturns(
            scheme_connector, SqlClearingFeeds(Transactions(uow)), components.refund, recovery, journal
        )
        clearing_loops.append(
            ClearingLoops(
                ClearingStatusPoller(journal, recovery),
                returns,
                settings.clearing_poll_seconds,
                settings.clearing_returns_seconds,
            )
        )
    risk_review = RiskReview(uow, saga, step_up_secret=settings.step_up_secret.encode(), lease=lease)
    risk_expiry = RiskExpiryLoop(risk_review, settings.risk_expiry_interval_seconds)
    gauges = Periodic("payment-metrics", settings.metrics_interval_seconds, partial(publish_payment_gauges, uow))
    dispute_services, dispute_sweeps = dispute_wiring(
        settings,
        Transactions(uow),
        register=register,
        refund=components.refund,
        participants=positions,
        identity=runtime.channel(settings.identity_target),
        call=call,
    )
    lifecycle = Lifecycle(
        on_start=[
            loop.start,
            scheduling.start,
            gauges.start,
            *(c.start for c in clearing_loops),
            relay.start,
            risk_rules.start,
            risk_expiry.start,
            isolation_policy.start,
            isolation_sweep.start,
            *(sweep.start for sweep in dispute_sweeps),
        ],
        on_stop=[
            *(sweep.stop for sweep in dispute_sweeps),
            isolation_sweep.stop,
            isolation_policy.stop,
            risk_expiry.stop,
            risk_rules.stop,
            relay.stop,
            *(c.stop for c in clearing_loops),
            scheduling.stop,
            loop.stop,
            gauges.stop,
        ],
    )
    if peers.bus is not None:
        lifecycle.on_start.insert(0, peers.start or peers.bus.start)
        lifecycle.on_stop.append(peers.bus.close)
    return Wiring(
        registrations=[
            ServiceRegistration(
                "openbank.payment.v1.PaymentService",
                PaymentServicer(components),
                payment_pb2_grpc.add_PaymentServiceServicer_to_server,
            ),
            ServiceRegistration(
                "openbank.payment.v1.PaymentAdminService",
                PaymentAdminServicer(components),
                payment_admin_pb2_grpc.add_PaymentAdminServiceServicer_to_server,
            ),
            ServiceRegistration(
                "openbank.payment.v1.PaymentAuthorisationService",
                PaymentAuthorisationServicer(risk_review),
                risk_pb2_grpc.add_PaymentAuthorisationServiceServicer_to_server,
            ),
            ServiceRegistration(
                "openbank.payment.v1.RiskAdminService",
                RiskAdminServicer(risk_review),
                risk_pb2_grpc.add_RiskAdminServiceServicer_to_server,
            ),
            ServiceRegistration(
                "openbank.payment.v1.MandateService",
                MandateServicer(MandateUsage(uow, peers.consents)),
                mandate_pb2_grpc.add_MandateServiceServicer_to_server,
            ),
            *dispute_services,
            ServiceRegistration(
                "openbank.payment.v1.CapabilityAdminService",
                CapabilityAdminServicer(switches),
                capability_pb2_grpc.add_CapabilityAdminServiceServicer_to_server,
            ),
            ServiceRegistration(
                "openbank.payment.v1.CustomerCapabilityService",
                CustomerCapabilityServicer(isolation),
                isolation_pb2_grpc.add_CustomerCapabilityServiceServicer_to_server,
            ),
            ServiceRegistration(
                "openbank.payment.v1.IsolationAdminService",
                IsolationAdminServicer(isolation, isolation_policy),
                isolation_pb2_grpc.add_IsolationAdminServiceServicer_to_server,
            ),
        ],
        components=components,
        lifecycle=lifecycle,
    )


def scheduler_clock(settings: PaymentSettings) -> Clock:
    """The wall clock, or the sandbox's fast one (schedule_time_scale from schedule_time_anchor)."""
    if settings.schedule_time_scale == 1.0 or settings.schedule_time_anchor is None:
        return utc_now
    anchor = settings.schedule_time_anchor
    if anchor.tzinfo is None:
        anchor = anchor.replace(tzinfo=dt.UTC)
    return scaled_clock(utc_now, anchor, settings.schedule_time_scale)


def payment_spec(
    *,
    identity: IdentityFactory = identity_side,
    partner_directory: PartnerDirectoryFactory = identity_partner_directory,
) -> ServiceSpec[PaymentComponents]:
    """The service's spec; tests inject identity's side (token, consents) and partner limits."""
    return ServiceSpec(
        name="payment",
        versions_dir=VERSIONS_DIR,
        settings_class=PaymentSettings,
        wire=partial(wire, identity=identity, partner_directory=partner_directory),
        audit=audit_tables,
    )


SPEC = payment_spec()
