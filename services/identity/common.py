"""What every identity use case shares: the clock, the saved-answer type, and events."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import TypeVar

from meshlib.events import Invalidation, InvalidationBus
from services.identity.unit_of_work import IdentityUnitOfWork

log = logging.getLogger("identity")

Clock = Callable[[], dt.datetime]
UnitOfWorkFactory = Callable[..., IdentityUnitOfWork]

# A mutating use case answers its fresh result, or on a replay the first answer as the caller's
# codec reads it back (the servicer saves the response message: what is shown once, such as a
# secret, is left out). The use case never looks inside it.
Saved = TypeVar("Saved")


def utc_now() -> dt.datetime:
    """The real clock (tests inject their own)."""
    return dt.datetime.now(dt.UTC)


class EventPublisher:
    """Publishes invalidations after commit; a bus outage is logged, never fails the call
    (verifiers fall back to introspection with a short cache TTL)."""

    def __init__(self, bus: InvalidationBus) -> None:
        self.bus = bus

    async def publish(self, kind: str, key: str, detail: str = "") -> None:
        """Tell every verifier that ``kind``/``key`` changed (``detail``: its new state)."""
        try:
            await self.bus.publish(Invalidation(kind, key, detail))
        except Exception:
            log.warning("could not publish an invalidation", extra={"kind": kind, "detail": detail})
