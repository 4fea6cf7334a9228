"""Storage: async SQLAlchemy engines (SQLite by default, PostgreSQL by URL), versioned
Alembic migrations per service, and the unit-of-work base class."""

from meshlib.storage.bulk import BulkInsert
from meshlib.storage.database import Database, as_utc, database_url_for
from meshlib.storage.uow import SqlUnitOfWork, retry_on_conflict

__all__ = ["BulkInsert", "Database", "SqlUnitOfWork", "as_utc", "database_url_for", "retry_on_conflict"]
