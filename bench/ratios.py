"""The performance bar of issue 27: every figure a ratio between targets measured side by side.

Each ratio is taken round by round (the two points of a round are seconds apart, so a drift in
the machine's speed weighs on both alike) and the bar takes the median over the rounds. The
absolute rows of issue 10 (:mod:`bench.bar`) stay, printed as information.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence

from bench.bar import Check
from bench.stats import Measurement

# Where each side of a ratio is found: (scenario, target).
BARE_ECHO = "bare-echo"
ECHO_PROXY = ("echo-floor", "echo-proxy")
READ_GATEWAY = ("read", "gateway")
PAY_GATEWAY = ("pay", "gateway")
PAY_ECHO = ("pay", BARE_ECHO)  # the bare echo taking turns with the pay points
PAY_TWO_REPLICAS = ("pay", "gateway-2-payment-replicas")
PAY_PRELOADED = ("pay", "gateway-preloaded")
READ_FRESH = ("growth", "read-fresh")
READ_PRELOADED = ("growth", "read-preloaded")
LEDGER_BATCHED = ("ledger", "ledger-batched")
LEDGER_BARE = ("ledger", "bare-batched")
LIMITER_STRICT = ("limiter", "RateLimiter+Redis")
LIMITER_REDIS_BENCHMARK = ("limiter", "redis-benchmark EVALSHA")
LEDGER_CONCURRENCY = 16

Combine = Callable[[Measurement, Measurement], float | None]


def rounds_of(
    measurements: Sequence[Measurement],
    where: tuple[str, str],
    concurrency: int,
    *,
    store: str | None = None,
    tool: str | None = None,
) -> dict[int, Measurement]:
    """One target's points at one concurrency, by round (``store``/``tool``: only those)."""
    scenario, target = where
    return {
        m.round: m
        for m in measurements
        if (m.scenario, m.target, m.concurrency) == (scenario, target, concurrency)
        and (store is None or m.store == store)
        and (tool is None or m.tool == tool)
    }


def median_by_round(first: dict[int, Measurement], second: dict[int, Measurement], combine: Combine) -> float | None:
    """The median over the rounds both sides measured of ``combine(first, second)``."""
    values = [v for r in sorted(first.keys() & second.keys()) if (v := combine(first[r], second[r])) is not None]
    return statistics.median(values) if values else None


def median_of(points: dict[int, Measurement], value: Callable[[Measurement], float | None]) -> float | None:
    """The median over the rounds of one target's own figure."""
    values = [v for _, m in sorted(points.items()) if (v := value(m)) is not None]
    return statistics.median(values) if values else None


def throughput_ratio(numerator: Measurement, denominator: Measurement) -> float | None:
    """Calls/s over calls/s (None when the denominator did nothing)."""
    if denominator.calls_per_second <= 0:
        return None
    return numerator.calls_per_second / denominator.calls_per_second


def cpu_ratio(numerator: Measurement, denominator: Measurement) -> float | None:
    """CPU per call over CPU per call (None when either was not measured)."""
    if not numerator.cpu_seconds_per_call or not denominator.cpu_seconds_per_call:
        return None
    return numerator.cpu_seconds_per_call / denominator.cpu_seconds_per_call


def p50_difference(first: Measurement, second: Measurement) -> float | None:
    """First's p50 minus second's, in ms (None unless both completed calls)."""
    if not first.ok_calls or not second.ok_calls:
        return None
    return first.latency.p50_ms - second.latency.p50_ms


def tail_ratio(point: Measurement) -> float | None:
    """p99 over p50 of one point."""
    if not point.ok_calls or point.latency.p50_ms <= 0:
        return None
    return point.latency.p99_ms / point.latency.p50_ms


def at_least(name: str, value: float | None, minimum: float) -> Check:
    """A ratio that must reach ``minimum``."""
    return Check(name, value, f">= {minimum:g}", None if value is None else value >= minimum)


def at_most(name: str, value: float | None, maximum: float) -> Check:
    """A ratio (or difference) that must stay at or under ``maximum``."""
    return Check(name, value, f"<= {maximum:g}", None if value is None else value <= maximum)


def read_checks(measurements: Sequence[Measurement]) -> list[Check]:
    """Read through the gateway against the bare Python proxy, measured in turns."""
    checks = []
    for tool in ("python", "h2load"):
        for concurrency in (16, 64):
            gateway = rounds_of(measurements, READ_GATEWAY, concurrency, tool=tool)
            proxy = rounds_of(measurements, ECHO_PROXY, concurrency, tool=tool)
            if tool == "h2load" and not gateway:
                continue  # h2load did not run: its rows are optional
            ratio = median_by_round(gateway, proxy, throughput_ratio)
            checks.append(at_least(f"read gateway / bare proxy, c{concurrency} ({tool})", ratio, 0.95))
    # Both added p50s are against the same direct call, so the difference of the two is the
    # difference of their own p50s: the gateway may add no more than the bare proxy adds.
    added = median_by_round(
        rounds_of(measurements, READ_GATEWAY, 1, tool="python"),
        rounds_of(measurements, ECHO_PROXY, 1, tool="python"),
        p50_difference,
    )
    checks.append(at_most("read gateway-added p50 minus bare proxy's, c1 (ms)", added, 0.0))
    return checks


def pay_checks(measurements: Sequence[Measurement], store: str) -> list[Check]:
    """Settled payments at c64 against the bare echo beside them: rate, tail, CPU."""
    pay = rounds_of(measurements, PAY_GATEWAY, 64, store=store)
    echo = rounds_of(measurements, PAY_ECHO, 64, store=store)
    return [
        at_least(
            f"pay settled/s / bare echo calls/s, c64 ({store})", median_by_round(pay, echo, throughput_ratio), 0.20
        ),
        at_most(f"pay p99 / p50, c64 ({store})", median_of(pay, tail_ratio), 2.0),
        at_most(f"CPU per payment / bare echo CPU per call, c64 ({store})", median_by_round(pay, echo, cpu_ratio), 6.0),
    ]


def ledger_checks(measurements: Sequence[Measurement], store: str) -> list[Check]:
    """The ledger's batched writes against a bare batched insert and update of the same rows."""
    ratio = median_by_round(
        rounds_of(measurements, LEDGER_BATCHED, LEDGER_CONCURRENCY, store=store),
        rounds_of(measurements, LEDGER_BARE, LEDGER_CONCURRENCY, store=store),
        throughput_ratio,
    )
    return [at_least(f"ledger batched / bare batched SQL, c{LEDGER_CONCURRENCY} ({store})", ratio, 0.5)]


def limiter_checks(measurements: Sequence[Measurement]) -> list[Check]:
    """Every decision in Redis against redis-benchmark running the same script."""
    ratio = median_by_round(
        rounds_of(measurements, LIMITER_STRICT, 64),
        rounds_of(measurements, LIMITER_REDIS_BENCHMARK, 64),
        throughput_ratio,
    )
    return [at_least("limiter / redis-benchmark EVALSHA, c64", ratio, 0.5)]


def replica_checks(measurements: Sequence[Measurement]) -> list[Check]:
    """Two payment replicas against one, on PostgreSQL, on the same cores."""
    ratio = median_by_round(
        rounds_of(measurements, PAY_TWO_REPLICAS, 64, store="postgres"),
        rounds_of(measurements, PAY_GATEWAY, 64, store="postgres"),
        throughput_ratio,
    )
    return [at_least("pay 2 payment replicas / 1, c64 (postgres)", ratio, 0.9)]


def growth_checks(measurements: Sequence[Measurement], store: str) -> list[Check]:
    """Pay and read with every store preloaded against the same points on fresh stores."""
    pay = median_by_round(
        rounds_of(measurements, PAY_PRELOADED, 64, store=store),
        rounds_of(measurements, PAY_GATEWAY, 64, store=store),
        throughput_ratio,
    )
    read = median_by_round(
        rounds_of(measurements, READ_PRELOADED, 64, store=store),
        rounds_of(measurements, READ_FRESH, 64, store=store),
        throughput_ratio,
    )
    return [
        at_least(f"pay preloaded / fresh stores, c64 ({store})", pay, 0.8),
        at_least(f"read preloaded / fresh stores, c64 ({store})", read, 0.8),
    ]


def check_ratios(measurements: Sequence[Measurement], stores: Sequence[str]) -> list[Check]:
    """Every ratio of the bar (n/a where this run did not measure both sides)."""
    checks = read_checks(measurements)
    for store in stores:
        checks += pay_checks(measurements, store)
    for store in stores:
        checks += ledger_checks(measurements, store)
    checks += limiter_checks(measurements)
    if "postgres" in stores:
        checks += replica_checks(measurements)
    for store in stores:
        checks += growth_checks(measurements, store)
    errors = sum(m.errors for m in measurements if m.grpc_status_checked)
    checks.append(Check("errors in status-checked points", float(errors), "0", errors == 0))
    return checks


def rounds_line(
    measurements: Sequence[Measurement], where: tuple[str, str], concurrency: int, store: str | None
) -> str:
    """``a / b / c`` calls/s of one target's rounds, for the report."""
    points = rounds_of(measurements, where, concurrency, store=store, tool="python" if where[0] != "limiter" else None)
    return " / ".join(f"{m.calls_per_second:,.1f}" for _, m in sorted(points.items())) or "-"
