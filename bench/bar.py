"""The performance bar of issue 10, checked against a run's measurements."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bench.stats import Measurement


@dataclass
class Check:
    """One line of the bar: what was asked, what was measured, whether it holds."""

    name: str
    measured: float | None
    required: str
    holds: bool | None  # None: not measured in this run

    def line(self) -> str:
        """Human form for the summary under the table."""
        verdict = {True: "PASS", False: "FAIL", None: "n/a "}[self.holds]
        value = "-" if self.measured is None else f"{self.measured:,.2f}"
        return f"  [{verdict}] {self.name:<52} {value:>12}   (bar: {self.required})"


def find(
    measurements: Sequence[Measurement],
    scenario: str,
    target: str,
    concurrency: int,
    *,
    tool: str | None = "python",
    store: str | None = None,
) -> Measurement | None:
    """The point of one scenario/target/concurrency (and tool, store when given)."""
    for m in measurements:
        if (m.scenario, m.target, m.concurrency) != (scenario, target, concurrency):
            continue
        if tool is not None and m.tool != tool:
            continue
        if store is not None and m.store != store:
            continue
        return m
    return None


def _by_round(
    measurements: Sequence[Measurement], scenario: str, target: str, concurrency: int, tool: str
) -> dict[int, Measurement]:
    """A target's points at one concurrency, by round (rounds interleave echo-floor and read)."""
    return {
        m.round: m
        for m in measurements
        if (m.scenario, m.target, m.concurrency, m.tool) == (scenario, target, concurrency, tool)
    }


def _median_over_rounds(
    first: dict[int, Measurement],
    second: dict[int, Measurement],
    combine: Callable[[Measurement, Measurement], float | None],
) -> float | None:
    """The median over the rounds both sides measured of ``combine(first, second)``.

    Each round's two points were taken seconds apart, so each round's value is a fair
    comparison even while the machine's speed drifts between rounds.
    """
    values = [v for r in sorted(first.keys() & second.keys()) if (v := combine(first[r], second[r])) is not None]
    return statistics.median(values) if values else None


def _ratio(numerator: Measurement | None, denominator: Measurement | None) -> float | None:
    if numerator is None or denominator is None or denominator.calls_per_second == 0:
        return None
    return numerator.calls_per_second / denominator.calls_per_second


def _at_least(name: str, value: float | None, minimum: float, required: str) -> Check:
    return Check(name, value, required, None if value is None else value >= minimum)


def _added_p50(measurements: Sequence[Measurement], scenario: str, target: str) -> float | None:
    """Median over the rounds of ``target``'s p50 at c1 minus the direct call's, in ms."""
    return _median_over_rounds(
        _by_round(measurements, scenario, target, 1, "python"),
        _by_round(measurements, "echo-floor", "account-direct", 1, "python"),
        lambda hop, direct: hop.latency.p50_ms - direct.latency.p50_ms,
    )


def floor_lines(measurements: Sequence[Measurement]) -> list[str]:
    """What the bare echo proxy itself adds at c1: the least any Python gateway could add here.

    Printed under the bar, not part of it: when the floor alone is above 1.5 ms, the
    gateway-added check says more about the machine than about the gateway.
    """
    floor = _added_p50(measurements, "echo-floor", "echo-proxy")
    gateway = _added_p50(measurements, "read", "gateway")
    if floor is None:
        return []
    lines = [f"  [info] {'echo proxy-added p50 at c1 (ms), the floor':<52} {floor:>12,.2f}   (a bare grpc.aio proxy)"]
    if gateway is not None:
        own = gateway - floor
        lines.append(f"  [info] {'gateway minus echo proxy p50 at c1 (ms)':<52} {own:>12,.2f}   (its own work)")
    return lines


def check_bar(measurements: Sequence[Measurement], stores: Sequence[str]) -> list[Check]:
    """Every check of the bar that this run's measurements can answer."""
    checks: list[Check] = []
    for tool in ("python", "h2load"):
        for concurrency in (16, 64):
            ratio = _median_over_rounds(
                _by_round(measurements, "read", "gateway", concurrency, tool),
                _by_round(measurements, "echo-floor", "echo-proxy", concurrency, tool),
                _ratio,
            )
            checks.append(_at_least(f"read gateway / echo proxy, c{concurrency} ({tool})", ratio, 0.85, ">= 0.85"))
    # Issue 21: the token endpoint is cheap (a keyed hash, not Argon2id, per client secret).
    token_ratio = _median_over_rounds(
        _by_round(measurements, "token", "gateway", 16, "python"),
        _by_round(measurements, "echo-floor", "echo-proxy", 16, "python"),
        _ratio,
    )
    checks.append(_at_least("IssueToken (client credentials) / echo proxy, c16", token_ratio, 0.2, ">= 0.2"))
    client_auth = find(measurements, "token", "client-auth", 1, tool="inproc")
    auth_ms = client_auth.cpu_seconds_per_call * 1000 if client_auth and client_auth.cpu_seconds_per_call else None
    checks.append(Check("client authentication CPU (ms)", auth_ms, "< 1", None if auth_ms is None else auth_ms < 1))
    added = _added_p50(measurements, "read", "gateway")
    checks.append(Check("read gateway-added p50 at c1 (ms)", added, "<= 1.5", None if added is None else added <= 1.5))
    for store in stores:
        point = find(measurements, "pay", "gateway", 64, store=store)
        checks.append(_at_least(f"pay settled/s at c64 ({store})", point and point.calls_per_second, 300, ">= 300"))
        p99 = point.latency.p99_ms if point and point.ok_calls else None
        checks.append(Check(f"pay p99 at c64 ({store}, ms)", p99, "<= 250", None if p99 is None else p99 <= 250))
    best_limiter = max(
        (m for m in measurements if m.scenario == "limiter" and m.target == "RateLimiter+Redis"),
        key=lambda m: m.calls_per_second,
        default=None,
    )
    best_redis = max(
        (m for m in measurements if m.scenario == "limiter" and m.tool == "redis-benchmark"),
        key=lambda m: m.calls_per_second,
        default=None,
    )
    checks.append(
        _at_least(
            "limiter decisions/s (best concurrency)",
            best_limiter and best_limiter.calls_per_second,
            10_000,
            ">= 10,000",
        )
    )
    checks.append(
        _at_least("limiter / redis-benchmark EVALSHA (best of each)", _ratio(best_limiter, best_redis), 0.3, ">= 0.3")
    )
    for store, minimum in (("sqlite", 20_000), ("postgres", 5_000)):
        if store not in stores:
            continue
        best = max(
            (m for m in measurements if m.target == "ledger-batched" and m.store == store),
            key=lambda m: m.calls_per_second,
            default=None,
        )
        checks.append(
            _at_least(
                f"ledger batched transfers/s ({store})", best and best.calls_per_second, minimum, f">= {minimum:,}"
            )
        )
    errors = sum(m.errors for m in measurements if m.grpc_status_checked)
    checks.append(Check("errors in status-checked points", float(errors), "0", errors == 0))
    return checks
