"""What every identity use case shares: the clock, idempotent replays, and events."""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from sqlalchemy.exc import IntegrityError

from meshlib.events import Invalidation, InvalidationBus
from meshlib.idempotency import validate_request_id
from services.identity.unit_of_work import IdentityUnitOfWork

log = logging.getLogger("identity")

Clock = Callable[[], dt.datetime]
UnitOfWorkFactory = Callable[..., IdentityUnitOfWork]


def utc_now() -> dt.datetime:
    """The real clock (tests inject their own)."""
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class RequestKey:
    """An AIP-155 idempotency key with the request's fingerprint and how to record the answer.

    ``encode`` turns the use case's result into the bytes replayed later (the servicer
    supplies it, so the service layer never sees protobuf; it also drops what is shown
    only once, such as secrets).
    """

    scope: str
    method: str
    request_id: str
    fingerprint: str
    encode: Callable[[Any], bytes]

    def __post_init__(self) -> None:
        validate_request_id(self.request_id)


@dataclass(frozen=True)
class Replayed:
    """The saved answer of an earlier call with the same request_id and payload."""

    payload: bytes


async def replayed(uow: IdentityUnitOfWork, key: RequestKey) -> Replayed | None:
    """The first answer for a replay; raises REQUEST_ID_REUSED for a changed payload."""
    saved = await uow.idempotency.lookup(key.scope, key.method, key.request_id, key.fingerprint)
    return Replayed(saved) if saved is not None else None


async def remember(uow: IdentityUnitOfWork, key: RequestKey, result: Any, now: dt.datetime) -> None:
    """Save the answer in the same transaction as the change it describes."""
    await uow.idempotency.save(key.scope, key.method, key.request_id, key.fingerprint, key.encode(result), now)


P = ParamSpec("P")
T = TypeVar("T")


def rerun_on_duplicate_key(use_case: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Run a one-transaction use case once more when a concurrent twin inserted the same key.

    Two identical requests racing each other both miss the saved answer; the loser's insert
    of the idempotency key (or of a unique username) fails. Re-running it finds what the
    winner committed: the saved answer for a replay, or the clean domain error.
    """

    @functools.wraps(use_case)
    async def run(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await use_case(*args, **kwargs)
        except IntegrityError:
            log.info("concurrent duplicate request; re-running it", extra={"use_case": use_case.__name__})
            return await use_case(*args, **kwargs)

    return run


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
