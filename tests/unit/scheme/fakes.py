"""An in-memory store behind the simulator's unit of work, for use-case tests.

A unit of work works on a copy of the store and writes it back on commit, so a use case that
fails leaves nothing behind, as with the database.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from schemesim.domain.transfers import ClearingRecord, Outcome, PaymentReturn


@dataclass
class Store:
    """The whole state: transfers by message id, and the returns feed in order."""

    transfers: dict[str, ClearingRecord] = field(default_factory=dict)
    feed: list[PaymentReturn] = field(default_factory=list)

    def copy(self) -> Store:
        return Store(dict(self.transfers), list(self.feed))


class FakeClearingRepository:
    """The repository's methods over a :class:`Store`."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def get(self, message_id: str, *, for_update: bool = False) -> ClearingRecord | None:
        return self._store.transfers.get(message_id)

    async def add(self, record: ClearingRecord) -> None:
        assert record.message_id not in self._store.transfers, "duplicate primary key"
        self._store.transfers[record.message_id] = record

    async def replace(self, record: ClearingRecord) -> None:
        if self._store.transfers[record.message_id].outcome is Outcome.DROPPED:
            self._store.transfers[record.message_id] = record

    async def lock_feed(self) -> None:
        return None

    async def due_returns(self, now: dt.datetime, limit: int) -> list[ClearingRecord]:
        in_feed = {item.message_id for item in self._store.feed}
        due = [
            record
            for record in self._store.transfers.values()
            if record.outcome is Outcome.RETURN
            and record.return_at is not None
            and record.return_at <= now
            and record.message_id not in in_feed
        ]
        return sorted(due, key=lambda r: (r.return_at, r.message_id))[:limit]

    async def append_returns(self, returns: list[PaymentReturn], now: dt.datetime) -> None:
        for item in returns:
            self._store.feed.append(dataclasses.replace(item, sequence=len(self._store.feed) + 1))

    async def returns_after(self, sequence: int, limit: int) -> list[PaymentReturn]:
        return [item for item in self._store.feed if (item.sequence or 0) > sequence][:limit]


class FakeUnitOfWork:
    """One transaction over a copy of the store."""

    def __init__(self, store: Store, *, read_only: bool = False) -> None:
        self._store = store
        self.read_only = read_only
        self.commits = 0

    async def __aenter__(self) -> Self:
        self._working = self._store.copy()
        self.clearing = FakeClearingRepository(self._working)
        return self

    async def commit(self) -> None:
        assert not self.read_only, "a read-only unit of work never commits"
        self._store.transfers, self._store.feed = self._working.transfers, self._working.feed

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None
