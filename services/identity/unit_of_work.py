"""Identity's unit of work: one transaction, its repositories."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from meshlib.idempotency import IdempotencyRepository
from meshlib.storage import SqlUnitOfWork
from services.identity.repository import SigningKeyRepository
from services.identity.tables import idempotency_keys


class IdentityUnitOfWork(SqlUnitOfWork):
    """Binds identity's repositories to one transaction."""

    signing_keys: SigningKeyRepository
    idempotency: IdempotencyRepository

    def _bind(self, connection: AsyncConnection) -> None:
        self.signing_keys = SigningKeyRepository(connection)
        self.idempotency = IdempotencyRepository(connection, idempotency_keys)
