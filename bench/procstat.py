"""CPU time and peak memory of processes, read from /proc (psutil is not a dependency)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def parse_cpu_seconds(stat_line: str, ticks_per_second: int = CLOCK_TICKS) -> float:
    """utime + stime of a ``/proc/<pid>/stat`` line, in seconds.

    The command name (field 2) may hold spaces and parentheses, so fields are counted
    from the last ``)``.
    """
    rest = stat_line[stat_line.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state); utime and stime are fields 14 and 15.
    utime, stime = int(rest[11]), int(rest[12])
    return (utime + stime) / ticks_per_second


def parse_peak_rss_mb(status_text: str) -> float | None:
    """VmHWM (peak resident set size) of a ``/proc/<pid>/status`` text, in MiB."""
    for line in status_text.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0  # the kernel reports kB
    return None


def cpu_seconds(pid: int) -> float:
    """CPU seconds a live process has used so far (0.0 once it is gone)."""
    try:
        return parse_cpu_seconds(Path(f"/proc/{pid}/stat").read_text())
    except (OSError, ValueError, IndexError):
        return 0.0


def peak_rss_mb(pid: int) -> float | None:
    """Peak RSS of a live process in MiB (None once it is gone)."""
    try:
        return parse_peak_rss_mb(Path(f"/proc/{pid}/status").read_text())
    except OSError:
        return None


def sample_cpu(pids: Mapping[str, int]) -> dict[str, float]:
    """CPU seconds of each named process now."""
    return {name: cpu_seconds(pid) for name, pid in pids.items()}


def sample_peak_rss(pids: Mapping[str, int]) -> dict[str, float]:
    """Peak RSS of each named process so far, rounded to 0.1 MiB."""
    peaks = {name: peak_rss_mb(pid) for name, pid in pids.items()}
    return {name: round(value, 1) for name, value in peaks.items() if value is not None}
