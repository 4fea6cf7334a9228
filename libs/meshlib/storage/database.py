"""Async database engines with durable settings.

SQLite (the embedded default, one file per service) runs in WAL mode with
``synchronous=FULL`` and takes the write lock at ``BEGIN IMMEDIATE`` so concurrent writers
queue instead of failing half-way; read-only units of work begin deferred. PostgreSQL runs
through asyncpg with ``synchronous_commit=on``.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, overload

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from meshlib.config import StorageSettings

SQLITE_BUSY_TIMEOUT_MS = 30_000


def database_url_for(service: str, settings: StorageSettings) -> str:
    """The URL a service uses: the configured one, or ``<data_dir>/<service>.db`` (SQLite)."""
    if settings.database_url:
        return normalise_url(settings.database_url)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite+aiosqlite:///{(settings.data_dir / f'{service}.db').resolve()}"


@overload
def as_utc(value: dt.datetime) -> dt.datetime: ...
@overload
def as_utc(value: None) -> None: ...
def as_utc(value: dt.datetime | None) -> dt.datetime | None:
    """A stored timestamp as an aware UTC datetime (SQLite hands back naive ones; all are UTC)."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


def normalise_url(url: str) -> str:
    """Pick the async driver for a plain ``postgresql://`` or ``sqlite://`` URL."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    elif parsed.drivername == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    return parsed.render_as_string(hide_password=False)


class Database:
    """One service's database: an async engine plus what the dialect needs."""

    def __init__(self, url: str, *, pool_size: int = 10, application_name: str = "openbank") -> None:
        self.url = normalise_url(url)
        parsed = make_url(self.url)
        self.dialect = parsed.get_backend_name()
        kwargs: dict[str, Any] = {"pool_pre_ping": False}
        if self.dialect == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        elif self.dialect == "postgresql":
            kwargs.update(
                pool_size=pool_size,
                max_overflow=pool_size,
                connect_args={"server_settings": {"synchronous_commit": "on", "application_name": application_name}},
            )
        self.engine: AsyncEngine = create_async_engine(self.url, **kwargs)
        if self.dialect == "sqlite":
            _install_sqlite_hooks(self.engine)

    @property
    def is_sqlite(self) -> bool:
        """True for the embedded SQLite store."""
        return self.dialect == "sqlite"

    @property
    def is_postgres(self) -> bool:
        """True for PostgreSQL."""
        return self.dialect == "postgresql"

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()


def _install_sqlite_hooks(engine: AsyncEngine) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's begin event, not the driver, decide how transactions start.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # Busy timeout first, so that even switching to WAL waits for a concurrent opener.
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        mode = connection.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        connection.exec_driver_sql(f"BEGIN {mode}")
