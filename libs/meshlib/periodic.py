"""A background job that runs every few seconds until the process stops (metrics
collectors, sweeps). A failing run is logged and retried at the next tick, never fatal."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from meshlib.faults import as_unavailable

log = logging.getLogger("meshlib.periodic")


class Periodic:
    """Run ``job`` every ``interval_seconds``; hook ``start``/``stop`` into a Lifecycle. An
    interval of 0 (or less) means never: ``start`` runs nothing (a job switched off by its setting)."""

    def __init__(self, name: str, interval_seconds: float, job: Callable[[], Awaitable[None]]) -> None:
        self.name = name
        self._interval = interval_seconds
        self._job = job
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Begin running in the background (nothing when the interval says never)."""
        if self._interval > 0:
            self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        """Stop; an in-flight run is cancelled."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self._job()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                fault = as_unavailable(error)
                if fault is None:
                    log.exception("periodic job failed", extra={"job": self.name})
                else:  # a store or peer away for a moment: the next tick tries again
                    log.warning("periodic job skipped: %s", fault.reason, extra={"job": self.name})
            await asyncio.sleep(self._interval)
