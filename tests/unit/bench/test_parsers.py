"""Parsers of what the harness reads: /proc files, h2load and redis-benchmark output, options."""

from __future__ import annotations

import argparse
import struct

import pytest

from bench.__main__ import build_parser, parse_concurrency, parse_stores
from bench.bar import check_bar, floor_lines
from bench.h2load import grpc_frame, parse_output
from bench.procstat import parse_cpu_seconds, parse_peak_rss_mb
from bench.scenarios import parse_redis_benchmark_csv
from bench.stats import LatencySummary, Measurement

H2LOAD_OUTPUT = """\
starting benchmark...
finished in 5.00s, 1234.50 req/s, 120.20KB/s
requests: 6173 total, 6173 started, 6173 done, 6170 succeeded, 3 failed, 0 errored, 0 timeout
status codes: 6170 2xx, 0 3xx, 0 4xx, 3 5xx
traffic: 601.03KB (615450) total, 12.06KB (12346) headers (space savings 95.00%), 48.23KB (49384) data
                     min         max         mean         sd        +/- sd
time for request:      512us     12.34ms      1.52ms       421us    78.12%
"""


def test_cpu_seconds_from_proc_stat_with_a_tricky_command_name() -> None:
    fields = ["S"] + ["0"] * 10 + ["250", "50"] + ["0"] * 30  # utime 250, stime 50 ticks
    line = "1234 (python (x) y) " + " ".join(fields)
    assert parse_cpu_seconds(line, ticks_per_second=100) == pytest.approx(3.0)


def test_peak_rss_from_proc_status() -> None:
    assert parse_peak_rss_mb("Name:\tpython\nVmHWM:\t  204800 kB\nVmRSS:\t 1 kB\n") == pytest.approx(200.0)
    assert parse_peak_rss_mb("Name:\tkthread\n") is None


def test_h2load_output() -> None:
    result = parse_output(H2LOAD_OUTPUT)
    assert result.duration_s == 5.0
    assert result.requests_per_second == 1234.5
    assert (result.succeeded, result.failed, result.errored, result.status_2xx) == (6170, 3, 0, 6170)
    assert result.latency_min_s == pytest.approx(0.000512)
    assert result.latency_max_s == pytest.approx(0.01234)
    assert result.latency_mean_s == pytest.approx(0.00152)
    with pytest.raises(ValueError):
        parse_output("connect failed")


def test_grpc_frame_is_length_prefixed() -> None:
    frame = grpc_frame(b"abc")
    assert frame[0] == 0
    assert struct.unpack(">I", frame[1:5])[0] == 3
    assert frame[5:] == b"abc"


def test_redis_benchmark_csv() -> None:
    text = (
        '"test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"\n'
        '"EVALSHA abc 1 k","51234.56","0.950","0.120","0.900","1.500","2.100","5.000"\n'
    )
    figures = parse_redis_benchmark_csv(text)
    assert figures["rps"] == pytest.approx(51234.56)
    assert figures["p99_latency_ms"] == pytest.approx(2.1)
    with pytest.raises(ValueError):
        parse_redis_benchmark_csv("")


def test_options() -> None:
    assert parse_concurrency("1,16,64") == [1, 16, 64]
    assert parse_stores("postgres") == ["postgres"]
    for bad in ("", "0", "a,b"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_concurrency(bad)
    with pytest.raises(argparse.ArgumentTypeError):
        parse_stores("mysql")
    args = build_parser().parse_args(["--scenario", "read", "--store", "sqlite", "--limiter", "memory"])
    assert args.scenario == ["read"] and args.store == ["sqlite"] and args.concurrency == [1, 16, 64]


def _point(scenario: str, target: str, concurrency: int, ok: int, p50: float = 1.0, **extra: object) -> Measurement:
    return Measurement(
        scenario=scenario,
        target=target,
        concurrency=concurrency,
        duration_s=1.0,
        ok_calls=ok,
        statuses={"OK": ok},
        latency=LatencySummary(p50_ms=p50, p99_ms=p50 * 2),
        **extra,  # type: ignore[arg-type]
    )


def test_bar_ratios_and_missing_points() -> None:
    points = [
        _point("echo-floor", "echo-proxy", 16, 1000),
        _point("read", "gateway", 16, 900),
        _point("echo-floor", "account-direct", 1, 100, p50=2.0),
        _point("read", "gateway", 1, 80, p50=4.0),
        _point("pay", "gateway", 64, 350, p50=50.0, store="sqlite"),
    ]
    checks = {check.name: check for check in check_bar(points, ["sqlite"])}
    ratio = checks["read gateway / echo proxy, c16 (python)"]
    assert ratio.measured == pytest.approx(0.9) and ratio.holds is True
    assert checks["read gateway / echo proxy, c64 (python)"].holds is None  # not measured: neither pass nor fail
    added = checks["read gateway-added p50 at c1 (ms)"]
    assert added.measured == pytest.approx(2.0) and added.holds is False
    assert checks["pay settled/s at c64 (sqlite)"].holds is True
    assert checks["pay p99 at c64 (sqlite, ms)"].holds is True
    assert checks["errors in status-checked points"].holds is True


def test_the_bar_takes_the_median_of_the_rounds_each_compared_within_itself() -> None:
    # Round 2 came on a slow stretch for both targets: compared within the round it is a
    # fair point; across rounds (gateway of round 1 against proxy of round 2) it would not be.
    points = []
    for round_number, (proxy, gateway, direct_p50, gateway_p50) in enumerate(
        [(1000, 800, 1.0, 2.0), (500, 450, 2.0, 4.0), (1000, 950, 1.0, 2.2)], start=1
    ):
        points += [
            _point("echo-floor", "echo-proxy", 16, proxy, round=round_number),
            _point("read", "gateway", 16, gateway, round=round_number),
            _point("echo-floor", "account-direct", 1, 100, p50=direct_p50, round=round_number),
            _point("read", "gateway", 1, 80, p50=gateway_p50, round=round_number),
        ]
    checks = {check.name: check for check in check_bar(points, [])}
    assert checks["read gateway / echo proxy, c16 (python)"].measured == pytest.approx(0.9)  # of 0.8, 0.9, 0.95
    assert checks["read gateway-added p50 at c1 (ms)"].measured == pytest.approx(1.2)  # of 1.0, 2.0, 1.2


def test_the_floor_is_what_the_bare_proxy_adds_at_c1() -> None:
    points = []
    for round_number, (direct, proxy, gateway) in enumerate([(2.0, 3.5, 4.0), (2.5, 4.5, 5.5), (1.5, 3.0, 3.2)], 1):
        points += [
            _point("echo-floor", "account-direct", 1, 100, p50=direct, round=round_number),
            _point("echo-floor", "echo-proxy", 1, 80, p50=proxy, round=round_number),
            _point("read", "gateway", 1, 70, p50=gateway, round=round_number),
        ]
    floor, own = floor_lines(points)
    # Medians over the rounds: the proxy adds 1.5, 2.0, 1.5 -> 1.5; the gateway adds 2.0, 3.0, 1.7 -> 2.0.
    assert floor.split()[-5] == "1.50" and own.split()[-4] == "0.50"
    assert floor_lines([_point("read", "gateway", 1, 70, p50=4.0)]) == []  # no floor measured: nothing to say


def test_rounds_must_be_positive() -> None:
    from bench.__main__ import build_parser

    assert build_parser().parse_args(["--rounds", "3"]).rounds == 3
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--rounds", "0"])
