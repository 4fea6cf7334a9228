"""Transactional outboxes handed on under a lease: the one way a service relays the rows it
wrote with its changes (payment's state changes, account's movements and credit events) to
identity's partner event log.

* A service writes outbox rows in the transaction of the change, numbered by the store.
* One replica at a time relays, the holder of a lease row (:func:`relays_table`): it reads
  the rows after its recorded position, hands them to the sink in order (each once by its
  source key: a sink ignores a row sent again), then records the new position. A relay that
  dies between the two sends the same rows again, which the sink ignores.
* PostgreSQL numbers rows when inserted, not when committed: a missing number may be a
  transaction still running. The relay waits ``gap_seconds`` for it before passing it (a
  rolled-back transaction leaves a gap for ever).
* Retention: relayed rows recorded before the retention period are deleted, hourly, never a
  row not relayed yet.

A service keeps only what is its own: its outbox table, how a table row becomes its row
(:class:`SqlOutboxStore`), how its row becomes an event (meshlib.event_intake); the
:class:`RelayLoop` runs the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from meshlib.config import OutboxRelaySettings
from meshlib.faults import as_unavailable
from meshlib.periodic import Periodic
from meshlib.storage.database import as_utc
from meshlib.storage.uow import SqlUnitOfWork

log = logging.getLogger("meshlib.outbox")

BATCH = 500
MAX_IDLE_RELAY_SECONDS = 1.0
RETENTION_INTERVAL_SECONDS = 3600.0


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


def columns_as(row_type: Callable[..., R]) -> Callable[[Any], R]:
    """A row of an outbox query made ``row_type`` (a dataclass) by column name, its stored
    timestamps aware UTC (SQLite hands back naive ones)."""
    names = [field.name for field in dataclasses.fields(row_type)]  # type: ignore[arg-type]

    def convert(row: Any) -> R:
        values = row._mapping
        return row_type(**{n: as_utc(v) if isinstance(v, dt.datetime) else v for n in names for v in (values[n],)})

    return convert


class SqlOutboxStore(Generic[R]):
    """An outbox table (``seq`` numbered by the store, ``event_time``) and its relay's lease row
    ``name`` of ``relays`` (:func:`relays_table`) in a service's database; the rows of ``query``
    (by default the whole table) become the service's own ``row_type`` by column name.

    ``mark_purged``, when given, records in the purge's transaction, before any delete, that
    everything up to a number is gone (payment's WatchPayments refuses an older cursor, never
    answers short); the purge then deletes that whole prefix, not just the old rows in it.
    """

    def __init__(
        self,
        uow: Callable[..., SqlUnitOfWork],
        table: sa.Table,
        relays: sa.Table,
        name: str,
        row_type: Callable[..., R],
        *,
        query: sa.Select[Any] | None = None,
        mark_purged: Callable[[AsyncConnection, int], Awaitable[None]] | None = None,
    ) -> None:
        self._uow = uow
        self._table = table
        self._relays = relays
        self._name = name
        self._to_row = columns_as(row_type)
        self._query = sa.select(table) if query is None else query
        self._mark_purged = mark_purged

    async def claim(self, owner: str, now: dt.datetime, lease: dt.timedelta) -> int | None:
        """Take or renew the relay's lease; its position when this replica holds it."""
        async with self._uow() as uow:
            position = await claim_lease(uow.connection, self._relays, self._name, owner, now, lease)
            await uow.commit()
            return position

    async def rows_after(self, seq: int, limit: int) -> list[R]:
        """Outbox rows after ``seq``, in order."""
        seq_column = self._table.c.seq
        query = self._query.where(seq_column > seq).order_by(seq_column).limit(limit)
        async with self._uow(read_only=True) as uow:
            return [self._to_row(r) for r in await uow.connection.execute(query)]

    async def advance(self, owner: str, position: int) -> bool:
        """Record the relayed position, if this replica still holds the lease."""
        async with self._uow() as uow:
            moved = await advance_lease(uow.connection, self._relays, self._name, owner, position)
            await uow.commit()
            return moved

    async def purge(self, recorded_before: dt.datetime) -> int:
        """Delete relayed rows older than the cutoff (never a row not yet relayed); how many."""
        table, relays = self._table, self._relays
        async with self._uow() as uow:
            connection = uow.connection
            relayed = await connection.scalar(sa.select(relays.c.position).where(relays.c.name == self._name))
            old = (table.c.event_time < recorded_before, table.c.seq <= int(relayed or 0))
            if self._mark_purged is None:
                deleted = await connection.execute(table.delete().where(*old))
            else:
                upto = await connection.scalar(sa.select(sa.func.max(table.c.seq)).where(*old))
                if upto is None:
                    return 0
                await self._mark_purged(connection, int(upto))
                deleted = await connection.execute(table.delete().where(table.c.seq <= upto))
            await uow.commit()
            return deleted.rowcount or 0


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


@dataclass(frozen=True)
class Retention:
    """Relayed rows recorded more than ``period`` ago go, every ``interval_seconds``."""

    period: dt.timedelta
    purge: Callable[[dt.datetime], Awaitable[int]]  # deletes relayed rows before a cutoff; how many
    interval_seconds: float = RETENTION_INTERVAL_SECONDS


class RelayLoop(Generic[R]):
    """An outbox's background work in a replica: every interval, what the service does after
    commit (``each_tick``: payment's tail waking its streams) and then the relay while this
    replica holds the lease (:class:`LeasedRelay`; none without a sink: the rows wait); the
    retention purge hourly. ``name`` ("payment-events") names its task, log lines and job."""

    def __init__(
        self,
        name: str,
        store: OutboxStore[R],
        sink: OutboxSink[R] | None,
        *,
        clock: Callable[[], dt.datetime],
        lease: dt.timedelta = dt.timedelta(seconds=10),
        gap_seconds: float = 3.0,
        interval_seconds: float = 0.1,
        retention: Retention | None = None,
        each_tick: Callable[[], Awaitable[None]] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._clock = clock
        self._interval = interval_seconds
        self._retention = retention
        self._each_tick = each_tick
        self._relay = (
            None
            if sink is None
            else LeasedRelay(
                store,
                sink,
                clock=clock,
                lease=lease,
                gap_seconds=gap_seconds,
                interval_seconds=interval_seconds,
                monotonic=monotonic,
            )
        )
        retention_seconds = 0.0 if retention is None else retention.interval_seconds  # 0: never
        self._retention_job = Periodic(f"{name}-retention", retention_seconds, self._purge)
        self._task: asyncio.Task[None] | None = None

    async def relay_once(self) -> int:
        """Relay what follows the recorded position when this replica holds the lease; how many."""
        return 0 if self._relay is None else await self._relay.relay_once()

    async def tick(self) -> None:
        """One round: ``each_tick``, then relay until caught up (an idle relay looks less often)."""
        if self._each_tick is not None:
            await self._each_tick()
        if self._relay is not None:
            await self._relay.relay_due()

    async def purge_once(self) -> int:
        """Retention: relayed rows older than the period go; how many."""
        if self._retention is None:
            return 0
        return await self._retention.purge(self._clock() - self._retention.period)

    async def _purge(self) -> None:
        removed = await self.purge_once()
        if removed:
            log.info("purged relayed %s", self.name.replace("-", " "), extra={"rows": removed, "outbox": self.name})

    async def start(self) -> None:
        """Begin ticking (when there is anything to tick), and the retention."""
        if self._relay is not None or self._each_tick is not None:
            what = f"{self.name.replace('-', ' ')} relay"
            self._task = asyncio.create_task(run_ticks(what, self.tick, self._interval), name=f"{self.name}-relay")
        await self._retention_job.start()

    async def stop(self) -> None:
        """Stop both (rows not relayed yet wait for the next holder of the lease)."""
        await self._retention_job.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def relay_loop(
    name: str,
    store: OutboxStore[R],
    sink: OutboxSink[R] | None,
    settings: OutboxRelaySettings,
    *,
    clock: Callable[[], dt.datetime],
    purge: Callable[[dt.datetime], Awaitable[int]] | None = None,
    each_tick: Callable[[], Awaitable[None]] | None = None,
) -> RelayLoop[R]:
    """An outbox's relay loop as the service's settings time it; with ``purge``, relayed rows
    past ``event_retention_days`` go (without, they are kept)."""
    return RelayLoop(
        name,
        store,
        sink,
        clock=clock,
        lease=dt.timedelta(seconds=settings.event_relay_lease_seconds),
        gap_seconds=settings.event_relay_gap_seconds,
        interval_seconds=settings.event_tail_seconds,
        retention=None if purge is None else Retention(dt.timedelta(days=settings.event_retention_days), purge),
        each_tick=each_tick,
    )


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
