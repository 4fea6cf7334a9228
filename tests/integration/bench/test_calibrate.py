"""The machine calibration the bench takes before its scenarios: each probe really runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.calibrate import calibrate, describe, fdatasync_ms, grpc_echo, python_loop_ns

pytestmark = pytest.mark.integration


def test_python_loop_and_fdatasync_report_positive_figures(tmp_path: Path) -> None:
    assert python_loop_ns(iterations=10_000, repeats=2) > 0
    assert fdatasync_ms(tmp_path, count=5) > 0
    assert list(tmp_path.iterdir()) == []  # the probe's file is gone


async def test_grpc_echo_round_trips_through_a_real_server() -> None:
    # bench.echo_proxy without an upstream answers every call itself: the driver counts
    # only OK answers, so a broken echo mode reports no calls (and no server CPU).
    echo = await grpc_echo(duration=0.5, warmup=0.1)
    assert echo["calls_per_second"] > 0
    assert echo["p50_ms"] > 0
    assert echo["server_cpu_us_per_call"] > 0


async def test_calibration_document_and_its_line(tmp_path: Path) -> None:
    calibration = await calibrate(tmp_path)
    assert set(calibration) == {"python_loop_ns", "fdatasync_ms", "grpc_echo_c1"}
    assert "error" not in calibration["grpc_echo_c1"]
    line = describe(calibration)
    assert line.startswith("Machine: python loop") and "grpc.aio echo at c1" in line and "fdatasync" in line
