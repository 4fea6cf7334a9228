"""Storage: async SQLAlchemy engines (SQLite by default, PostgreSQL by URL), versioned
Alembic migrations per service, the unit-of-work base class, and the one way to run a
writing transaction (:class:`Transactions`: retried, idempotent when keyed)."""

from meshlib.storage.bulk import BulkInsert
from meshlib.storage.database import Database, as_utc, database_url_for
from meshlib.storage.idempotent import Codec, CommitAndRaise, IdempotencyKey, Transactions, retry_on_conflict
from meshlib.storage.uow import SqlUnitOfWork, is_retryable

__all__ = [
    "BulkInsert",
    "Codec",
    "CommitAndRaise",
    "Database",
    "IdempotencyKey",
    "SqlUnitOfWork",
    "Transactions",
    "as_utc",
    "database_url_for",
    "is_retryable",
    "retry_on_conflict",
]
