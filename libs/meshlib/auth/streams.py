"""An open stream follows its caller's rights: it ends when its token expires, or when the
token, its consent or its partner is revoked, paused or suspended, with the status and
reason a new call would get.

The auth interceptor runs every server-streaming rpc through :func:`guard_stream`. The
stream's messages are produced in a task of their own (so the context the handler sets
stays in one task), while a watcher:

* ends the stream at the token's ``exp`` (UNAUTHENTICATED ``TOKEN_EXPIRED``: clients renew
  the token and resume from their cursor) and at the consent's expiry when known;
* is woken by every change the invalidation bus brings (:class:`RevocationCache`), and by
  the process's one re-check tick when its token is no longer active (the tick checks the
  distinct tokens of all open streams in one call: the safety net while the bus is up, and
  how a revocation reaches a stream without a shared bus).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import grpc

from meshlib.auth.context import Caller
from meshlib.auth.revocation import RevocationCache
from meshlib.auth.verifier import RevocationCheck
from meshlib.errors import MeshError, PermissionDenied, Unauthenticated

log = logging.getLogger("meshlib.auth.streams")

T = TypeVar("T")

# How often a stream re-checks when the revocation check is not a RevocationCache.
DEFAULT_RECHECK_SECONDS = 1.0

_ITEM, _DONE, _FAILED = "item", "done", "failed"


def token_expired() -> Unauthenticated:
    """What a stream whose token reached its ``exp`` ends with (a new call would get it too)."""
    return Unauthenticated("the access token has expired", reason="TOKEN_EXPIRED")


async def check_rights(
    caller: Caller, revocation: RevocationCheck | None, *, clock: Callable[[], float] = time.time
) -> tuple[MeshError | None, float]:
    """One look at ``caller``'s rights now: the refusal a new call would get (or None), and
    when they end by time at the latest (token, or consent expiry when known)."""
    token_end = caller.expires_at.timestamp()
    consent_end: float | None = None
    try:
        if isinstance(revocation, RevocationCache):
            consent_end = await revocation.recheck_stream(caller)
        elif revocation is not None:
            await revocation.check(caller)
    except MeshError as refused:
        return refused, token_end
    now = clock()
    if now >= token_end:
        return token_expired(), token_end
    if consent_end is not None and now >= consent_end:
        return PermissionDenied("the consent has expired", reason="CONSENT_EXPIRED"), consent_end
    return None, min(token_end, consent_end or token_end)


async def rights_ended(
    caller: Caller,
    revocation: RevocationCheck | None,
    *,
    clock: Callable[[], float] = time.time,
    until: float | None = None,
) -> MeshError:
    """Wait until ``caller`` may no longer be served; the error a new call would get then.
    ``until``: the rights were just checked and last at most until then (no look first)."""
    while True:
        if until is None:
            refused, until = await check_rights(caller, revocation, clock=clock)
            if refused is not None:
                return refused
        wait = max(until - clock(), 0.0)
        if isinstance(revocation, RevocationCache):
            await revocation.wait_for_stream(caller, wait)
        else:
            await asyncio.sleep(min(wait, DEFAULT_RECHECK_SECONDS))
        until = None


async def guard_stream(
    items: AsyncIterator[T],
    caller: Caller,
    revocation: RevocationCheck | None,
    *,
    clock: Callable[[], float] = time.time,
) -> AsyncIterator[T]:
    """Yield ``items`` while ``caller``'s rights last; then end the stream with the refusal."""
    # Looked at before the handler starts: a refusal then ends the call before the handler
    # has touched it (its initial metadata, say), never concurrently with it.
    refused, until = await check_rights(caller, revocation, clock=clock)
    if refused is not None:
        with contextlib.suppress(Exception):
            await items.aclose()  # type: ignore[attr-defined]
        raise refused
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(maxsize=1)

    async def pump() -> None:
        try:
            async for item in items:
                await queue.put((_ITEM, item))
            await queue.put((_DONE, None))
        except asyncio.CancelledError:
            raise
        except BaseException as failure:  # the handler's own error ends the stream as before
            await queue.put((_FAILED, failure))
        finally:
            with contextlib.suppress(Exception):
                await items.aclose()  # type: ignore[attr-defined]

    producer = asyncio.ensure_future(pump())

    async def watch() -> None:
        try:
            refusal: BaseException = await rights_ended(caller, revocation, clock=clock, until=until)
        except asyncio.CancelledError:
            raise
        except Exception as failure:  # never leave the stream waiting on a dead watcher
            refusal = failure
        producer.cancel()
        # The handler's clean-up (an upstream call cancelled, a slot released) runs to its end
        # before the refusal goes out, so the call is never touched from two tasks at once.
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await producer
        with contextlib.suppress(asyncio.QueueEmpty):
            kind, value = queue.get_nowait()  # a message waiting behind the refusal is not sent
            if kind == _FAILED and isinstance(value, grpc.aio.AbortError):
                refusal = value  # the handler already ended the call itself
        queue.put_nowait((_FAILED, refusal))

    watcher = asyncio.ensure_future(watch())
    try:
        while True:
            kind, value = await queue.get()
            if kind == _ITEM:
                yield value
            elif kind == _DONE:
                return
            else:
                raise value
    finally:
        for task in (watcher, producer):
            task.cancel()
        for task in (watcher, producer):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
