"""The bar of issue 27: each ratio paired round by round, the median of the rounds, PASS/FAIL."""

from __future__ import annotations

import datetime as dt

import pytest

from bench.preload import Column, copy_form, filler, plans, sizes, sqlite_form
from bench.ratios import check_ratios, median_by_round, rounds_of
from bench.stats import LatencySummary, Measurement


def point(
    scenario: str,
    target: str,
    calls_per_second: float,
    *,
    concurrency: int = 64,
    round: int = 1,
    store: str | None = None,
    tool: str = "python",
    p50: float = 10.0,
    p99: float = 15.0,
    cpu_ms: float | None = None,
) -> Measurement:
    return Measurement(
        scenario=scenario,
        target=target,
        concurrency=concurrency,
        duration_s=10.0,
        ok_calls=round_to_calls(calls_per_second),
        statuses={"OK": round_to_calls(calls_per_second)},
        latency=LatencySummary(p50_ms=p50, p99_ms=p99),
        tool=tool,
        store=store,
        cpu_seconds_per_call=None if cpu_ms is None else cpu_ms / 1000,
        round=round,
    )


def round_to_calls(calls_per_second: float) -> int:
    return int(calls_per_second * 10)


def by_name(measurements: list[Measurement], stores: list[str]) -> dict[str, tuple[float | None, bool | None]]:
    return {check.name: (check.measured, check.holds) for check in check_ratios(measurements, stores)}


def test_each_round_is_compared_within_itself_and_the_median_taken() -> None:
    # The machine ran twice as fast in round 2: the ratio of each round still says 0.5.
    numerator = {1: point("pay", "gateway", 100), 2: point("pay", "gateway", 200), 3: point("pay", "gateway", 90)}
    denominator = {
        1: point("pay", "bare-echo", 200),
        2: point("pay", "bare-echo", 400),
        3: point("pay", "bare-echo", 100),
    }
    assert median_by_round(numerator, denominator, lambda a, b: a.calls_per_second / b.calls_per_second) == 0.5
    # A round one side missed is left out, not paired with another round.
    del denominator[2]
    assert median_by_round(numerator, denominator, lambda a, b: a.calls_per_second / b.calls_per_second) == 0.7


def test_rounds_of_filters_store_and_tool() -> None:
    points = [
        point("pay", "gateway", 1, store="sqlite"),
        point("pay", "gateway", 2, store="postgres"),
        point("pay", "gateway", 3, store="postgres", tool="h2load"),
    ]
    assert [
        m.calls_per_second for m in rounds_of(points, ("pay", "gateway"), 64, store="postgres", tool="python").values()
    ] == [2]


def test_read_ratios_and_the_gateways_added_p50_against_the_bare_proxys() -> None:
    points = []
    for r, (gateway, proxy) in enumerate([(96, 100), (90, 100), (97, 100)], start=1):
        for concurrency in (16, 64):
            points += [
                point("read", "gateway", gateway, concurrency=concurrency, round=r),
                point("echo-floor", "echo-proxy", proxy, concurrency=concurrency, round=r),
            ]
        points += [
            point("read", "gateway", 100, concurrency=1, round=r, p50=3.0 + r),
            point("echo-floor", "echo-proxy", 100, concurrency=1, round=r, p50=3.5),
        ]
    checks = by_name(points, ["sqlite"])
    assert checks["read gateway / bare proxy, c16 (python)"] == (0.96, True)
    assert checks["read gateway / bare proxy, c64 (python)"] == (0.96, True)
    # Rounds add 0.5, 1.5 and 2.5 ms more than the proxy: the median 1.5 > 0 fails.
    assert checks["read gateway-added p50 minus bare proxy's, c1 (ms)"] == (1.5, False)
    assert "read gateway / bare proxy, c16 (h2load)" not in checks  # h2load did not run


def test_pay_rate_tail_and_cpu_against_the_bare_echo() -> None:
    points = []
    for r in (1, 2, 3):
        points += [
            point("pay", "bare-echo", 4000, round=r, store="sqlite", cpu_ms=0.25),
            point(
                "pay", "gateway", 600 + 300 * (r == 2), round=r, store="sqlite", p50=100, p99=150 + 100 * r, cpu_ms=2.5
            ),
        ]
    checks = by_name(points, ["sqlite"])
    assert checks["pay settled/s / bare echo calls/s, c64 (sqlite)"] == (0.15, False)
    assert checks["pay p99 / p50, c64 (sqlite)"] == (3.5, False)  # 2.5, 3.5, 4.5
    assert checks["CPU per payment / bare echo CPU per call, c64 (sqlite)"] == (pytest.approx(10.0), False)


def test_cpu_ratio_over_six_fails() -> None:
    points = [
        point("pay", "bare-echo", 4000, store="postgres", cpu_ms=0.25),
        point("pay", "gateway", 900, store="postgres", p50=100, p99=180, cpu_ms=1.4),
    ]
    checks = by_name(points, ["postgres"])
    assert checks["CPU per payment / bare echo CPU per call, c64 (postgres)"][1] is True  # 5.6
    assert checks["pay settled/s / bare echo calls/s, c64 (postgres)"] == (pytest.approx(0.225), True)
    assert checks["pay p99 / p50, c64 (postgres)"] == (pytest.approx(1.8), True)
    points[1].cpu_seconds_per_call = 0.0016  # 6.4x
    assert by_name(points, ["postgres"])["CPU per payment / bare echo CPU per call, c64 (postgres)"][1] is False


def test_ledger_limiter_replicas_and_growth() -> None:
    points = [
        point("ledger", "ledger-batched", 6000, concurrency=16, store="sqlite", tool="in-process"),
        point("ledger", "bare-batched", 10000, concurrency=16, store="sqlite", tool="in-process"),
        point("limiter", "RateLimiter+Redis", 12000, tool="in-process"),
        point("limiter", "redis-benchmark EVALSHA", 30000, tool="redis-benchmark"),
        point("pay", "gateway", 400, store="postgres"),
        point("pay", "gateway-2-payment-replicas", 380, store="postgres"),
        point("pay", "gateway-preloaded", 300, store="postgres"),
        point("growth", "read-fresh", 500, store="postgres"),
        point("growth", "read-preloaded", 450, store="postgres"),
    ]
    checks = by_name(points, ["sqlite", "postgres"])
    assert checks["ledger batched / bare batched SQL, c16 (sqlite)"] == (0.6, True)
    assert checks["ledger batched / bare batched SQL, c16 (postgres)"] == (None, None)  # not measured: n/a
    assert checks["limiter / redis-benchmark EVALSHA, c64"] == (0.4, False)
    assert checks["pay 2 payment replicas / 1, c64 (postgres)"] == (0.95, True)
    assert checks["pay preloaded / fresh stores, c64 (postgres)"] == (0.75, False)
    assert checks["read preloaded / fresh stores, c64 (postgres)"] == (0.9, True)
    assert checks["errors in status-checked points"] == (0.0, True)


def test_an_error_anywhere_fails_the_bar() -> None:
    failed = point("pay", "gateway", 10, store="sqlite")
    failed.statuses = {"OK": 100, "UNAVAILABLE": 2}
    assert by_name([failed], ["sqlite"])["errors in status-checked points"] == (2.0, False)


def test_preload_sizes_and_written_forms() -> None:
    assert sizes(1.0) == (1_000_000, 100_000)
    assert sizes(0.1) == (100_000, 10_000)
    moment = dt.datetime(2026, 1, 2, 3, 4, 5, 600, tzinfo=dt.UTC)
    assert sqlite_form(moment) == "2026-01-02 03:04:05.000600"
    assert sqlite_form(True) == 1
    assert copy_form(moment) == "2026-01-02 03:04:05.000600+00"
    assert copy_form(None) == "\\N"
    assert copy_form(False) == "f"
    assert copy_form(b"\x01\xff") == "\\\\x01ff"
    assert copy_form("a\tb\\c") == "a\\tb\\\\c"


def test_preload_fills_columns_the_plan_leaves_out() -> None:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    unique_text = filler("customers", Column("username", "VARCHAR(64)", True, False, True), now)
    assert unique_text is not None and unique_text(7) != unique_text(8)
    assert filler("t", Column("note", "TEXT", False, False, False), now) is None  # nullable: left NULL
    assert filler("t", Column("note", "TEXT", True, True, False), now) is None  # its default applies
    amount = filler("t", Column("n", "BIGINT", True, False, False), now)
    assert amount is not None and amount(5) == 0


def test_preload_plans_refer_to_rows_that_exist() -> None:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    loads = {load.table: load for service in plans(0.001, now).values() for load in service}
    payments, customers = sizes(0.001)
    assert loads["payments"].count == payments and loads["payment_steps"].count == 3 * payments
    account_ids = {loads["accounts"].values["id"](i) for i in range(customers)}
    assert {loads["transfers"].values["debit_account_id"](i) for i in range(payments)} <= account_ids
    assert {loads["entries"].values["account_id"](i) for i in range(2 * payments)} <= account_ids
    windows = {loads["settlement_windows"].values["id"](i) for i in range(365)}
    assert {loads["obligations"].values["window_id"](i) for i in range(payments)} <= windows
    # Rows a background job would purge during the run are inside their retention.
    assert loads["idempotency_keys"].values["created_at"](payments - 1) > now - dt.timedelta(hours=48)
    assert loads["payment_events"].values["event_time"](0) > now - dt.timedelta(days=30)
