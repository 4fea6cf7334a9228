"""The unit-of-work base: one transaction, the repositories bound to it, explicit commit.

A service subclasses :class:`SqlUnitOfWork` and builds its repositories in
``_bind(connection)``. Leaving the ``async with`` block without ``commit()`` rolls back, so
a failed rule never leaves half a change behind.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Self

from opentelemetry import trace
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncTransaction

from meshlib.storage.database import Database

log = logging.getLogger("meshlib.storage")
_tracer = trace.get_tracer("meshlib.storage")

# PostgreSQL serialization failure and deadlock; SQLite "database is locked".
_RETRYABLE_SQLSTATES = {"40001", "40P01"}


class SqlUnitOfWork:
    """One database transaction with repositories bound to its connection."""

    def __init__(self, database: Database, *, read_only: bool = False) -> None:
        self.database = database
        self.read_only = read_only
        self._connection: AsyncConnection | None = None
        self._transaction: AsyncTransaction | None = None
        self._committed = False
        self._span: trace.Span | None = None
        self._writer: asyncio.Lock | None = None
        self._before_commit: list[Callable[[], Awaitable[None]]] = []

    @property
    def connection(self) -> AsyncConnection:
        """The connection of the open transaction."""
        if self._connection is None:
            raise RuntimeError("unit of work is not open")
        return self._connection

    def _bind(self, connection: AsyncConnection) -> None:
        """Create repositories on ``connection``; subclasses override."""

    def before_commit(self, write: Callable[[], Awaitable[None]]) -> None:
        """Run ``write`` inside the transaction just before it commits (a repository that
        collects rows, like the audit records, inserts them there in one statement)."""
        self._before_commit.append(write)

    async def __aenter__(self) -> Self:
        # One span per transaction: the database hop of the call's trace (no SQL, no values).
        self._span = _tracer.start_span(
            "db.transaction",
            kind=trace.SpanKind.CLIENT,
            attributes={"db.system": self.database.dialect, "db.read_only": self.read_only},
        )
        try:
            if self.database.is_sqlite and not self.read_only:
                await self.database.sqlite_writer.acquire()
                self._writer = self.database.sqlite_writer  # held: only now is it ours to release
            connection = await self.database.engine.connect()
        except BaseException:
            self._release_writer()
            self._span.end()
            raise
        if self.database.is_sqlite:
            connection = await connection.execution_options(sqlite_begin="DEFERRED" if self.read_only else "IMMEDIATE")
        try:
            self._transaction = await connection.begin()
        except BaseException:
            await connection.close()
            self._release_writer()
            self._span.end()
            raise
        self._connection = connection
        self._committed = False
        self._before_commit = []
        self._bind(connection)
        return self

    def _release_writer(self) -> None:
        if self._writer is not None:
            self._writer.release()
        self._writer = None

    async def commit(self) -> None:
        """Make the changes durable."""
        if self._transaction is None:
            raise RuntimeError("unit of work is not open")
        for write in self._before_commit:
            await write()
        await self._transaction.commit()
        self._committed = True

    async def rollback(self) -> None:
        """Drop the changes."""
        if self._transaction is not None and self._transaction.is_active:
            await self._transaction.rollback()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if not self._committed:
                await self.rollback()
        finally:
            try:
                if self._connection is not None:
                    await self._connection.close()
            finally:
                self._release_writer()
            self._connection = None
            self._transaction = None
            if self._span is not None:
                self._span.set_attribute("db.committed", self._committed)
                if exc is not None:
                    self._span.set_status(trace.StatusCode.ERROR, type(exc).__name__)
                self._span.end()
                self._span = None


def is_retryable(error: BaseException) -> bool:
    """Serialization failures, deadlocks and a locked SQLite file may be retried whole."""
    if isinstance(error, DBAPIError):
        sqlstate = getattr(error.orig, "sqlstate", None) or getattr(error.orig, "pgcode", None)
        if sqlstate in _RETRYABLE_SQLSTATES:
            return True
        if isinstance(error, OperationalError) and "database is locked" in str(error.orig):
            return True
    return False
