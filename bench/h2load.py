"""h2load (nghttp2-client) as a raw gRPC unary load generator, and its output parser.

h2load speaks HTTP/2 but not gRPC: it sends a prepared length-prefixed message as the
POST body and sees HTTP statuses, never the ``grpc-status`` trailer. Its rows are
therefore marked ``grpc_status_checked=False``; the harness checks the same call's status
with the Python driver before trusting them. It reports min/mean/max latency only.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

UNIT_SECONDS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def grpc_frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message: no compression flag, 4-byte big-endian length."""
    return struct.pack(">BI", 0, len(message)) + message


def _seconds(text: str) -> float:
    match = re.fullmatch(r"([0-9.]+)(us|ms|s)", text.strip())
    if match is None:
        raise ValueError(f"not an h2load duration: {text!r}")
    return float(match.group(1)) * UNIT_SECONDS[match.group(2)]


@dataclass
class H2loadResult:
    """What one h2load run reports."""

    duration_s: float
    requests_per_second: float
    succeeded: int
    failed: int
    errored: int
    status_2xx: int
    latency_min_s: float
    latency_max_s: float
    latency_mean_s: float


def parse_output(text: str) -> H2loadResult:
    """Parse h2load's summary (``finished in``, ``requests:``, ``status codes:``, ``time for request:``)."""
    finished = re.search(r"finished in ([0-9.]+)(us|ms|s), ([0-9.]+) req/s", text)
    requests = re.search(r"requests: .*?(\d+) succeeded, (\d+) failed, (\d+) errored", text)
    codes = re.search(r"status codes: (\d+) 2xx", text)
    timing = re.search(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)", text)
    if not (finished and requests and codes and timing):
        raise ValueError("unrecognised h2load output")
    return H2loadResult(
        duration_s=float(finished.group(1)) * UNIT_SECONDS[finished.group(2)],
        requests_per_second=float(finished.group(3)),
        succeeded=int(requests.group(1)),
        failed=int(requests.group(2)),
        errored=int(requests.group(3)),
        status_2xx=int(codes.group(1)),
        latency_min_s=_seconds(timing.group(1)),
        latency_max_s=_seconds(timing.group(2)),
        latency_mean_s=_seconds(timing.group(3)),
    )


def available() -> bool:
    """True when h2load is installed."""
    return shutil.which("h2load") is not None


def run(
    url: str, message: bytes, headers: list[tuple[str, str]], *, concurrency: int, duration: float, warmup: float
) -> H2loadResult:
    """One connection with ``concurrency`` streams for ``duration`` seconds after a warm-up."""
    with tempfile.NamedTemporaryFile(prefix="bench-h2load-", suffix=".bin", delete=False) as body:
        body.write(grpc_frame(message))
    command = [
        "h2load",
        "-c1",
        "-t1",
        f"-m{concurrency}",
        f"-D{max(1, round(duration))}",
        f"--warm-up-time={max(1, round(warmup))}",
        "-d",
        body.name,
        "-H",
        "content-type: application/grpc",
        "-H",
        "te: trailers",
    ]
    for name, value in headers:
        command += ["-H", f"{name}: {value}"]
    command.append(url)
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=duration + warmup + 60, check=False)
    finally:
        Path(body.name).unlink(missing_ok=True)
    return parse_output(completed.stdout)
