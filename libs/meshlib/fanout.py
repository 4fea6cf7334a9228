"""Wake the open streams whose log grew, without polling the database per stream.

A stream keeps its position in a log keyed by partner (the database is the truth) and, when it
has read everything, waits on a :class:`Subscription` for a sign that the log grew past that
position; then it reads the database again after its own position. The sign never carries the
events, so a lost or duplicated sign can only cost a read or delay one, never lose or repeat
an event.

Two implementations of the :class:`NewEventSignal` port, wired by each service's bootstrap:

* :class:`PollingSignal`, the plain one: every waiting stream looks again after a fixed
  interval (one query per stream per interval);
* :class:`Fanout`, the speed-up: signs come from :meth:`Fanout.announce` (the writer's own
  process, a bus listener, or a tailer of the log), and a sweep asks the heads of the keys with
  open streams in ONE query per interval for whatever a lost message missed. Idle streams
  cost nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from meshlib.events import Invalidation, InvalidationBus

log = logging.getLogger("meshlib.fanout")

HeadsQuery = Callable[[list[str]], Awaitable[dict[str, int]]]


class Subscription(Protocol):
    """One stream's interest in one key's log."""

    async def wait(self, position: int) -> None:
        """Return once the log may hold entries after ``position`` (the stream has read
        everything up to it, whether or not it passed the stream's filter)."""

    def close(self) -> None:
        """The stream ended."""


class NewEventSignal(Protocol):
    """The port: how a stream learns that its key's log grew."""

    def subscribe(self, key: str) -> Subscription:
        """Interest in ``key``, taken before the stream's first read (so no sign is missed)."""


class _Sleep:
    def __init__(self, seconds: float) -> None:
        self._seconds = seconds

    async def wait(self, position: int) -> None:
        await asyncio.sleep(self._seconds)

    def close(self) -> None:
        pass


class PollingSignal:
    """The plain signal: every stream reads again after ``poll_seconds``."""

    def __init__(self, poll_seconds: float) -> None:
        self._seconds = poll_seconds

    def subscribe(self, key: str) -> Subscription:
        """A subscription that only sleeps."""
        return _Sleep(self._seconds)


class _Interest:
    def __init__(self, owner: Fanout, key: str) -> None:
        self._owner = owner
        self.key = key
        self.head = 0  # the highest head announced since the subscription began
        self._look = False  # a resync asked for one more read
        self._woken = asyncio.Event()

    def wake(self, head: int | None) -> None:
        if head is None:
            self._look = True
        else:
            self.head = max(self.head, head)
        self._woken.set()

    async def wait(self, position: int) -> None:
        while self.head <= position and not self._look:
            self._woken.clear()
            await self._woken.wait()
        self._look = False

    def close(self) -> None:
        self._owner._drop(self)


class Fanout:
    """Signs per key for the streams open in this process (see the module)."""

    def __init__(self, *, sweep: HeadsQuery | None = None, sweep_seconds: float = 2.0) -> None:
        self._interests: dict[str, set[_Interest]] = {}
        self._sweep = sweep
        self._sweep_seconds = sweep_seconds
        self._task: asyncio.Task[None] | None = None

    def subscribe(self, key: str) -> Subscription:
        """Interest in ``key`` until closed."""
        interest = _Interest(self, key)
        self._interests.setdefault(key, set()).add(interest)
        return interest

    def _drop(self, interest: _Interest) -> None:
        found = self._interests.get(interest.key)
        if found is not None:
            found.discard(interest)
            if not found:
                del self._interests[interest.key]

    def open_keys(self) -> list[str]:
        """The keys with at least one open stream here."""
        return list(self._interests)

    def announce(self, key: str, head: int) -> None:
        """``key``'s log now reaches ``head``: wake its streams that are behind."""
        for interest in list(self._interests.get(key, ())):
            if interest.head < head:
                interest.wake(head)

    def resync(self) -> None:
        """Signs may have been lost (a bus reconnect): every stream reads again."""
        for interests in list(self._interests.values()):
            for interest in list(interests):
                interest.wake(None)

    def attach(self, bus: InvalidationBus, kind: str) -> None:
        """Take signs from ``bus`` messages of ``kind`` (key, detail = the head)."""

        async def on_message(event: Invalidation) -> None:
            if event.kind == kind and event.detail.isdigit():
                self.announce(event.key, int(event.detail))

        async def on_resync() -> None:
            self.resync()

        bus.subscribe(on_message, on_resync)

    async def sweep_once(self) -> None:
        """One query for the heads of every key with open streams; wake those behind."""
        keys = self.open_keys()
        if not keys or self._sweep is None:
            return
        for key, head in (await self._sweep(keys)).items():
            self.announce(key, head)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self._sweep_seconds)
            try:
                await self.sweep_once()
            except Exception:
                log.warning("stream fan-out: the sweep failed; will retry", exc_info=True)

    async def start(self) -> None:
        """Begin the sweep (when there is one)."""
        if self._sweep is not None:
            self._task = asyncio.create_task(self._sweep_forever(), name="fanout-sweep")

    async def close(self) -> None:
        """Stop the sweep."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
