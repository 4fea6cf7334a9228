"""Admission in waves: concurrent operations start together so their downstream calls batch well.

The payment saga coalesces each of its downstream calls (:mod:`meshlib.coalesce`), but a batch
only gathers what arrives while the previous one is in flight. With operations that start at
random moments and pass through several coalesced stages, every stage holds a few operations
at a time and the batches stay small (about 4 at 150 payments/s): the fixed cost of each call
and transaction is paid again and again. Admitting operations in *waves* keeps them together:
the operations that arrive while a wave runs wait, then start at once as the next wave, and
because a coalescer releases a whole batch in one event-loop iteration, a wave reaches every
later stage together and leaves each as one batch.

A lone operation on an idle service starts on the next loop iteration (no timer, no added
latency). A wave frees its slot when all its operations ended, or after ``release_after``
seconds, whichever comes first: one slow operation (a downstream retrying) then delays the
next wave by at most that long, never for its whole deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class _Wave:
    """One admitted wave: ends when its last member leaves or its time is up."""

    __slots__ = ("_members", "_on_end", "_timer", "ended")

    def __init__(self, members: int, on_end: Callable[[], None]) -> None:
        self._members = members
        self._on_end = on_end
        self._timer: asyncio.TimerHandle | None = None
        self.ended = False

    def start_timer(self, loop: asyncio.AbstractEventLoop, seconds: float) -> None:
        self._timer = loop.call_later(seconds, self.end)

    def leave(self) -> None:
        self._members -= 1
        if self._members <= 0:
            self.end()

    def end(self) -> None:
        if self.ended:
            return
        self.ended = True
        if self._timer is not None:
            self._timer.cancel()
        self._on_end()


class WaveAdmission:
    """Runs operations in waves of up to ``max_wave``, at most ``max_waves`` waves at a time.

    ``run(operation)`` waits for admission, then awaits ``operation()`` in the caller's own
    task (its context, deadline and cancellation unchanged). A caller cancelled while it waits
    is withdrawn and never runs.
    """

    def __init__(self, *, max_waves: int = 1, max_wave: int = 256, release_after: float = 0.5) -> None:
        if max_waves < 1 or max_wave < 1 or release_after <= 0:
            raise ValueError("max_waves and max_wave must be at least 1, release_after positive")
        self._max_waves = max_waves
        self._max_wave = max_wave
        self._release_after = release_after
        self._waiting: list[asyncio.Future[_Wave]] = []
        self._running = 0
        self._scheduled = False

    @property
    def waiting(self) -> int:
        """Operations waiting for the next wave."""
        return len(self._waiting)

    @property
    def running_waves(self) -> int:
        """Waves whose slot is taken."""
        return self._running

    async def run(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Await ``operation()`` once admitted with the next wave; returns its result."""
        loop = asyncio.get_running_loop()
        ticket: asyncio.Future[_Wave] = loop.create_future()
        self._waiting.append(ticket)
        self._schedule(loop)
        try:
            wave = await ticket
        except asyncio.CancelledError:
            if ticket.done() and not ticket.cancelled():
                ticket.result().leave()  # admitted in the same iteration as the cancellation
            elif ticket in self._waiting:
                self._waiting.remove(ticket)
            raise
        try:
            return await operation()
        finally:
            wave.leave()

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._scheduled or self._running >= self._max_waves or not self._waiting:
            return
        self._scheduled = True
        # call_soon, not now: the callers that arrive in this iteration join the wave.
        loop.call_soon(self._start_wave, loop)

    def _start_wave(self, loop: asyncio.AbstractEventLoop) -> None:
        self._scheduled = False
        tickets = [ticket for ticket in self._waiting[: self._max_wave] if not ticket.done()]
        del self._waiting[: self._max_wave]
        if not tickets:
            self._schedule(loop)
            return
        self._running += 1
        wave = _Wave(len(tickets), lambda: self._wave_ended(loop))
        wave.start_timer(loop, self._release_after)
        for ticket in tickets:
            ticket.set_result(wave)

    def _wave_ended(self, loop: asyncio.AbstractEventLoop) -> None:
        self._running -= 1
        self._schedule(loop)
