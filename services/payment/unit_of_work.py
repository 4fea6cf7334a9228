"""Payment's unit of work: one transaction, its repositories."""

from __future__ import annotations

from typing import Self

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from meshlib.audit import AuditRepository
from meshlib.idempotency import IdempotencyRepository
from meshlib.storage import SqlUnitOfWork
from services.payment.isolation_repository import IsolationRepository
from services.payment.journal_repository import EventRepository, StepRepository
from services.payment.limits_repository import LimitsRepository
from services.payment.refunds_repository import RefundRepository
from services.payment.repository import PaymentRepository
from services.payment.risk_repository import RiskDecisionRepository
from services.payment.search_repository import PaymentSearchRepository
from services.payment.standing_orders_repository import ScheduledPaymentRepository, StandingOrderRepository
from services.payment.tables import audit, idempotency_keys

# PostgreSQL advisory lock taken by every writing transaction. Writers then commit one at
# a time, like SQLite's BEGIN IMMEDIATE: event sequence numbers become visible in order
# (a stream polling "seq > cursor" never skips one) and limit sums are exact.
WRITER_LOCK_KEY = 0x7061796D  # "paym"


class PaymentUnitOfWork(SqlUnitOfWork):
    """Binds payment's repositories to one transaction."""

    payments: PaymentRepository
    steps: StepRepository
    events: EventRepository
    limits: LimitsRepository
    refunds: RefundRepository
    standing_orders: StandingOrderRepository
    search: PaymentSearchRepository
    scheduled: ScheduledPaymentRepository
    idempotency: IdempotencyRepository
    audit: AuditRepository
    risk: RiskDecisionRepository
    isolation: IsolationRepository

    def _bind(self, connection: AsyncConnection) -> None:
        self.payments = PaymentRepository(connection)
        self.steps = StepRepository(connection)
        self.events = EventRepository(connection)
        self.limits = LimitsRepository(connection)
        self.refunds = RefundRepository(connection)
        self.standing_orders = StandingOrderRepository(connection)
        self.search = PaymentSearchRepository(connection)
        self.scheduled = ScheduledPaymentRepository(connection)
        self.idempotency = IdempotencyRepository(connection, idempotency_keys)
        self.audit = AuditRepository(connection, audit, "payment")
        self.risk = RiskDecisionRepository(connection)
        self.isolation = IsolationRepository(connection)
        self.before_commit(self.audit.flush)

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        if not self.read_only and self.database.is_postgres:
            try:
                await self.connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": WRITER_LOCK_KEY})
            except BaseException:
                await self.__aexit__(None, None, None)
                raise
        return self
