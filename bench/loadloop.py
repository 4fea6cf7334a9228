"""A closed-loop load runner for in-process targets (the limiter and the ledger scenarios)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bench.stats import OK, LatencySummary, count_statuses
from meshlib.errors import MeshError

# One operation: returns how many units (decisions, transfers) it completed OK.
Operation = Callable[[int], Awaitable[int]]


@dataclass
class LoopResult:
    """Units done in the measured window, statuses per call, latency per call."""

    ok_units: int
    duration_s: float
    statuses: dict[str, int]
    latency: LatencySummary
    total_ok_units: int = 0
    notes: list[str] = field(default_factory=list)


async def closed_loop(operation: Operation, *, concurrency: int, warmup: float, duration: float) -> LoopResult:
    """Keep ``concurrency`` operations in flight; worker ``i`` passes ``i`` to each of its calls."""
    latencies: list[float] = []
    statuses: list[str] = []
    ok_units = total_units = 0
    measure_from = time.perf_counter() + warmup
    stop_at = measure_from + duration

    async def worker(index: int) -> None:
        nonlocal ok_units, total_units
        while True:
            begin = time.perf_counter()
            if begin >= stop_at:
                return
            try:
                units, status = await operation(index), OK
            except MeshError as error:
                units, status = 0, error.reason or type(error).__name__
            except Exception as error:  # counted, never hidden: an unexpected failure is a finding
                units, status = 0, type(error).__name__
            end = time.perf_counter()
            total_units += units
            # Throughput counts operations completed inside the window, whenever they began.
            if measure_from <= end <= stop_at:
                statuses.append(status)
                ok_units += units
                if status == OK:
                    latencies.append(end - begin)
            elif end > stop_at and status != OK:
                statuses.append(status)  # a late failure is still a failure

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return LoopResult(
        ok_units=ok_units,
        duration_s=stop_at - measure_from,
        statuses=count_statuses(statuses),
        latency=LatencySummary.from_seconds(latencies),
        total_ok_units=total_units,
    )
