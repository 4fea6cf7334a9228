"""Every writing transaction of a use case, run one way: whole, retried, idempotent when keyed.

:class:`Transactions` runs ``operation(uow)`` in one unit of work and commits it. With an
:class:`IdempotencyKey` the first answer is saved (encoded by the use case's :class:`Codec`)
in the same transaction as the change; a repeat with the same fingerprint gets it back
without running the operation, a changed payload fails ALREADY_EXISTS / REQUEST_ID_REUSED.

Database trouble never reaches the service layer as a SQLAlchemy error:

* a serialization failure, a deadlock or a locked SQLite file runs the whole transaction
  again, with backoff; still failing, ABORTED / CONCURRENT_MODIFICATION;
* a unique-key race (two first requests for the same key or resource) runs it again once
  or twice: the rerun sees the winner's rows, so it replays the saved answer or raises the
  domain's own error; a duplicate that persists is ALREADY_EXISTS / RESOURCE_ALREADY_EXISTS,
  any other broken constraint ABORTED.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Protocol, Self, TypeVar

from sqlalchemy.exc import DBAPIError, IntegrityError

# A module import: meshlib.idempotency itself imports from meshlib.storage.
import meshlib.idempotency
from meshlib.errors import Aborted, AlreadyExists, MeshError
from meshlib.storage.uow import is_retryable

if TYPE_CHECKING:
    from meshlib.idempotency import IdempotencyRepository

log = logging.getLogger("meshlib.storage")

T = TypeVar("T")

TRANSACTION_ATTEMPTS = 6
DUPLICATE_RERUNS = 2
_BACKOFF_SECONDS = 0.002

# PostgreSQL unique_violation; SQLite names the constraint in its message.
_UNIQUE_VIOLATION = "23505"


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    """An AIP-155 key: who asks (scope), which rpc (method), the client's request_id, and the
    fingerprint of the request's payload. The request_id is validated on construction."""

    scope: str
    method: str
    request_id: str
    fingerprint: str

    def __post_init__(self) -> None:
        meshlib.idempotency.validate_request_id(self.request_id)


@dataclass(frozen=True, slots=True)
class Codec(Generic[T]):
    """How a use case's answer is saved for replays, and read back."""

    encode: Callable[[T], bytes]
    decode: Callable[[bytes], T]

    @classmethod
    def json(cls, to_data: Callable[[T], Any], from_data: Callable[[Any], T]) -> Codec[T]:
        """A compact, key-sorted JSON snapshot of ``to_data(answer)``; ``from_data`` inverts it."""
        return cls(
            lambda answer: json.dumps(to_data(answer), separators=(",", ":"), sort_keys=True).encode(),
            lambda saved: from_data(json.loads(saved)),
        )


class CommitAndRaise(Exception):
    """Raised by an operation to keep what it wrote and still fail with ``error``: a refusal
    that must leave a trace (a failed sign-in attempt counted towards a lock-out). No answer
    is saved, so a retry with the same key runs again."""

    def __init__(self, error: MeshError) -> None:
        super().__init__(error)
        self.error = error


class UnitOfWork(Protocol):
    """What the runner needs of a service's unit of work (every ``SqlUnitOfWork`` subclass)."""

    idempotency: IdempotencyRepository

    async def commit(self) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


U = TypeVar("U", bound=UnitOfWork)


def utc_now() -> dt.datetime:
    """The wall clock, in UTC."""
    return dt.datetime.now(dt.UTC)


def _is_unique_violation(error: IntegrityError) -> bool:
    sqlstate = getattr(error.orig, "sqlstate", None) or getattr(error.orig, "pgcode", None)
    return sqlstate == _UNIQUE_VIOLATION or "UNIQUE constraint failed" in str(error.orig)


async def retry_on_conflict(
    transaction: Callable[[], Awaitable[T]],
    *,
    attempts: int = TRANSACTION_ATTEMPTS,
    duplicate_reruns: int = DUPLICATE_RERUNS,
) -> T:
    """Run ``transaction`` (a whole unit of work), again on a conflict, as the module says.

    The one retry loop of the mesh: :meth:`Transactions.run` runs through it, and code that
    opens its own unit of work (a group commit) may call it directly.
    """
    conflicts = duplicates = 0
    while True:
        try:
            return await transaction()
        except IntegrityError as error:
            duplicates += 1
            if duplicates > duplicate_reruns:
                if _is_unique_violation(error):
                    raise AlreadyExists("the resource already exists", reason="RESOURCE_ALREADY_EXISTS") from error
                raise Aborted("the change conflicts with stored data, retry the request") from error
            log.info("unique key race, running the transaction again", extra={"attempt": duplicates})
        except DBAPIError as error:
            if not is_retryable(error):
                raise
            conflicts += 1
            if conflicts >= attempts:
                raise Aborted("concurrent modification, retry the request") from error
            log.info("transaction conflict, retrying", extra={"attempt": conflicts})
            await asyncio.sleep(_BACKOFF_SECONDS * 2**conflicts * random.uniform(0.5, 1.5))


class Transactions(Generic[U]):
    """Runs a use case's transactions: one unit of work each, committed, retried, idempotent."""

    def __init__(self, unit_of_work: Callable[..., U], *, clock: Callable[[], dt.datetime] = utc_now) -> None:
        self._unit_of_work = unit_of_work
        self.clock = clock

    async def run(
        self,
        operation: Callable[[U], Awaitable[T]],
        *,
        key: IdempotencyKey | None = None,
        codec: Codec[T] | None = None,
    ) -> T:
        """``operation(uow)`` in one committed transaction; with ``key``, once per key.

        A repeat of ``key`` answers ``codec.decode`` of the first answer, unless the payload
        changed (ALREADY_EXISTS / REQUEST_ID_REUSED). An error raised by ``operation`` rolls
        the transaction back and saves nothing, so a retry with the same key runs again
        (:class:`CommitAndRaise` keeps the writes and still saves no answer); unless a twin
        request with the key committed meanwhile, whose answer is then returned.
        """
        if (key is None) != (codec is None):
            raise TypeError("an idempotent transaction needs both a key and a codec")

        async def transaction() -> T:
            async with self._unit_of_work() as uow:
                if key is not None and codec is not None:
                    saved = await uow.idempotency.lookup(key.scope, key.method, key.request_id, key.fingerprint)
                    if saved is not None:
                        return codec.decode(saved)
                try:
                    result = await operation(uow)
                except CommitAndRaise as refusal:
                    await uow.commit()
                    raise refusal.error from None
                if key is not None and codec is not None:
                    await uow.idempotency.save(
                        key.scope, key.method, key.request_id, key.fingerprint, codec.encode(result), self.clock()
                    )
                await uow.commit()
                return result

        try:
            return await retry_on_conflict(transaction)
        except MeshError:
            if key is None or codec is None:
                raise
            # A twin of this request may have committed between our look-up and the refusal
            # (it changed the state our operation then refused): the twin's answer is ours.
            saved = await self.read(
                lambda uow: uow.idempotency.lookup(key.scope, key.method, key.request_id, key.fingerprint)
            )
            if saved is None:
                raise
            return codec.decode(saved)

    async def read(self, operation: Callable[[U], Awaitable[T]]) -> T:
        """``operation(uow)`` in a read-only transaction (nothing to commit), retried on conflict."""

        async def transaction() -> T:
            async with self._unit_of_work(read_only=True) as uow:
                return await operation(uow)

        return await retry_on_conflict(transaction)
