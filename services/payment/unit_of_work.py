"""Payment's unit of work: one transaction, its repositories."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from meshlib.idempotency import IdempotencyRepository
from meshlib.storage import SqlUnitOfWork
from services.payment.repository import PaymentRepository
from services.payment.tables import idempotency_keys


class PaymentUnitOfWork(SqlUnitOfWork):
    """Binds payment's repositories to one transaction."""

    payments: PaymentRepository
    idempotency: IdempotencyRepository

    def _bind(self, connection: AsyncConnection) -> None:
        self.payments = PaymentRepository(connection)
        self.idempotency = IdempotencyRepository(connection, idempotency_keys)
