"""The harness' own arithmetic: percentiles, status counts, CPU per call, table and JSON shape."""

from __future__ import annotations

import json

import pytest

from bench.stats import (
    LatencySummary,
    Measurement,
    count_statuses,
    cpu_per_call,
    error_count,
    format_table,
    percentile,
    results_document,
)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 0.50) == 50.0
    assert percentile(values, 0.95) == 95.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile(values, 0.0) == 1.0


def test_percentile_of_small_and_empty_lists() -> None:
    assert percentile([], 0.5) == 0.0
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([1.0, 2.0], 0.5) == 1.0  # a latency some call really had, never interpolated


def test_percentile_refuses_a_fraction_outside_zero_one() -> None:
    with pytest.raises(ValueError):
        percentile([1.0], 1.5)


def test_latency_summary_converts_seconds_to_milliseconds() -> None:
    summary = LatencySummary.from_seconds([0.003, 0.001, 0.002, 0.010])
    assert summary.p50_ms == pytest.approx(2.0)
    assert summary.max_ms == pytest.approx(10.0)
    assert summary.mean_ms == pytest.approx(4.0)
    assert LatencySummary.from_seconds([]) == LatencySummary()


def test_status_counting_puts_ok_first_and_errors_by_name() -> None:
    counted = count_statuses(["UNAVAILABLE", "OK", "OK", "DEADLINE_EXCEEDED", "OK", "UNAVAILABLE"])
    assert list(counted) == ["OK", "DEADLINE_EXCEEDED", "UNAVAILABLE"]
    assert counted == {"OK": 3, "DEADLINE_EXCEEDED": 1, "UNAVAILABLE": 2}
    assert error_count(counted) == 3
    assert error_count({"OK": 5, "RESOURCE_EXHAUSTED": 2}, allowed=["RESOURCE_EXHAUSTED"]) == 0
    assert error_count({"HTTP_2XX": 10, "FAILED": 1}) == 1


def test_cpu_per_call_sums_every_process() -> None:
    per_call, used = cpu_per_call({"gateway": 1.0, "account": 2.0}, {"gateway": 1.5, "account": 3.0}, 100)
    assert per_call == pytest.approx(0.015)
    assert used == {"gateway": 0.5, "account": 1.0}
    assert cpu_per_call({}, {"gateway": 1.0}, 0)[0] is None


def _measurement(**overrides: object) -> Measurement:
    fields: dict[str, object] = {
        "scenario": "read",
        "target": "gateway",
        "concurrency": 16,
        "duration_s": 2.0,
        "ok_calls": 1000,
        "statuses": {"OK": 1000, "UNAVAILABLE": 2},
        "latency": LatencySummary(p50_ms=1.0, p95_ms=2.0, p99_ms=3.0, max_ms=4.0, mean_ms=1.2),
        "store": "sqlite",
        "cpu_seconds_per_call": 0.002,
    }
    fields.update(overrides)
    return Measurement(**fields)  # type: ignore[arg-type]


def test_only_ok_calls_count_towards_throughput() -> None:
    point = _measurement()
    assert point.calls_per_second == 500.0
    assert point.errors == 2
    assert _measurement(duration_s=0.0).calls_per_second == 0.0


def test_table_has_a_header_and_one_row_per_point() -> None:
    table = format_table([_measurement(), _measurement(concurrency=64, cpu_seconds_per_call=None)])
    lines = table.splitlines()
    assert len(lines) == 5  # header, rule, two rows, the legend of the speed column
    assert lines[0].split()[:5] == ["scenario", "target", "store", "tool", "conc"]
    assert lines[0].split()[-1] == "ns/it"
    assert "500.0" in lines[2] and "2.000" in lines[2]
    assert lines[3].rstrip().endswith("-")
    assert lines[4].startswith("ns/it:")


def test_each_row_says_how_fast_the_machine_ran() -> None:
    row = format_table([_measurement(speed_ns=187.4, load_1m=1.5)]).splitlines()[2]
    assert row.split()[-2:] == ["1.5", "187"]


def test_json_document_shape() -> None:
    document = results_document(
        [_measurement()], machine={"nproc": 2}, options={"duration_s": 2.0}, skipped={"pay/sqlite": "why"}
    )
    encoded = json.loads(json.dumps(document))  # everything must be JSON-serialisable
    assert encoded["schema"] == "openbank-mesh-bench/1"
    assert encoded["machine"] == {"nproc": 2}
    assert encoded["skipped"] == {"pay/sqlite": "why"}
    row = encoded["results"][0]
    assert row["calls_per_second"] == 500.0
    assert row["errors"] == 2
    assert row["latency"]["p99_ms"] == 3.0
    assert {"scenario", "target", "concurrency", "statuses", "cpu_seconds_per_call", "peak_rss_mb", "tool"} <= set(row)


def test_a_window_shorter_than_the_latency_is_flagged() -> None:
    assert _measurement(concurrency=64, ok_calls=100).window_too_short is True
    assert _measurement(concurrency=16, ok_calls=100).window_too_short is False
    assert _measurement(concurrency=64, ok_calls=10, tool="h2load").window_too_short is False
    table = format_table([_measurement(concurrency=64, ok_calls=100)])
    assert "*" in table.splitlines()[2]
    assert table.splitlines()[-2].startswith("* fewer than 2 completions")


def test_h2load_rows_show_no_percentiles() -> None:
    row = format_table([_measurement(tool="h2load", statuses={"HTTP_2XX": 1000})]).splitlines()[2]
    assert row.split()[6:9] == ["-", "-", "-"]
    assert _measurement(tool="h2load", statuses={"HTTP_2XX": 1000, "FAILED": 3}).errors == 3
