"""A small invalidation bus: "this consent / partner / token changed" reaches every
process within a second.

Redis pub/sub in production (every gateway replica and service subscribes); an in-process
bus for the embedded single-machine default. Subscribers also get a ``resync`` call after a
reconnect, since pub/sub drops messages while a subscriber is away.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from meshlib.faults import as_unavailable
from meshlib.redis_client import connect, is_cluster

log = logging.getLogger("meshlib.events")

DEFAULT_CHANNEL = "openbank:invalidations"


@dataclass(frozen=True)
class Invalidation:
    """Something changed: ``kind`` ("consent", "partner", "token", ...) and its id."""

    kind: str
    key: str
    detail: str = ""


Listener = Callable[[Invalidation], Awaitable[None]]
ResyncListener = Callable[[], Awaitable[None]]


class InvalidationBus(Protocol):
    """Publish and subscribe to invalidations."""

    async def publish(self, event: Invalidation) -> None:
        """Tell every subscriber, in every process on the bus."""

    def subscribe(self, listener: Listener, on_resync: ResyncListener | None = None) -> None:
        """Register a listener (before :meth:`start`)."""

    async def start(self) -> None:
        """Begin delivering events."""

    async def close(self) -> None:
        """Stop delivering and release connections."""


class InProcessBus:
    """Delivers to listeners in this process only (the embedded default)."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener, on_resync: ResyncListener | None = None) -> None:
        """Register a listener."""
        self._listeners.append(listener)

    async def publish(self, event: Invalidation) -> None:
        """Call every listener now."""
        for listener in list(self._listeners):
            try:
                await listener(event)
            except Exception:
                log.exception("invalidation listener failed")

    def healthy(self) -> bool:
        """Always: every publication in this process reaches its listeners."""
        return True

    async def start(self) -> None:
        """Nothing to start."""

    async def close(self) -> None:
        """Nothing to close."""


class RedisBus:
    """Redis pub/sub across processes; reconnects and asks listeners to resync after a gap.

    On a Redis Cluster (``redis+cluster://``) the bus uses sharded pub/sub (SPUBLISH /
    SSUBSCRIBE): the channel lives on one shard, its master and replicas, instead of every
    message being broadcast over the whole cluster bus; a failover of that shard breaks the
    subscription, which reconnects to the new master and resyncs like any other gap.
    """

    def __init__(self, url: str, channel: str = DEFAULT_CHANNEL) -> None:
        self._cluster = is_cluster(url)
        self._redis = connect(url, socket_connect_timeout=1, health_check_interval=5)
        self._channel = channel
        self._listeners: list[Listener] = []
        self._resync: list[ResyncListener] = []
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._healthy = False

    def healthy(self) -> bool:
        """Subscribed, and done resyncing after the last gap (no change can be missed now)."""
        return self._healthy

    def subscribe(self, listener: Listener, on_resync: ResyncListener | None = None) -> None:
        """Register a listener (and what to do after missing messages)."""
        self._listeners.append(listener)
        if on_resync is not None:
            self._resync.append(on_resync)

    async def publish(self, event: Invalidation) -> None:
        """Publish to every process subscribed to the channel."""
        payload = json.dumps({"kind": event.kind, "key": event.key, "detail": event.detail})
        if self._cluster:
            await self._redis.spublish(self._channel, payload)
        else:
            await self._redis.publish(self._channel, payload)

    async def start(self) -> None:
        """Subscribe in the background; returns once the first subscription is live."""
        self._task = asyncio.create_task(self._run(), name="invalidation-bus")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), 5)

    async def _run(self) -> None:
        if self._cluster:
            await self._run_sharded()
            return
        first = True
        while True:
            try:
                async with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self._channel)
                    self._ready.set()
                    if not first:
                        for resync in self._resync:
                            await resync()
                    first = False
                    self._healthy = True
                    async for message in pubsub.listen():
                        await self._deliver(message.get("data"))
            except asyncio.CancelledError:
                self._healthy = False
                raise
            except Exception as error:
                self._healthy = False
                # A lost connection is expected in a failover: one line; anything else keeps its traceback.
                log.warning("invalidation bus lost Redis; reconnecting", exc_info=as_unavailable(error) is None)
                await asyncio.sleep(0.5)

    async def _run_sharded(self) -> None:
        first = True
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.ssubscribe(self._channel)
                self._ready.set()
                if not first:
                    for resync in self._resync:
                        await resync()
                first = False
                self._healthy = True
                while True:
                    message = await pubsub.get_sharded_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None and message.get("type") == "smessage":
                        await self._deliver(message.get("data"))
            except asyncio.CancelledError:
                self._healthy = False
                raise
            except Exception as error:
                self._healthy = False
                # A lost connection is expected in a failover: one line; anything else keeps its traceback.
                log.warning(
                    "invalidation bus lost its Redis Cluster shard; reconnecting",
                    exc_info=as_unavailable(error) is None,
                )
                with contextlib.suppress(Exception):
                    await self._redis.nodes_manager.initialize()  # the slot map after a failover
                await asyncio.sleep(0.5)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def _deliver(self, data: object) -> None:
        try:
            decoded = json.loads(data) if isinstance(data, (bytes, str)) else None
            event = Invalidation(str(decoded["kind"]), str(decoded["key"]), str(decoded.get("detail", "")))
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring a malformed invalidation message")
            return
        for listener in list(self._listeners):
            try:
                await listener(event)
            except Exception:
                log.exception("invalidation listener failed")

    async def close(self) -> None:
        """Stop listening and close the connection pool."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._redis.aclose()


def bus_for(redis_url: str | None, channel: str = DEFAULT_CHANNEL) -> InvalidationBus:
    """Redis when configured, otherwise the in-process default."""
    return RedisBus(redis_url, channel) if redis_url else InProcessBus()
