"""Result maths and shapes: percentiles, status counts, the table and the JSON document.

Pure functions only (no I/O, no clocks), so the harness' own arithmetic is unit-tested.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

OK = "OK"
# h2load cannot read grpc-status: its successful answers are counted as HTTP 2xx.
HTTP_2XX = "HTTP_2XX"


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of already sorted values (0.0 for an empty list).

    Nearest rank (no interpolation) reports a latency some call really had.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError("fraction must be within [0, 1]")
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return float(sorted_values[rank - 1])


@dataclass
class LatencySummary:
    """Latency of the OK calls, in milliseconds."""

    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    mean_ms: float = 0.0

    @classmethod
    def from_seconds(cls, latencies_s: Iterable[float]) -> LatencySummary:
        """Summarise latencies given in seconds."""
        values = sorted(value * 1000.0 for value in latencies_s)
        if not values:
            return cls()
        return cls(
            p50_ms=percentile(values, 0.50),
            p95_ms=percentile(values, 0.95),
            p99_ms=percentile(values, 0.99),
            max_ms=values[-1],
            mean_ms=sum(values) / len(values),
        )


def count_statuses(statuses: Iterable[str]) -> dict[str, int]:
    """Calls per status name, OK first then the errors by name (stable for the JSON)."""
    counts = Counter(statuses)
    ordered = {OK: counts.pop(OK)} if OK in counts else {}
    ordered.update(sorted(counts.items()))
    return ordered


def error_count(statuses: Mapping[str, int], allowed: Iterable[str] = ()) -> int:
    """Calls that ended in an error not listed in ``allowed``."""
    permitted = {OK, HTTP_2XX, *allowed}
    return sum(count for status, count in statuses.items() if status not in permitted)


@dataclass
class Measurement:
    """One point: a scenario's target at one concurrency, measured once."""

    scenario: str
    target: str
    concurrency: int
    duration_s: float
    ok_calls: int
    statuses: dict[str, int]
    latency: LatencySummary
    tool: str = "python"
    store: str | None = None
    cpu_seconds_per_call: float | None = None
    cpu_seconds_by_process: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    grpc_status_checked: bool = True
    # The machine's 1-minute load average when the point ended: other work on the same
    # cores shows up here (a load above the CPU count means the figures are pessimistic).
    load_1m: float | None = None
    # How fast the machine ran when the point ended: ns per iteration of
    # bench.calibrate.python_loop_ns (lower is faster; the same loop everywhere).
    speed_ns: float | None = None
    notes: str = ""
    # Which of the run's rounds this point belongs to (echo-floor and read take turns per round).
    round: int = 1

    @property
    def calls_per_second(self) -> float:
        """OK calls per second of wall-clock time (errors never count)."""
        return self.ok_calls / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def errors(self) -> int:
        """Calls that did not end OK."""
        return error_count(self.statuses)

    @property
    def window_too_short(self) -> bool:
        """Fewer completions than two per concurrent caller: the latency rivals the window.

        Such a figure under-reports throughput (calls still in flight at the end are not
        counted); rerun with a longer ``--duration``.
        """
        return self.tool in ("python", "in-process") and self.ok_calls < 2 * self.concurrency

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of this point."""
        data = asdict(self)
        data["calls_per_second"] = round(self.calls_per_second, 1)
        data["errors"] = self.errors
        data["window_too_short"] = self.window_too_short
        return data


def cpu_per_call(
    cpu_before: Mapping[str, float], cpu_after: Mapping[str, float], ok_calls: int
) -> tuple[float | None, dict[str, float]]:
    """CPU seconds per OK call over all processes, plus each process' CPU seconds used."""
    used = {name: round(cpu_after[name] - cpu_before.get(name, 0.0), 3) for name in cpu_after}
    if ok_calls <= 0:
        return None, used
    return sum(used.values()) / ok_calls, used


def format_table(measurements: Sequence[Measurement]) -> str:
    """A fixed-width table of every point, one row each."""
    header = (
        f"{'scenario':<11} {'target':<22} {'store':<8} {'tool':<7} {'conc':>4} {'calls/s':>9} "
        f"{'p50ms':>7} {'p95ms':>7} {'p99ms':>7} {'maxms':>8} {'errors':>6} {'cpu ms/call':>11} {'load':>5} "
        f"{'ns/it':>6}"
    )
    lines = [header, "-" * len(header)]
    for m in measurements:
        cpu = f"{m.cpu_seconds_per_call * 1000:.3f}" if m.cpu_seconds_per_call is not None else "-"
        load = f"{m.load_1m:.1f}" if m.load_1m is not None else "-"
        speed = f"{m.speed_ns:.0f}" if m.speed_ns is not None else "-"
        short = "*" if m.window_too_short else " "
        # h2load reports no percentiles: say so rather than print zeros.
        p50, p95, p99 = (
            ("-", "-", "-")
            if m.tool == "h2load"
            else (f"{m.latency.p50_ms:.2f}", f"{m.latency.p95_ms:.2f}", f"{m.latency.p99_ms:.2f}")
        )
        target = m.target if m.round == 1 else f"{m.target} #{m.round}"
        lines.append(
            f"{m.scenario:<11} {target:<22} {(m.store or '-'):<8} {m.tool:<7} {m.concurrency:>4} "
            f"{m.calls_per_second:>8.1f}{short} {p50:>7} {p95:>7} {p99:>7} "
            f"{m.latency.max_ms:>8.2f} {m.errors:>6} {cpu:>11} {load:>5} {speed:>6}"
        )
    if any(m.window_too_short for m in measurements):
        lines.append("* fewer than 2 completions per caller in the window: throughput under-reported")
    lines.append("ns/it: the machine's speed as the point ended (a fixed Python loop's ns/iteration; lower = faster)")
    return "\n".join(lines)


def results_document(
    measurements: Sequence[Measurement],
    *,
    machine: Mapping[str, Any],
    options: Mapping[str, Any],
    skipped: Mapping[str, str],
) -> dict[str, Any]:
    """The whole JSON file: machine, options, every point, and what could not run and why."""
    return {
        "schema": "openbank-mesh-bench/1",
        "machine": dict(machine),
        "options": dict(options),
        "results": [m.to_dict() for m in measurements],
        "skipped": dict(skipped),
    }
