"""Async database engines with durable settings.

SQLite (the embedded default, one file per service) runs in WAL mode with
``synchronous=FULL`` and takes the write lock at ``BEGIN IMMEDIATE``; read-only units of
work begin deferred. Its statements run on the event loop's thread
(:mod:`meshlib.storage.sqlite_driver`), so a process' write transactions queue on
:attr:`Database.sqlite_writer` rather than inside SQLite. PostgreSQL runs through asyncpg
with ``synchronous_commit=on``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any, overload

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from meshlib.config import StorageSettings
from meshlib.storage.sqlite_driver import inline_creator

SQLITE_BUSY_TIMEOUT_MS = 30_000
# Page cache per connection (KiB; SQLite's default is 2 MiB): index pages of a growing table
# stay in memory between transactions instead of being read back from the OS.
SQLITE_CACHE_KIB = 32_768
# Checkpoint the WAL into the database file every 10,000 pages (~40 MiB) instead of every
# 1,000: a page written by many commits is copied back (and the file synced) once, not once
# per commit. Durability is unchanged: every commit still syncs the WAL (synchronous=FULL).
SQLITE_WAL_AUTOCHECKPOINT_PAGES = 10_000


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
            kwargs["async_creator"] = inline_creator(
                parsed.database or ":memory:", timeout_seconds=SQLITE_BUSY_TIMEOUT_MS / 1000
            )
        elif self.dialect == "postgresql":
            kwargs.update(
                pool_size=pool_size,
                max_overflow=pool_size,
                connect_args={"server_settings": {"synchronous_commit": "on", "application_name": application_name}},
            )
        self.engine: AsyncEngine = create_async_engine(self.url, **kwargs)
        # One writer at a time per process, queued here (see meshlib.storage.sqlite_driver).
        self.sqlite_writer = asyncio.Lock()
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
        cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
        cursor.execute(f"PRAGMA wal_autocheckpoint={SQLITE_WAL_AUTOCHECKPOINT_PAGES}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        mode = connection.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        connection.exec_driver_sql(f"BEGIN {mode}")
