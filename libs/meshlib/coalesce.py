"""Coalescing: the items concurrent callers submit leave as batches, one call for many.

A service that makes the same downstream call for many requests in flight pays the call's
fixed cost (an rpc, a transaction, a commit) once per request. ``Coalescer`` gathers the
items submitted while the event loop is busy into one batch (TigerBeetle's lesson): a lone
caller's item leaves on the next loop iteration, so there is no timer and no added latency
when idle; under load at most ``max_in_flight`` batches are outstanding and the items that
arrive meanwhile wait for the next one, so batches grow instead of calls multiplying.

A batch of one item runs in its caller's context, so a lone request stays one trace with one
interaction id end to end. A batch of several runs in a context of its own (no caller's
interaction id or trace leaks into a call made for many); when spans are exported it runs in
a span of its own that links every caller's span.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from opentelemetry import trace

from meshlib.metrics import record_coalesced_batch
from meshlib.telemetry import tracer, tracing_enabled

log = logging.getLogger("meshlib.coalesce")

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")

BatchSender = Callable[[list[ItemT]], Awaitable[Sequence[ResultT | BaseException]]]


class Coalescer(Generic[ItemT, ResultT]):
    """Sends submitted items in batches through ``send`` and hands each caller its own result.

    ``send`` gets a list of items and returns one outcome per item, in order: a result, or an
    exception that the item's caller then raises. If ``send`` itself raises, every caller of
    that batch raises the same exception. A caller that is cancelled does not withdraw its
    item once the batch has left (the batched calls must be idempotent anyway).
    """

    def __init__(
        self,
        send: BatchSender[ItemT, ResultT],
        *,
        max_batch: int = 500,
        max_in_flight: int = 2,
        name: str = "coalesced batch",
    ) -> None:
        if max_batch < 1 or max_in_flight < 1:
            raise ValueError("max_batch and max_in_flight must be at least 1")
        self._send = send
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._name = name
        self._queue: list[tuple[ItemT, asyncio.Future[ResultT], contextvars.Context]] = []
        self._in_flight = 0
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        # Batches run in a context of their own: no caller's context variables (interaction
        # id, trace) leak into a call made for many callers.
        self._context = contextvars.Context()

    @property
    def pending(self) -> int:
        """Items waiting for a batch to leave."""
        return len(self._queue)

    async def submit(self, item: ItemT) -> ResultT:
        """Queue ``item`` for the next batch and wait for its own outcome."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[ResultT] = loop.create_future()
        self._queue.append((item, future, contextvars.copy_context()))
        self._schedule(loop)
        return await future

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._scheduled or self._in_flight >= self._max_in_flight or not self._queue:
            return
        self._scheduled = True
        # call_soon, not now: the other callers made ready in this iteration join the batch.
        loop.call_soon(self._flush, loop, context=self._context)

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        self._scheduled = False
        while self._queue and self._in_flight < self._max_in_flight:
            batch = self._queue[: self._max_batch]
            del self._queue[: self._max_batch]
            self._in_flight += 1
            record_coalesced_batch(self._name, len(batch))
            # A lone caller's item runs in its own context; a shared batch in a clean one.
            context = batch[0][2] if len(batch) == 1 else self._context.copy()
            task = loop.create_task(self._run(loop, batch), context=context)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(
        self, loop: asyncio.AbstractEventLoop, batch: list[tuple[ItemT, asyncio.Future[ResultT], contextvars.Context]]
    ) -> None:
        try:
            outcomes = await self._send_traced(batch)
            if len(outcomes) != len(batch):
                raise RuntimeError(f"batch sender returned {len(outcomes)} outcomes for {len(batch)} items")
        except BaseException as error:
            cancelled = isinstance(error, asyncio.CancelledError)
            for _, future, _ in batch:
                if future.done():
                    continue
                if cancelled:
                    future.cancel()
                else:
                    future.set_exception(error)
            if cancelled:
                raise
            return
        finally:
            self._in_flight -= 1
            self._schedule(loop)
        for (_, future, _), outcome in zip(batch, outcomes, strict=True):
            if future.done():  # its caller was cancelled
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    async def _send_traced(
        self, batch: list[tuple[ItemT, asyncio.Future[ResultT], contextvars.Context]]
    ) -> Sequence[ResultT | BaseException]:
        items = [item for item, _, _ in batch]
        if len(batch) == 1 or not tracing_enabled():
            return await self._send(items)
        # One call for many traces: its span links each caller's span (OpenTelemetry's batching model).
        links = [
            trace.Link(span_context)
            for _, _, context in batch
            if (span_context := context.run(trace.get_current_span).get_span_context()).is_valid
        ]
        with tracer("meshlib.coalesce").start_as_current_span(
            self._name, links=links, attributes={"batch.items": len(items)}
        ):
            return await self._send(items)


async def together_or_alone(
    items: list[ItemT],
    together: Callable[[list[ItemT]], Awaitable[Sequence[ResultT | BaseException]]] | None,
    alone: Callable[[ItemT], Awaitable[ResultT]],
    *,
    what: str,
) -> list[ResultT | BaseException]:
    """A batch's outcomes: ``together`` (one shared transaction) for several items, and if that
    fails as a whole (or is None), ``alone`` for each, so one bad item fails only itself.

    A batch sender for :class:`Coalescer` whose items share a transaction (group commit).
    """
    if together is not None and len(items) > 1:
        try:
            return list(await together(items))
        except Exception:
            log.warning(
                "shared transaction failed, running items one by one", extra={"what": what, "items": len(items)}
            )
    outcomes: list[ResultT | BaseException] = []
    for item in items:
        try:
            outcomes.append(await alone(item))
        except Exception as error:
            outcomes.append(error)
    return outcomes
