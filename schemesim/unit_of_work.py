"""The simulator's unit of work: one transaction and its repository."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from meshlib.storage import SqlUnitOfWork
from schemesim.repository import ClearingRepository


class SchemeUnitOfWork(SqlUnitOfWork):
    """Binds the clearing repository to one transaction."""

    clearing: ClearingRepository

    def _bind(self, connection: AsyncConnection) -> None:
        self.clearing = ClearingRepository(connection)
