"""Settlement's wiring: the one place that builds its adapters and service layer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from meshlib.app import Runtime, ServiceSpec, Wiring
from meshlib.auth.context import require_caller
from meshlib.auth.wiring import IdentityPeers, identity_peers
from meshlib.periodic import Periodic
from meshlib.server import Lifecycle, ServiceRegistration
from meshlib.storage import Transactions
from openbank.settlement.v1 import position_pb2_grpc, settlement_admin_pb2_grpc, settlement_pb2_grpc
from services.settlement.ledger_client import GrpcLedger
from services.settlement.metrics import publish_positions
from services.settlement.obligation_batches import ObligationBatches
from services.settlement.participant_service import ParticipantService
from services.settlement.position_service import PositionService
from services.settlement.reconciliation_service import LedgerReader, ReconciliationService
from services.settlement.schedule import close_due_windows
from services.settlement.servicer import PositionServicer, SettlementAdminServicer, SettlementServicer
from services.settlement.settings import SettlementSettings
from services.settlement.settle_service import SettlementPoster, SettleService
from services.settlement.tables import audit as audit_tables
from services.settlement.unit_of_work import SettlementUnitOfWork
from services.settlement.window_service import WindowService

VERSIONS_DIR = Path(__file__).parent / "migrations" / "versions"
# ledger:write: settling a window posts its nets in the ledger (CreateLinkedTransfers).
SERVICE_SCOPES = ["ledger:read", "ledger:write", "tokens:introspect"]


@dataclass(frozen=True)
class SettlementComponents:
    """Settlement's service layer, as its wiring built it (for its hooks and for tests)."""

    positions: PositionService
    batches: ObligationBatches
    windows: WindowService
    participants: ParticipantService
    reconciliation: ReconciliationService
    settlement: SettleService


async def forwarded_caller_token() -> str:
    """The current caller's own bearer token, forwarded to the ledger.

    The fallback when this service has no internal client credentials: it works when an
    operator holding ``ledger:read`` reconciles, ``ledger:write`` too settles.
    """
    return require_caller().raw_token


def identity_side(runtime: Runtime) -> IdentityPeers:
    """Settlement's service token (``ledger:read``, ``ledger:write``, ``tokens:introspect``) and
    the revocation cache its verifier runs on every call, fed by the invalidation bus."""
    settings: SettlementSettings = runtime.settings
    return identity_peers(
        runtime.channel(settings.identity_target),
        client_id=settings.service_client_id,
        client_secret=settings.service_client_secret,
        redis_url=settings.redis_url,
        channel=settings.invalidation_channel,
        stream_recheck_bus_up_seconds=settings.stream_recheck_seconds_bus_up,
        scopes=SERVICE_SCOPES,
    )


def ledger_token_source(peers: IdentityPeers) -> Callable[[], Awaitable[str]]:
    """Settlement's own service token when configured, else the caller's."""
    return peers.tokens.token if peers.tokens is not None else forwarded_caller_token


async def wire(runtime: Runtime, *, identity: bool = True) -> Wiring[SettlementComponents]:
    """Build settlement's layers on the runtime's database.

    ``identity=False`` (tests that run settlement without identity, trusting a test issuer's
    keys): no revocation cache to ask, and the ledger gets each caller's own token.
    """
    settings: SettlementSettings = runtime.settings
    lifecycle = Lifecycle()
    ledger_token: Callable[[], Awaitable[str]] = forwarded_caller_token
    if identity:
        peers = identity_side(runtime)
        # Revoked tokens, consents and partners are refused here too, not only at the gateway.
        runtime.verifier.revocation = peers.revocation
        ledger_token = ledger_token_source(peers)
        lifecycle.on_start.append(peers.start)
        lifecycle.on_stop.append(peers.bus.close)
    transactions = Transactions(partial(SettlementUnitOfWork, runtime.database))
    ledger = GrpcLedger(runtime.channel(settings.account_target), ledger_token)
    reader: LedgerReader = ledger
    poster: SettlementPoster = ledger
    positions = PositionService(transactions)
    batches = ObligationBatches(transactions)
    windows = WindowService(transactions)
    participants = ParticipantService(transactions)
    reconciliation = ReconciliationService(transactions, reader)
    settlement = SettleService(transactions, poster)
    gauges = Periodic(
        "settlement-position-metrics",
        settings.metrics_interval_seconds,
        partial(publish_positions, partial(SettlementUnitOfWork, runtime.database)),
    )
    lifecycle.on_start.append(gauges.start)
    lifecycle.on_stop.insert(0, gauges.stop)
    if settings.window_close_interval_seconds:
        interval = settings.window_close_interval_seconds
        closer = Periodic(
            "settlement-window-schedule",
            interval,
            partial(close_due_windows, windows, settings.window_currencies, interval),
        )
        lifecycle.on_start.append(closer.start)
        lifecycle.on_stop.append(closer.stop)
    return Wiring(
        components=SettlementComponents(positions, batches, windows, participants, reconciliation, settlement),
        lifecycle=lifecycle,
        registrations=[
            ServiceRegistration(
                "openbank.settlement.v1.PositionService",
                PositionServicer(positions, batches),
                position_pb2_grpc.add_PositionServiceServicer_to_server,
            ),
            ServiceRegistration(
                "openbank.settlement.v1.SettlementService",
                SettlementServicer(windows),
                settlement_pb2_grpc.add_SettlementServiceServicer_to_server,
            ),
            ServiceRegistration(
                "openbank.settlement.v1.SettlementAdminService",
                SettlementAdminServicer(participants, windows, reconciliation, settlement),
                settlement_admin_pb2_grpc.add_SettlementAdminServiceServicer_to_server,
            ),
        ],
    )


def settlement_spec(*, identity: bool = True) -> ServiceSpec[SettlementComponents]:
    """The service's spec; tests that run settlement without identity pass ``identity=False``."""
    return ServiceSpec(
        name="settlement",
        versions_dir=VERSIONS_DIR,
        settings_class=SettlementSettings,
        wire=partial(wire, identity=identity),
        audit=audit_tables,
    )


SPEC = settlement_spec()
