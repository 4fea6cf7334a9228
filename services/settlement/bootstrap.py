"""Settlement's wiring: the one place that builds its adapters and service layer."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from meshlib.app import Runtime, ServiceSpec, Wiring
from meshlib.auth.context import require_caller
from meshlib.server import ServiceRegistration
from openbank.settlement.v1 import position_pb2_grpc, settlement_admin_pb2_grpc, settlement_pb2_grpc
from services.settlement.ledger_client import GrpcLedgerReader
from services.settlement.participant_service import ParticipantService
from services.settlement.position_service import PositionService
from services.settlement.reconciliation_service import LedgerReader, ReconciliationService
from services.settlement.service_common import Transactions
from services.settlement.servicer import PositionServicer, SettlementAdminServicer, SettlementServicer
from services.settlement.settings import SettlementSettings
from services.settlement.unit_of_work import SettlementUnitOfWork
from services.settlement.window_service import WindowService

VERSIONS_DIR = Path(__file__).parent / "migrations" / "versions"


async def forwarded_caller_token() -> str:
    """The current caller's own bearer token, forwarded to the ledger.

    Works when an operator holding ``ledger:read`` reconciles; to be replaced by a service
    token once identity issues them.
    """
    return require_caller().raw_token


async def wire(runtime: Runtime) -> Wiring:
    """Build settlement's layers on the runtime's database."""
    settings: SettlementSettings = runtime.settings
    transactions = Transactions(partial(SettlementUnitOfWork, runtime.database))
    ledger: LedgerReader = GrpcLedgerReader(runtime.channel(settings.account_target), forwarded_caller_token)
    positions = PositionService(transactions)
    windows = WindowService(transactions)
    participants = ParticipantService(transactions)
    reconciliation = ReconciliationService(transactions, ledger)
    runtime.extras.update(
        positions=positions, windows=windows, participants=participants, reconciliation=reconciliation
    )
    return Wiring(
        registrations=[
            ServiceRegistration(
                "openbank.settlement.v1.PositionService",
                PositionServicer(positions),
                position_pb2_grpc.add_PositionServiceServicer_to_server,
            ),
            ServiceRegistration(
                "openbank.settlement.v1.SettlementService",
                SettlementServicer(windows),
                settlement_pb2_grpc.add_SettlementServiceServicer_to_server,
            ),
            ServiceRegistration(
                "openbank.settlement.v1.SettlementAdminService",
                SettlementAdminServicer(participants, windows, reconciliation),
                settlement_admin_pb2_grpc.add_SettlementAdminServiceServicer_to_server,
            ),
        ]
    )


SPEC = ServiceSpec(name="settlement", versions_dir=VERSIONS_DIR, settings_class=SettlementSettings, wire=wire)
