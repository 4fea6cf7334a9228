"""Transactional outboxes handed on under a lease: the one way a service relays the rows it
wrote with its changes (payment's state changes, account's movements) to identity's partner
event log.

* A service writes outbox rows in the transaction of the change, numbered by the store.
* One replica at a time relays, the holder of a lease row (:func:`relays_table`): it reads
  the rows after its recorded position, hands them to the sink in order (each once by its
  source key: a sink ignores a row sent again), then records the new position. A relay that
  dies between the two sends the same rows again, which the sink ignores.
* PostgreSQL numbers rows when inserted, not when committed: a missing number may be a
  transaction still running. The relay waits ``gap_seconds`` for it before passing it (a
  rolled-back transaction leaves a gap for ever).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Generic, Protocol, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from meshlib.faults import as_unavailable

log = logging.getLogger("meshlib.outbox")

BATCH = 500
MAX_IDLE_RELAY_SECONDS = 1.0


class Numbered(Protocol):
    """An outbox row: its number in the outbox."""

    @property
    def seq(self) -> int: ...


R = TypeVar("R", bound=Numbered)
R_contra = TypeVar("R_contra", bound=Numbered, contravariant=True)


class OutboxStore(Protocol[R]):
    """The outbox and its relay's lease row."""

    async def claim(self, owner: str, now: dt.datetime, lease: dt.timedelta) -> int | None:
        """Take or renew the lease; the relayed position when ``owner`` holds it, else None."""

    async def rows_after(self, seq: int, limit: int) -> list[R]:
        """Rows after ``seq``, in order."""

    async def advance(self, owner: str, position: int) -> bool:
        """Record the relayed position, if ``owner`` still holds the lease."""


class OutboxSink(Protocol[R_contra]):
    """Where relayed rows go (identity's intake; a fake in unit tests)."""

    async def append(self, rows: list[R_contra]) -> None:
        """Append each row once, in order (a row sent again is ignored)."""


def relays_table(metadata: sa.MetaData, name: str = "outbox_relays") -> sa.Table:
    """The relays' positions and leases: one row per relay."""
    return sa.Table(
        name,
        metadata,
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("position", sa.BigInteger, nullable=False),
        sa.Column("owner", sa.String(64), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
    )


def _insert_if_absent(connection: AsyncConnection, table: sa.Table) -> Any:
    """An INSERT that skips a row whose key exists (PostgreSQL's ON CONFLICT DO NOTHING,
    SQLite's INSERT OR IGNORE)."""
    if connection.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=list(table.primary_key.columns))
    if connection.dialect.name == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing(index_elements=list(table.primary_key.columns))
    return table.insert()


async def claim_lease(
    connection: AsyncConnection, table: sa.Table, name: str, owner: str, now: dt.datetime, lease: dt.timedelta
) -> int | None:
    """Take or renew the lease of relay ``name`` (in the caller's transaction); its position
    when ``owner`` holds it, None while another replica does."""
    taken = await connection.execute(
        table.update()
        .where(
            table.c.name == name,
            sa.or_(table.c.owner == owner, table.c.lease_until.is_(None), table.c.lease_until < now),
        )
        .values(owner=owner, lease_until=now + lease)
    )
    if not taken.rowcount:
        if await connection.scalar(sa.select(table.c.name).where(table.c.name == name)) is not None:
            return None  # another replica relays
        # Two replicas starting together both find no row: the second insert does nothing
        # (never a duplicate-key error) and that replica leaves the relay to the first.
        created = await connection.execute(
            _insert_if_absent(connection, table).values(name=name, position=0, owner=owner, lease_until=now + lease)
        )
        if not created.rowcount:
            return None
    return int(await connection.scalar(sa.select(table.c.position).where(table.c.name == name)) or 0)


async def advance_lease(connection: AsyncConnection, table: sa.Table, name: str, owner: str, position: int) -> bool:
    """Record relay ``name``'s position if ``owner`` still holds its lease."""
    moved = await connection.execute(
        table.update().where(table.c.name == name, table.c.owner == owner).values(position=position)
    )
    return bool(moved.rowcount)


def contiguous(position: int, rows: list[R], gaps: dict[int, float], now: float, grace: float) -> list[R]:
    """The rows to relay now: those following ``position`` without a gap, passing a gap only
    once it has lasted ``grace`` seconds (``gaps``: when each missing number was first seen)."""
    taken: list[R] = []
    expected = position + 1
    for row in rows:
        while expected < row.seq:
            first_seen = gaps.setdefault(expected, now)
            if now - first_seen < grace:
                return taken
            gaps.pop(expected, None)
            expected += 1
        taken.append(row)
        expected = row.seq + 1
    for seq in [s for s in gaps if s < expected]:
        del gaps[seq]
    return taken


class LeasedRelay(Generic[R]):
    """Relays an outbox to a sink while this replica holds the lease, one round at a time."""

    def __init__(
        self,
        store: OutboxStore[R],
        sink: OutboxSink[R],
        *,
        clock: Callable[[], dt.datetime],
        lease: dt.timedelta = dt.timedelta(seconds=10),
        gap_seconds: float = 3.0,
        interval_seconds: float = 0.1,
        monotonic: Callable[[], float] = time.monotonic,
        batch: int = BATCH,
    ) -> None:
        self._store = store
        self._sink = sink
        self._clock = clock
        self._lease = lease
        self._gap_seconds = gap_seconds
        self._interval = interval_seconds
        self._monotonic = monotonic
        self._batch = batch
        self._owner = uuid.uuid4().hex
        self._gaps: dict[int, float] = {}
        self._lease_until = 0.0  # monotonic time until which this replica's lease is fresh
        self._position = 0
        self._idle = 0.0  # how long an idle relay waits before it looks again
        self._after = 0.0

    async def relay_once(self) -> int:
        """Relay what follows the recorded position when this replica holds the lease; how many."""
        if self._monotonic() >= self._lease_until:
            position = await self._store.claim(self._owner, self._clock(), self._lease)
            if position is None:
                return 0
            self._position = max(self._position, position)
            self._lease_until = self._monotonic() + self._lease.total_seconds() / 2
        rows = await self._store.rows_after(self._position, self._batch)
        taken = contiguous(self._position, rows, self._gaps, self._monotonic(), self._gap_seconds)
        if not taken:
            return 0
        await self._sink.append(taken)
        if not await self._store.advance(self._owner, taken[-1].seq):
            self._lease_until = 0.0  # lost the lease meanwhile: the new holder sends them (once)
            return 0
        self._position = taken[-1].seq
        return len(taken)

    async def relay_due(self) -> None:
        """Relay until caught up, if due: an idle relay looks less and less often (up to once
        a second) until rows come again."""
        if self._monotonic() < self._after:
            return
        relayed = await self.relay_once()
        while relayed == self._batch:
            relayed = await self.relay_once()
        self._idle = 0.0 if relayed else min(MAX_IDLE_RELAY_SECONDS, max(self._interval, self._idle * 2))
        self._after = self._monotonic() + self._idle


async def run_ticks(what: str, tick: Callable[[], Awaitable[None]], interval_seconds: float) -> None:
    """Run ``tick`` every interval for ever; a failing round (a peer away) backs off up to 5 s,
    logged once per streak (a lost store or peer as one line with its reason)."""
    delay = interval_seconds
    while True:
        await asyncio.sleep(delay)
        try:
            await tick()
            delay = interval_seconds
        except asyncio.CancelledError:
            raise
        except Exception as error:
            if delay == interval_seconds:
                fault = as_unavailable(error)
                if fault is None:
                    log.warning("%s failed; backing off", what, exc_info=True)
                else:  # the store or a peer away for a moment: one line, not a traceback
                    log.warning("%s: %s; backing off", what, fault.reason)
            delay = min(5.0, delay * 2)
