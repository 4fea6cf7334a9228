"""``RefreshingCache``: values fetched from another service, kept for a TTL, one fetch per key.

The caches of live state from other services (consents and token statuses from identity,
partner limits, settlement participants) share three rules, so they live here once:

- **one fetch per key at a time**: the calls that miss together share one fetch instead of
  each sending its own (a wave of payments: dozens of identical calls);
- **refresh ahead**: a hit on an entry older than ``refresh_ahead`` of the TTL (0.8) answers
  from it and starts that one fetch in the background, so a key in use never expires on the
  hot path, where every call racing for it would wait (under load, a wave split in two);
  no value served is ever older than the TTL;
- **invalidation wins**: :meth:`invalidate` drops the entry and disowns a fetch under way,
  whose answer (which may predate the change) is then handed to its waiters but not kept.

A fetch that fails fails every caller waiting for it; ``stale_grace_seconds`` lets a caller
fall back to an expired entry that young (a status check during an identity outage).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

log = logging.getLogger("meshlib.cache")


class BoundedMap(Generic[K, V]):
    """A map of at most ``capacity`` entries: the least recently used leaves first, so a
    long-lived process never grows without bound.

    ``on_evict(key, value)`` is told of each entry pushed out by the capacity (not of
    :meth:`pop`, :meth:`drop_where` or :meth:`clear`): for a value holding something that
    must be handed back.
    """

    def __init__(self, capacity: int, on_evict: Callable[[K, V], None] | None = None) -> None:
        self._items: OrderedDict[K, V] = OrderedDict()
        self._capacity = capacity
        self._on_evict = on_evict

    def get(self, key: K) -> V | None:
        """The value (now the most recently used), or None."""
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def peek(self, key: K) -> V | None:
        """The value without counting it as a use, or None."""
        return self._items.get(key)

    def put(self, key: K, value: V) -> None:
        """Set the value; evicts the least recently used entries beyond the capacity."""
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self._capacity:
            evicted_key, evicted = self._items.popitem(last=False)
            if self._on_evict is not None:
                self._on_evict(evicted_key, evicted)

    def items(self) -> list[tuple[K, V]]:
        """The entries, least recently used first (a copy: safe to change the map meanwhile)."""
        return list(self._items.items())

    def pop(self, key: K) -> None:
        """Forget ``key`` (nothing if absent)."""
        self._items.pop(key, None)

    def drop_where(self, predicate: Callable[[K, V], bool]) -> None:
        """Forget every entry whose key and value match ``predicate``."""
        for key in [key for key, value in self._items.items() if predicate(key, value)]:
            del self._items[key]

    def clear(self) -> None:
        """Forget everything."""
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


class RefreshingCache(Generic[K, V]):
    """A bounded (least recently used out first) cache of fetched values; see the module."""

    def __init__(
        self,
        ttl_seconds: float,
        *,
        refresh_ahead: float = 0.8,
        stale_grace_seconds: float = 0.0,
        capacity: int = 50_000,
        clock: Callable[[], float] = time.monotonic,
        name: str = "cache",
    ) -> None:
        if ttl_seconds < 0 or not 0 < refresh_ahead <= 1 or stale_grace_seconds < 0 or capacity < 1:
            raise ValueError("ttl and grace must be >= 0, refresh_ahead in (0, 1], capacity >= 1")
        self._ttl = ttl_seconds
        self._refresh_after = ttl_seconds * refresh_ahead
        self._grace = stale_grace_seconds
        self._clock = clock
        self._name = name
        self._entries: BoundedMap[K, tuple[float, V]] = BoundedMap(capacity)
        self._inflight: dict[K, asyncio.Future[V]] = {}

    async def get(self, key: K, fetch: Callable[[], Awaitable[V]], *, max_age: float | None = None) -> V:
        """The value of ``key``: cached, or from ``fetch()`` (shared with concurrent callers).

        ``max_age`` (below the TTL) asks for a fresher value than the TTL allows, for this
        call only (an open stream re-checking a token's status).
        """
        now = self._clock()
        entry = self._entries.get(key)
        if entry is not None:
            age = now - entry[0]
            if age < (self._ttl if max_age is None else min(self._ttl, max_age)):
                if age >= self._refresh_after and key not in self._inflight:
                    self._start(key, fetch)
                return entry[1]
        pending = self._inflight.get(key) or self._start(key, fetch)
        try:
            return await asyncio.shield(pending)
        except Exception:
            if entry is not None and now - entry[0] < self._ttl + self._grace:
                log.warning("fetch failed; serving the last known value", extra={"cache": self._name})
                return entry[1]
            raise

    def peek(self, key: K) -> V | None:
        """The cached value, fresh or not, without fetching (None when absent)."""
        entry = self._entries.peek(key)
        return entry[1] if entry is not None else None

    def age(self, key: K) -> float | None:
        """Seconds since ``key``'s value was fetched or put (None when absent)."""
        entry = self._entries.peek(key)
        return self._clock() - entry[0] if entry is not None else None

    def put(self, key: K, value: V) -> None:
        """Keep ``value`` as fetched now (a value fetched for many keys at once)."""
        self._entries.put(key, (self._clock(), value))

    def invalidate(self, key: K) -> None:
        """Forget ``key``; a fetch of it under way is answered but not kept."""
        self._entries.pop(key)
        self._inflight.pop(key, None)

    def drop_where(self, predicate: Callable[[K, V], bool]) -> None:
        """Forget every entry whose key and value match ``predicate``."""
        self._entries.drop_where(lambda key, entry: predicate(key, entry[1]))

    def clear(self) -> None:
        """Forget everything, and disown every fetch under way."""
        self._entries.clear()
        self._inflight.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def _start(self, key: K, fetch: Callable[[], Awaitable[V]]) -> asyncio.Future[V]:
        pending = asyncio.ensure_future(self._fetch_and_keep(key, fetch))
        self._inflight[key] = pending
        pending.add_done_callback(lambda done: self._forget(key, done))
        return pending

    async def _fetch_and_keep(self, key: K, fetch: Callable[[], Awaitable[V]]) -> V:
        value = await fetch()
        if self._inflight.get(key) is asyncio.current_task():  # not disowned by an invalidation
            self._entries.put(key, (self._clock(), value))
        return value

    def _forget(self, key: K, done: asyncio.Future[V]) -> None:
        if self._inflight.get(key) is done:
            del self._inflight[key]
        if not done.cancelled():
            done.exception()  # retrieved: its waiters got it; a failed refresh lets the entry age
