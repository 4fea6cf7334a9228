"""Per-partner caps on open streams (WatchPayments), held across gateway replicas.

``RedisStreamSlots`` (when Redis is configured): each open stream holds a slot in a sorted
set per partner, scored by its lease's end on Redis' own clock (no skew between replicas).
A replica renews the leases of its open streams every third of the lease; a replica that
crashes stops renewing, so its slots lapse within one lease and never leak. Should Redis be
unreachable, the cap is held per replica until it is back.

``LocalStreamSlots`` (the embedded default, one gateway): a counter in the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import Counter
from typing import Protocol

from meshlib.redis_client import connect, is_cluster

log = logging.getLogger("gateway.streams")

# Takes a slot when fewer than the cap are live (lapsed ones are dropped first): 1, else 0.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + lease, ARGV[3])
redis.call('PEXPIRE', KEYS[1], lease * 2)
return 1
"""

# Extends the leases of the slots named in ARGV[2..] (a slot that lapsed meanwhile is live
# again: its stream is).
_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], now + lease, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], lease * 2)
return #ARGV - 1
"""


class StreamSlots(Protocol):
    """Counts a partner's open streams against its cap."""

    async def acquire(self, owner: str, cap: int) -> str | None:
        """A slot for one more stream of ``owner``; None when ``cap`` are open."""

    def release(self, owner: str, slot: str) -> None:
        """Give the slot back (never waits: it runs from a closing stream)."""

    async def start(self) -> None:
        """Begin any background work."""

    async def close(self) -> None:
        """Stop it."""


class LocalStreamSlots:
    """The cap per process (embedded default: one gateway)."""

    def __init__(self) -> None:
        self._open: Counter[str] = Counter()

    async def acquire(self, owner: str, cap: int) -> str | None:
        """A slot unless ``cap`` streams of ``owner`` are open in this process."""
        if self._open[owner] >= cap:
            return None
        self._open[owner] += 1
        return "local"

    def release(self, owner: str, slot: str) -> None:
        """One stream fewer."""
        self._open[owner] -= 1
        if self._open[owner] <= 0:
            del self._open[owner]

    def open_count(self, owner: str) -> int:
        """Streams of ``owner`` open in this process."""
        return self._open[owner]

    async def start(self) -> None:
        """Nothing to start."""

    async def close(self) -> None:
        """Nothing to close."""


class RedisStreamSlots:
    """The cap across every gateway replica sharing one Redis (see the module)."""

    def __init__(
        self, url: str, *, prefix: str = "obm:streams:", lease_seconds: float = 30.0, timeout_seconds: float = 0.5
    ) -> None:
        self._cluster = is_cluster(url)
        self._redis = connect(url, socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds)
        self._prefix = prefix
        self._lease_ms = max(1, int(lease_seconds * 1000))
        self._acquire = self._redis.register_script(_ACQUIRE)
        self._renew = self._redis.register_script(_RENEW)
        self._held: dict[str, set[str]] = {}  # owner -> this replica's open slots in Redis
        self._fallback = LocalStreamSlots()  # while Redis cannot be reached
        self._background: set[asyncio.Task[None]] = set()
        self._renewer: asyncio.Task[None] | None = None

    async def acquire(self, owner: str, cap: int) -> str | None:
        """A shared slot, or a local one while Redis is unreachable."""
        slot = uuid.uuid4().hex
        try:
            taken = await self._acquire(keys=[self._prefix + owner], args=[cap, self._lease_ms, slot])
        except Exception:
            log.warning("stream slots: Redis unreachable, capping streams per replica", exc_info=True)
            return None if await self._fallback.acquire(owner, cap) is None else "local"
        if not taken:
            return None
        self._held.setdefault(owner, set()).add(slot)
        return slot

    def release(self, owner: str, slot: str) -> None:
        """Give the slot back in the background (it lapses by itself should this fail)."""
        if slot == "local":
            self._fallback.release(owner, slot)
            return
        held = self._held.get(owner)
        if held is not None:
            held.discard(slot)
            if not held:
                del self._held[owner]
        task = asyncio.ensure_future(self._remove(owner, slot))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _remove(self, owner: str, slot: str) -> None:
        try:
            await self._redis.zrem(self._prefix + owner, slot)
        except Exception:
            log.warning("stream slots: could not release a slot; it lapses with its lease")

    async def renew_once(self) -> None:
        """Extend the leases of every stream open here."""
        held = [(owner, sorted(slots)) for owner, slots in self._held.items() if slots]
        if not held:
            return
        if self._cluster:  # owners' keys live on different nodes: one script call each
            for owner, slots in held:
                await self._renew(keys=[self._prefix + owner], args=[self._lease_ms, *slots])
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for owner, slots in held:
                await self._renew(keys=[self._prefix + owner], args=[self._lease_ms, *slots], client=pipe)
            await pipe.execute()

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self._lease_ms / 3000)
            try:
                await self.renew_once()
            except Exception:
                log.warning("stream slots: could not renew leases; will retry", exc_info=True)

    async def start(self) -> None:
        """Begin renewing this replica's leases."""
        self._renewer = asyncio.create_task(self._renew_forever(), name="stream-slot-leases")

    async def close(self, *, release: bool = True) -> None:
        """Stop renewing and hand this replica's slots back (``release=False``: as a crash would)."""
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        if release:
            for owner, slots in list(self._held.items()):
                for slot in list(slots):
                    self.release(owner, slot)
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self._redis.aclose()
