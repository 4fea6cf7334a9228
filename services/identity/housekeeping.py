"""Forget what can no longer matter: expired codes, tokens and assertion ids, and
idempotency keys past their retention. Runs in the background of every replica (the
deletes are idempotent, so replicas racing each other is harmless)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging

from meshlib.idempotency import RETENTION
from meshlib.storage import Transactions
from services.identity.common import Clock, UnitOfWorkFactory
from services.identity.unit_of_work import IdentityUnitOfWork

log = logging.getLogger("identity.housekeeping")

# Access-token records outlive the token a little, so a late introspection still finds them.
ACCESS_TOKEN_RECORD_MARGIN = dt.timedelta(hours=1)


class Housekeeping:
    """Periodic purge of expired rows."""

    def __init__(self, uow: UnitOfWorkFactory, clock: Clock, interval_seconds: float = 600.0) -> None:
        self._tx = Transactions(uow, clock=clock)
        self._clock = clock
        self._interval = interval_seconds
        self._task: asyncio.Task[None] | None = None

    async def purge_once(self) -> int:
        """Delete everything expired now; returns how many rows went."""
        now = self._clock()

        async def purge(uow: IdentityUnitOfWork) -> int:
            removed = await uow.grants.purge_expired(now, now - ACCESS_TOKEN_RECORD_MARGIN)
            removed += await uow.authorization_requests.purge_expired(now)
            removed += await uow.decoupled.purge_expired(now)
            return removed + await uow.idempotency.purge(now - RETENTION)

        return await self._tx.run(purge)

    async def start(self) -> None:
        """Begin the background loop."""
        self._task = asyncio.create_task(self._run(), name="identity-housekeeping")

    async def stop(self) -> None:
        """Stop the loop."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                removed = await self.purge_once()
                if removed:
                    log.info("purged expired rows", extra={"rows": removed})
            except Exception:
                log.warning("housekeeping failed; will retry", exc_info=True)
