"""The account service's unit of work: one transaction, its repositories."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from meshlib.audit import AuditRepository
from meshlib.idempotency import IdempotencyRepository
from meshlib.storage import SqlUnitOfWork
from services.account.credit_repository import CreditRepository
from services.account.read_activity import ReadActivityRepository
from services.account.repository import (
    AccountRepository,
    ConsentReadRepository,
    EntryRepository,
    TransferRepository,
)
from services.account.tables import audit, idempotency_keys


class AccountUnitOfWork(SqlUnitOfWork):
    """Binds the ledger's repositories to one transaction."""

    accounts: AccountRepository
    transfers: TransferRepository
    entries: EntryRepository
    consent_reads: ConsentReadRepository
    read_activity: ReadActivityRepository
    idempotency: IdempotencyRepository
    audit: AuditRepository
    credit: CreditRepository

    def _bind(self, connection: AsyncConnection) -> None:
        # Row locks only where the store has them; SQLite's BEGIN IMMEDIATE serialises writers.
        row_locks = self.database.is_postgres
        self.accounts = AccountRepository(connection, row_locks=row_locks)
        self.transfers = TransferRepository(connection, row_locks=row_locks)
        self.entries = EntryRepository(connection)
        self.consent_reads = ConsentReadRepository(connection, self.database.dialect)
        self.read_activity = ReadActivityRepository(connection, self.database.dialect)
        self.idempotency = IdempotencyRepository(connection, idempotency_keys)
        self.audit = AuditRepository(connection, audit, "account")
        self.credit = CreditRepository(connection, row_locks=row_locks)
        self.before_commit(self.audit.flush)
