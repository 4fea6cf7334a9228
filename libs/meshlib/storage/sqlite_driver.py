"""aiosqlite's interface, run on the event loop's own thread.

aiosqlite gives every connection a worker thread and hands each statement over through a
queue and a future: two thread switches and a GIL hand-over per statement. Profiles of the
pay path (docs/benchmarks.md) put a third of each service's Python CPU there. A SQLite
statement on a local WAL file takes microseconds, so running it inline is cheaper than the
hand-over; the cost is that a commit's fsync briefly blocks the loop.

Running inline is only safe if no statement ever waits for a lock another coroutine of the
same process holds (it would block the loop that must release it). Every write transaction
therefore takes :attr:`Database.sqlite_writer` (an ``asyncio.Lock``) before ``BEGIN
IMMEDIATE``; read transactions (``BEGIN DEFERRED``) never wait in WAL mode. Other
processes on the same file (the operator's migrations, a test reading the file) are still
covered by SQLite's busy timeout.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Generator
from typing import Any

import aiosqlite


class _RunNow:
    """Stands in for aiosqlite's queue to the worker thread: runs each item as it is put.

    SQLAlchemy's adapter puts ``(future, function)`` on ``connection._tx`` itself (to set
    the isolation level), so the queue, not only :meth:`InlineConnection._execute`, runs inline.
    """

    def put_nowait(self, item: tuple[asyncio.Future[Any] | None, Callable[[], Any]]) -> None:
        future, function = item
        try:
            result = function()
        except BaseException as error:  # handed to the awaiting caller, as the worker thread does
            if future is not None and not future.done():
                future.set_exception(error)
            return
        if future is not None and not future.done():
            future.set_result(result)


class InlineConnection(aiosqlite.Connection):
    """An :class:`aiosqlite.Connection` whose calls run at once on the calling thread."""

    def __init__(self, connector: Callable[[], sqlite3.Connection]) -> None:
        super().__init__(connector, iter_chunk_size=64)  # the worker thread is created, never started
        self._tx = _RunNow()  # type: ignore[assignment]

    async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self._running or self._connection is None:
            raise ValueError("Connection closed")
        return fn(*args, **kwargs)

    async def _connect(self) -> InlineConnection:
        if self._connection is None:
            self._connection = self._connector()
        return self

    def __await__(self) -> Generator[Any, None, InlineConnection]:
        return self._connect().__await__()

    def stop(self) -> None:  # type: ignore[override]
        """Close the sqlite3 connection (there is no thread to stop)."""
        self._running = False
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def inline_creator(path: str, *, timeout_seconds: float) -> Callable[[], Any]:
    """An ``async_creator`` for SQLAlchemy's aiosqlite dialect that opens inline connections."""

    async def create() -> InlineConnection:
        # check_same_thread stays on: the connection is only ever used on the loop's thread.
        return await InlineConnection(lambda: sqlite3.connect(path, timeout=timeout_seconds))

    return create
