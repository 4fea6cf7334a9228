"""WaveAdmission: operations start in waves, a lone one at once, a straggler never blocks for long."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshlib.admission import WaveAdmission


class Operations:
    """Operations that log when they start and wait for their own gate to finish."""

    def __init__(self) -> None:
        self.started: list[int] = []
        self.gates: dict[int, asyncio.Event] = {}

    def op(self, number: int, *, fail: bool = False):
        self.gates[number] = asyncio.Event()

        async def run() -> int:
            self.started.append(number)
            await self.gates[number].wait()
            if fail:
                raise ValueError(f"op {number} failed")
            return number * 10

        return run

    def finish(self, *numbers: int) -> None:
        for number in numbers:
            self.gates[number].set()


async def test_a_lone_operation_starts_at_once_and_returns_its_result() -> None:
    admission, ops = WaveAdmission(), Operations()
    task = asyncio.ensure_future(admission.run(ops.op(1)))
    for _ in range(4):  # a few loop iterations, no timer
        await asyncio.sleep(0)
    assert ops.started == [1]
    ops.finish(1)
    assert await asyncio.wait_for(task, timeout=1) == 10
    assert admission.running_waves == 0


async def test_operations_arriving_during_a_wave_wait_and_start_together_as_the_next() -> None:
    admission, ops = WaveAdmission(max_waves=1), Operations()
    first = [asyncio.ensure_future(admission.run(ops.op(n))) for n in (1, 2)]
    await asyncio.sleep(0.01)
    assert ops.started == [1, 2]  # arrived in one iteration: one wave
    later = [asyncio.ensure_future(admission.run(ops.op(n))) for n in (3, 4, 5)]
    await asyncio.sleep(0.01)
    assert ops.started == [1, 2] and admission.waiting == 3
    ops.finish(1)
    await asyncio.sleep(0.01)
    assert ops.started == [1, 2]  # the wave still runs: 2 is in it
    ops.finish(2)
    await asyncio.sleep(0.01)
    assert ops.started == [1, 2, 3, 4, 5]  # all three start in the same iteration
    ops.finish(3, 4, 5)
    assert [await t for t in first + later] == [10, 20, 30, 40, 50]


async def test_a_straggler_frees_the_slot_after_release_after() -> None:
    admission, ops = WaveAdmission(max_waves=1, release_after=0.05), Operations()
    slow = asyncio.ensure_future(admission.run(ops.op(1)))
    await asyncio.sleep(0.01)
    waiting = asyncio.ensure_future(admission.run(ops.op(2)))
    await asyncio.sleep(0.01)
    assert ops.started == [1]
    await asyncio.sleep(0.1)
    assert ops.started == [1, 2]  # admitted although 1 still runs
    ops.finish(1, 2)
    assert (await slow, await waiting) == (10, 20)


async def test_a_failure_reaches_its_own_caller_only_and_ends_its_part_of_the_wave() -> None:
    admission, ops = WaveAdmission(max_waves=1), Operations()
    bad = asyncio.ensure_future(admission.run(ops.op(1, fail=True)))
    good = asyncio.ensure_future(admission.run(ops.op(2)))
    await asyncio.sleep(0.01)
    ops.finish(1, 2)
    with pytest.raises(ValueError, match="op 1 failed"):
        await bad
    assert await good == 20
    assert admission.running_waves == 0


async def test_a_caller_cancelled_while_waiting_never_runs_and_one_cancelled_while_running_leaves_its_wave() -> None:
    admission, ops = WaveAdmission(max_waves=1), Operations()
    running = asyncio.ensure_future(admission.run(ops.op(1)))
    await asyncio.sleep(0.01)
    withdrawn = asyncio.ensure_future(admission.run(ops.op(2)))
    await asyncio.sleep(0.01)
    withdrawn.cancel()
    running.cancel()  # its wave ends: the slot frees at once
    await asyncio.sleep(0.01)
    assert ops.started == [1] and admission.waiting == 0 and admission.running_waves == 0
    later = asyncio.ensure_future(admission.run(ops.op(3)))
    await asyncio.sleep(0.01)
    assert ops.started == [1, 3]
    ops.finish(3)
    assert await later == 30


@settings(max_examples=40, deadline=None)
@given(
    delays=st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=25),
    max_waves=st.integers(min_value=1, max_value=3),
    max_wave=st.integers(min_value=1, max_value=6),
)
def test_every_operation_runs_once_and_never_more_waves_than_allowed(
    delays: list[int], max_waves: int, max_wave: int
) -> None:
    async def scenario() -> None:
        admission = WaveAdmission(max_waves=max_waves, max_wave=max_wave, release_after=5)
        ran: list[int] = []

        async def op(number: int, delay: int) -> int:
            assert admission.running_waves <= max_waves
            ran.append(number)
            for _ in range(delay):
                await asyncio.sleep(0)
            return number

        async def caller(number: int, delay: int) -> int:
            for _ in range(number % 3):
                await asyncio.sleep(0)
            return await admission.run(lambda: op(number, delay))

        results = await asyncio.gather(*(caller(n, d) for n, d in enumerate(delays)))
        assert results == list(range(len(delays)))
        assert sorted(ran) == list(range(len(delays)))
        assert admission.running_waves == 0 and admission.waiting == 0

    asyncio.run(scenario())


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        WaveAdmission(max_waves=0)
    with pytest.raises(ValueError):
        WaveAdmission(release_after=0)
