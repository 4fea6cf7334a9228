"""Coalescer: concurrent submissions leave as batches, each caller gets its own outcome."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshlib.coalesce import Coalescer
from meshlib.errors import FailedPrecondition, NotFound, Unavailable
from meshlib.grpc_errors import decode_item_error, encode_item_reason
from openbank.common.v1 import error_reason_pb2


class Recorder:
    """A batch sender that records its batches; odd items fail, and it can be made to wait."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def send(self, items: list[int]) -> list[int | BaseException]:
        self.batches.append(list(items))
        await self.gate.wait()
        return [FailedPrecondition(f"odd {i}", reason="ODD") if i % 2 else i * 10 for i in items]


async def test_callers_ready_together_share_one_batch_and_get_their_own_outcomes() -> None:
    recorder = Recorder()
    coalescer = Coalescer(recorder.send)
    outcomes = await asyncio.gather(*(coalescer.submit(i) for i in range(6)), return_exceptions=True)
    assert recorder.batches == [[0, 1, 2, 3, 4, 5]]
    assert outcomes[0::2] == [0, 20, 40]
    assert all(isinstance(o, FailedPrecondition) and o.reason == "ODD" for o in outcomes[1::2])


async def test_a_lone_caller_is_sent_at_once() -> None:
    recorder = Recorder()
    coalescer = Coalescer(recorder.send)
    assert await asyncio.wait_for(coalescer.submit(4), timeout=1) == 40
    assert recorder.batches == [[4]]


async def test_items_arriving_while_batches_are_in_flight_wait_and_leave_together() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    coalescer = Coalescer(recorder.send, max_in_flight=1)
    first = asyncio.ensure_future(coalescer.submit(0))
    await asyncio.sleep(0.01)
    later = [asyncio.ensure_future(coalescer.submit(i)) for i in (2, 4, 6)]
    await asyncio.sleep(0.01)
    assert recorder.batches == [[0]]  # the others wait for the batch in flight
    assert coalescer.pending == 3
    recorder.gate.set()
    assert await first == 0
    assert [await f for f in later] == [20, 40, 60]
    assert recorder.batches == [[0], [2, 4, 6]]


async def test_batches_are_capped_at_max_batch() -> None:
    recorder = Recorder()
    coalescer = Coalescer(recorder.send, max_batch=4, max_in_flight=1)
    await asyncio.gather(*(coalescer.submit(i * 2) for i in range(10)))
    assert [len(b) for b in recorder.batches] == [4, 4, 2]


async def test_a_failed_batch_fails_every_caller_of_that_batch_only() -> None:
    calls = 0

    async def flaky(items: list[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise Unavailable("down")
        return items

    coalescer: Coalescer[int, int] = Coalescer(flaky)
    first = await asyncio.gather(coalescer.submit(1), coalescer.submit(2), return_exceptions=True)
    assert all(isinstance(o, Unavailable) for o in first)
    assert await coalescer.submit(3) == 3


async def test_a_sender_answering_the_wrong_number_of_outcomes_fails_the_batch() -> None:
    async def short(items: list[int]) -> list[int]:
        return items[:-1]

    coalescer: Coalescer[int, int] = Coalescer(short)
    outcomes = await asyncio.gather(coalescer.submit(1), coalescer.submit(2), return_exceptions=True)
    assert all(isinstance(o, RuntimeError) for o in outcomes)


async def test_a_cancelled_caller_does_not_disturb_the_others() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    coalescer = Coalescer(recorder.send)
    leaving = asyncio.ensure_future(coalescer.submit(2))
    staying = asyncio.ensure_future(coalescer.submit(4))
    await asyncio.sleep(0.01)
    leaving.cancel()
    recorder.gate.set()
    assert await staying == 40


async def test_a_lone_callers_batch_runs_in_its_context_and_a_shared_batch_in_none() -> None:
    import contextvars

    marker: contextvars.ContextVar[str] = contextvars.ContextVar("marker", default="")
    seen: list[tuple[int, str]] = []

    async def send(items: list[int]) -> list[int]:
        seen.append((len(items), marker.get()))
        return items

    coalescer: Coalescer[int, int] = Coalescer(send)

    async def submit_as(name: str, item: int) -> int:
        marker.set(name)
        return await coalescer.submit(item)

    assert await submit_as("alone", 1) == 1
    assert await asyncio.gather(submit_as("first", 2), submit_as("second", 3)) == [2, 3]
    assert seen == [(1, "alone"), (2, "")]


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        Coalescer(Recorder().send, max_batch=0)


@settings(max_examples=40, deadline=None)
@given(
    items=st.lists(st.integers(min_value=0, max_value=1000), max_size=60),
    max_batch=st.integers(min_value=1, max_value=8),
    max_in_flight=st.integers(min_value=1, max_value=3),
    stagger=st.lists(st.booleans(), max_size=60),
)
def test_every_caller_gets_exactly_its_own_outcome(
    items: list[int], max_batch: int, max_in_flight: int, stagger: list[bool]
) -> None:
    async def scenario() -> None:
        recorder = Recorder()
        coalescer = Coalescer(recorder.send, max_batch=max_batch, max_in_flight=max_in_flight)

        async def one(position: int, item: int) -> int | str:
            if position < len(stagger) and stagger[position]:
                await asyncio.sleep(0)
            try:
                return await coalescer.submit(item)
            except FailedPrecondition as error:
                return error.message

        outcomes = await asyncio.gather(*(one(p, i) for p, i in enumerate(items)))
        assert outcomes == [f"odd {i}" if i % 2 else i * 10 for i in items]
        assert sorted(i for batch in recorder.batches for i in batch) == sorted(items)
        assert all(1 <= len(batch) <= max_batch for batch in recorder.batches)

    asyncio.run(scenario())


def test_item_errors_keep_their_reason_and_say_whether_to_retry() -> None:
    def decode(reason: str) -> object:
        return decode_item_error(error_reason_pb2.ErrorReason.Value(f"ERROR_REASON_{reason}"), "detail")

    refused = decode("INSUFFICIENT_FUNDS")
    assert isinstance(refused, FailedPrecondition) and refused.reason == "INSUFFICIENT_FUNDS"
    assert isinstance(decode("RESOURCE_NOT_FOUND"), NotFound)
    retry = decode("SERVICE_UNAVAILABLE")
    assert isinstance(retry, Unavailable) and retry.message == "detail"
    assert decode("INTERNAL_ERROR").kind.name == "INTERNAL"
    unknown = decode_item_error(9999, "")
    assert unknown.kind.name == "INTERNAL" and unknown.reason == "INTERNAL_ERROR"
    assert decode("FIELD_INVALID").kind.name == "INVALID_ARGUMENT"


def test_item_reasons_encode_to_the_contract_and_never_to_success_when_unknown() -> None:
    assert encode_item_reason(None) == error_reason_pb2.ERROR_REASON_UNSPECIFIED
    assert encode_item_reason("INSUFFICIENT_FUNDS") == error_reason_pb2.ERROR_REASON_INSUFFICIENT_FUNDS
    assert encode_item_reason("NOT_IN_THE_CONTRACT") == error_reason_pb2.ERROR_REASON_INTERNAL_ERROR
    round_trip = decode_item_error(encode_item_reason("TRANSFER_ALREADY_POSTED"), "posted")
    assert round_trip.reason == "TRANSFER_ALREADY_POSTED"


async def test_a_shared_batch_runs_in_a_span_linking_every_callers_span(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from meshlib import coalesce

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(coalesce, "tracing_enabled", lambda: True)
    monkeypatch.setattr(coalesce, "tracer", provider.get_tracer)
    coalescer: Coalescer[int, int] = Coalescer(Recorder().send, name="ledger.batch")
    callers = provider.get_tracer("test")

    async def traced(item: int) -> int:
        with callers.start_as_current_span(f"caller {item}"):
            return await coalescer.submit(item)

    assert await asyncio.gather(traced(2), traced(4)) == [20, 40]
    spans = {span.name: span for span in exporter.get_finished_spans()}
    batch = spans["ledger.batch"]
    assert batch.attributes is not None and batch.attributes["batch.items"] == 2
    assert {link.context.span_id for link in batch.links} == {
        spans["caller 2"].context.span_id,
        spans["caller 4"].context.span_id,
    }
    assert batch.parent is None  # a trace of its own, not any one caller's


async def test_together_or_alone_falls_back_to_each_item_when_the_shared_run_fails() -> None:
    from meshlib.coalesce import together_or_alone

    async def together(items: list[int]) -> list[int]:
        if 3 in items:
            raise RuntimeError("the shared transaction failed")
        return [i * 10 for i in items]

    async def alone(item: int) -> int:
        if item == 3:
            raise ValueError("bad item")
        return item * 100

    assert await together_or_alone([1, 2], together, alone, what="t") == [10, 20]
    outcomes = await together_or_alone([1, 3, 4], together, alone, what="t")
    assert outcomes[0] == 100 and outcomes[2] == 400 and isinstance(outcomes[1], ValueError)
    assert await together_or_alone([5], together, alone, what="t") == [500]  # one item: alone
    assert await together_or_alone([1, 2], None, alone, what="t") == [100, 200]
