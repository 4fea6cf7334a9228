"""Settlement's unit of work: one transaction, its repositories."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from meshlib.audit import AuditRepository
from meshlib.idempotency import IdempotencyRepository
from meshlib.storage import SqlUnitOfWork
from services.settlement.repository import (
    ObligationRepository,
    ParticipantRepository,
    PositionRepository,
    WindowRepository,
)
from services.settlement.tables import audit, idempotency_keys


class SettlementUnitOfWork(SqlUnitOfWork):
    """Binds settlement's repositories to one transaction."""

    participants: ParticipantRepository
    positions: PositionRepository
    windows: WindowRepository
    obligations: ObligationRepository
    idempotency: IdempotencyRepository
    audit: AuditRepository

    def _bind(self, connection: AsyncConnection) -> None:
        self.participants = ParticipantRepository(connection)
        self.positions = PositionRepository(connection)
        self.windows = WindowRepository(connection)
        self.obligations = ObligationRepository(connection)
        self.idempotency = IdempotencyRepository(connection, idempotency_keys)
        self.audit = AuditRepository(connection, audit, "settlement")
        self.before_commit(self.audit.flush)
