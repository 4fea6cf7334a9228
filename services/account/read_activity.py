"""What wallets read with each consent, for the customer's consent dashboard at the bank.

Every read the consent checks admit (AccountReadService) is counted here in memory, per
consent, UTC day and permission; a background loop adds the counts to the store every few
seconds in one transaction (one upsert per consent, day and permission touched), so a read
never waits on a write. What a replica has not saved yet is lost if it dies (a few seconds'
counts, for a display, never for a limit: reads_per_day is ReadQuota's, durable).

``recent`` answers from the store plus this replica's unsaved counts.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from meshlib.idempotency import upsert
from meshlib.periodic import Periodic
from meshlib.storage import Transactions, as_utc
from services.account.tables import consent_read_activity

log = logging.getLogger("services.account.read_activity")

# Days of counts kept in the store (the dashboard shows at most MAX_DAYS).
KEEP_DAYS = 35
MAX_DAYS = 31
DEFAULT_DAYS = 7

_table = consent_read_activity


@dataclass(frozen=True)
class ReadCount:
    """The reads of one permission made with a consent on one UTC day."""

    consent_id: str
    day: dt.date
    permission: str
    count: int
    last_read_at: dt.datetime


class ReadActivityRepository:
    """Counts in the store: added to (never overwritten), read back per consent."""

    def __init__(self, connection: AsyncConnection, dialect: str) -> None:
        self._connection = connection
        self._dialect = dialect

    async def add(self, counts: list[ReadCount]) -> None:
        """Add each count to its row (created when missing); the later last read wins."""
        for item in counts:
            statement = upsert(self._dialect)(_table).values(
                consent_id=item.consent_id,
                day=item.day,
                permission=item.permission,
                count=item.count,
                last_read_at=item.last_read_at,
            )
            excluded = statement.excluded
            statement = statement.on_conflict_do_update(
                index_elements=[_table.c.consent_id, _table.c.day, _table.c.permission],
                set_={
                    "count": _table.c.count + excluded.count,
                    "last_read_at": sa.case(
                        (_table.c.last_read_at < excluded.last_read_at, excluded.last_read_at),
                        else_=_table.c.last_read_at,
                    ),
                },
            )
            await self._connection.execute(statement)

    async def since(self, consent_id: str, first_day: dt.date) -> list[ReadCount]:
        """The consent's counts from ``first_day`` on."""
        query = sa.select(_table).where(_table.c.consent_id == consent_id, _table.c.day >= first_day)
        return [
            ReadCount(row.consent_id, row.day, row.permission, int(row.count), as_utc(row.last_read_at))
            for row in await self._connection.execute(query)
        ]

    async def purge(self, before: dt.date) -> int:
        """Forget the counts of days before ``before``."""
        result = await self._connection.execute(_table.delete().where(_table.c.day < before))
        return result.rowcount or 0


_Key = tuple[str, dt.date, str]


class ReadActivity:
    """Counts reads in memory and saves them in the background (see the module's doc)."""

    def __init__(
        self,
        uow: Callable[..., Any],
        flush_seconds: float,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        purge_every_seconds: float = 3600,
    ) -> None:
        self._transactions = Transactions(uow)
        self._clock = clock
        self._pending: dict[_Key, tuple[int, dt.datetime]] = {}
        self._lock = asyncio.Lock()
        self._purge_every = purge_every_seconds
        self._last_purge: dt.datetime | None = None
        self._periodic = Periodic("read-activity", flush_seconds, self.flush)

    def note(self, consent_id: str, permission: str, at: dt.datetime) -> None:
        """One read admitted (no I/O)."""
        key = (consent_id, at.date(), permission)
        count, last = self._pending.get(key, (0, at))
        self._pending[key] = (count + 1, max(last, at))

    async def flush(self) -> None:
        """Add what was counted since the last flush to the store (kept for the next one on failure)."""
        async with self._lock:
            taken, self._pending = self._pending, {}
            if taken:
                counts = [ReadCount(c, d, p, n, last) for (c, d, p), (n, last) in taken.items()]
                try:
                    await self._transactions.run(lambda uow: uow.read_activity.add(counts))
                except BaseException:
                    self._merge_back(taken)
                    raise
            await self._purge_now_and_then()

    def _merge_back(self, taken: dict[_Key, tuple[int, dt.datetime]]) -> None:
        for key, (count, last) in taken.items():
            newer, newer_last = self._pending.get(key, (0, last))
            self._pending[key] = (count + newer, max(last, newer_last))

    async def _purge_now_and_then(self) -> None:
        now = self._clock()
        if self._last_purge is not None and (now - self._last_purge).total_seconds() < self._purge_every:
            return
        self._last_purge = now
        before = now.date() - dt.timedelta(days=KEEP_DAYS)
        purged = await self._transactions.run(lambda uow: uow.read_activity.purge(before))
        if purged:
            log.info("old read activity purged", extra={"count": purged})

    async def recent(self, consent_id: str, days: int) -> list[ReadCount]:
        """The consent's reads over the last ``days`` UTC days, newest day first, then by permission."""
        first_day = self._clock().date() - dt.timedelta(days=days - 1)
        stored = await self._transactions.read(lambda uow: uow.read_activity.since(consent_id, first_day))
        merged: dict[tuple[dt.date, str], tuple[int, dt.datetime]] = {
            (item.day, item.permission): (item.count, item.last_read_at) for item in stored
        }
        for (pending_consent, day, permission), (count, last) in list(self._pending.items()):
            if pending_consent != consent_id or day < first_day:
                continue
            before, before_last = merged.get((day, permission), (0, last))
            merged[(day, permission)] = (before + count, max(last, before_last))
        ordered = sorted(merged.items(), key=lambda item: (-item[0][0].toordinal(), item[0][1]))
        return [ReadCount(consent_id, day, permission, n, last) for (day, permission), (n, last) in ordered]

    async def start(self) -> None:
        """Start saving in the background."""
        await self._periodic.start()

    async def stop(self) -> None:
        """Stop the loop and save what is left."""
        await self._periodic.stop()
        try:
            await self.flush()
        except Exception:
            log.exception("read activity not saved at shutdown")
