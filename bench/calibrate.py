"""How fast this machine is, measured the same way at the start of every run.

The development VM's speed differs from one session to the next by up to 2x (and drifts
within a run), so a figure means little without the machine it was taken on. Three probes,
each a few seconds, taken before any scenario while the machine is otherwise idle:

- ``python_loop_ns``: a fixed pure-Python loop (integer arithmetic, a dict and an attribute
  per iteration), best of three: how fast the interpreter runs here.
- ``grpc_echo``: ``bench.echo_proxy`` in echo mode (answers every call itself) driven by
  ``bench.driver`` at concurrency 1: a grpc.aio round trip between two processes, with no
  application code, its latency and the server's CPU per call. Every hop of the mesh pays this.
- ``fdatasync_ms``: the median of 4 KiB appends, each followed by ``fdatasync``, in the run's
  work directory: what a durable commit waits for at the least.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ECHO_METHOD = "/bench.Echo/Echo"


class _Counter:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0


def python_loop_ns(iterations: int = 1_000_000, repeats: int = 3) -> float:
    """Nanoseconds per iteration of a fixed pure-Python loop, the best of ``repeats`` runs."""
    best = float("inf")
    for _ in range(repeats):
        counter, table = _Counter(), {}
        started = time.perf_counter_ns()
        for index in range(iterations):
            counter.value += index & 7
            table[index & 1023] = index
        best = min(best, (time.perf_counter_ns() - started) / iterations)
    return best


def fdatasync_ms(directory: Path, count: int = 100) -> float:
    """Median milliseconds of a 4 KiB append followed by ``fdatasync`` (a file in ``directory``)."""
    path = directory / f"calibrate-fsync-{os.getpid()}.bin"
    block = b"\0" * 4096
    timings: list[float] = []
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for _ in range(count):
            started = time.perf_counter()
            os.write(descriptor, block)
            os.fdatasync(descriptor)
            timings.append(time.perf_counter() - started)
    finally:
        os.close(descriptor)
        path.unlink(missing_ok=True)
    return statistics.median(timings) * 1000


async def grpc_echo(duration: float = 2.0, warmup: float = 0.5) -> dict[str, float]:
    """A bare grpc.aio round trip at concurrency 1: calls/s, p50 and the server's CPU per call."""
    import base64

    from bench.scenarios import run_driver
    from meshcli.mesh import wait_serving
    from tests.support.servers import free_port

    port = free_port()
    server = await asyncio.create_subprocess_exec(sys.executable, "-m", "bench.echo_proxy", str(port))
    try:
        if not await wait_serving(port, timeout=30):
            raise RuntimeError("the echo server did not start")
        spec = {
            "mode": "raw",
            "target": f"127.0.0.1:{port}",
            "method": ECHO_METHOD,
            "request_b64": base64.b64encode(b"\x0a\x10calibration-ping").decode(),
            "metadata": [[]],
            "concurrency": 1,
            "warmup": warmup,
            "duration": duration,
        }
        # run_driver samples the server's CPU around the driver's run (warm-up included).
        result, _cpu, used = await run_driver(spec, {"echo": server.pid})
    finally:
        if server.returncode is None:
            server.terminate()
            await server.wait()
    calls = result["total_ok_calls"]
    return {
        "calls_per_second": round(result["ok_calls"] / result["duration_s"], 1),
        "p50_ms": round(result["latency"]["p50_ms"], 3),
        "server_cpu_us_per_call": round(used["echo"] / calls * 1e6, 1) if calls else 0.0,
    }


async def calibrate(work_dir: Path) -> dict[str, Any]:
    """Every probe; a probe that cannot run here is reported as its error, never fatal."""
    outcome: dict[str, Any] = {}
    outcome["python_loop_ns"] = round(python_loop_ns(), 1)
    outcome["fdatasync_ms"] = round(fdatasync_ms(work_dir), 3)
    try:
        outcome["grpc_echo_c1"] = await grpc_echo()
    except Exception as error:  # the figures still mean something without this probe
        outcome["grpc_echo_c1"] = {"error": f"{type(error).__name__}: {error}"}
    return outcome


def describe(calibration: dict[str, Any]) -> str:
    """One line for the report under the table."""
    parts = [f"python loop {calibration.get('python_loop_ns', '-')} ns/iteration"]
    echo = calibration.get("grpc_echo_c1") or {}
    if "error" in echo:
        parts.append(f"grpc.aio echo not measured ({echo['error']})")
    elif echo:
        parts.append(
            f"grpc.aio echo at c1 {echo['calls_per_second']:,.0f} calls/s, p50 {echo['p50_ms']:.2f} ms, "
            f"{echo['server_cpu_us_per_call']:.0f} us of server CPU per call"
        )
    parts.append(f"fdatasync {calibration.get('fdatasync_ms', '-')} ms")
    return "Machine: " + "; ".join(parts)
