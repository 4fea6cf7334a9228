"""Where the time goes: py-spy every mesh process while the driver loads one path.

``python -m bench.profile --path pay --store sqlite --concurrency 16 --duration 15``
starts the bench mesh (as ``make bench`` does), runs ``bench.driver`` against the gateway
and, for the same seconds, ``py-spy record`` on each of the five service processes. It
writes one collapsed-stack profile per process (py-spy's ``raw`` format, which flamegraph
tools and https://www.speedscope.app read) and prints, per process, its CPU seconds per call
and the functions with the most samples (self and inclusive), so docs/benchmarks.md can
say where a call's CPU is spent.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from bench.procstat import sample_cpu
from bench.stats import cpu_per_call


def summarise_collapsed(text: str, top: int = 15) -> dict[str, list[tuple[str, float]]]:
    """Self and inclusive shares of samples per function from py-spy's collapsed stacks.

    Each line is ``frame;frame;...;leaf count``; a function's inclusive count counts a
    stack once however often the function recurs in it.
    """
    self_counts: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(frame) for frame in stack.split(";") if frame]
        if not frames:
            continue
        total += count
        self_counts[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return {"self": [], "inclusive": []}
    return {
        "self": [(name, count / total) for name, count in self_counts.most_common(top)],
        "inclusive": [(name, count / total) for name, count in inclusive.most_common(top * 2)],
    }


def _short(frame: str) -> str:
    # py-spy frames read "function (path/to/module.py:line)"; keep the function and the file's tail.
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path, _, _line = where.rpartition(":")
    tail = "/".join(Path(path).parts[-2:]) if path else where
    return f"{name} ({tail})"


def _spec(mesh: Any, path: str, concurrency: int, warmup: float, duration: float) -> dict[str, Any]:
    """The bench's own driver spec for ``path``, aimed at the gateway."""
    from bench.scenarios import pay_spec, read_spec

    spec = pay_spec(mesh) if path == "pay" else read_spec(mesh)
    return {
        **spec,
        "target": f"127.0.0.1:{mesh.ports['gateway']}",
        "concurrency": concurrency,
        "warmup": warmup,
        "duration": duration,
    }


async def profile(options: argparse.Namespace) -> int:
    """Run the load and the profilers; print the summary; 0 when every call was OK."""
    from bench.mesh import running_mesh
    from tests.support.servers import postgres_server, redis_server

    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    out_dir: Path = options.out
    work_dir = Path(tempfile.mkdtemp(prefix="bench-profile-"))
    with contextlib.ExitStack() as stack:
        postgres = stack.enter_context(postgres_server()) if options.store == "postgres" else None
        redis = stack.enter_context(redis_server())
        async with running_mesh(
            work_dir, store=options.store, limiter="redis", postgres=postgres, redis_url=redis.url
        ) as mesh:
            pids = mesh.mesh.pids()
            spec = _spec(mesh, options.path, options.concurrency, options.warmup, options.duration)
            with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
                json.dump(spec, handle)
            seconds = int(options.warmup + options.duration)
            label = f"{options.path}-{options.store}-c{options.concurrency}"
            spies = {
                name: await asyncio.create_subprocess_exec(
                    py_spy,
                    "record",
                    "--pid",
                    str(pid),
                    "--duration",
                    str(seconds),
                    "--rate",
                    str(options.rate),
                    *(["--native"] if options.native else []),
                    *(["--gil"] if options.gil else []),
                    "--format",
                    "raw",
                    "--output",
                    str(out_dir / f"{label}-{name}.txt"),
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                )
                for name, pid in pids.items()
            }
            before = sample_cpu(pids)
            driver = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.driver", handle.name, stdout=asyncio.subprocess.PIPE
            )
            out, _ = await driver.communicate()
            after = sample_cpu(pids)
            os.unlink(handle.name)
            for spy in spies.values():
                await spy.wait()
    shutil.rmtree(work_dir, ignore_errors=True)
    result = json.loads(out.decode().strip().splitlines()[-1])
    _cpu, used = cpu_per_call(before, after, result["total_ok_calls"])
    calls = max(1, result["total_ok_calls"])
    print(f"{label}: {result['ok_calls'] / result['duration_s']:.1f} OK calls/s, statuses {result['statuses']}")
    for name in pids:
        collapsed = out_dir / f"{label}-{name}.txt"
        cpu_ms = 1000 * used.get(name, 0.0) / calls
        print(f"\n== {name}: {cpu_ms:.2f} CPU ms per call ({collapsed})")
        if not collapsed.exists():
            print("   (no profile: py-spy could not attach; run as root)")
            continue
        summary = summarise_collapsed(collapsed.read_text(), options.top)
        for kind in ("self", "inclusive"):
            print(f"   {kind}:")
            for function, share in summary[kind][: options.top]:
                print(f"   {100 * share:5.1f}%  {function}")
    return 0 if set(result["statuses"]) <= {"OK"} else 1


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.splitlines()[0])
    parser.add_argument("--path", choices=("read", "pay"), default="pay")
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--native", action="store_true", help="include C frames (sqlite, grpc core)")
    parser.add_argument("--gil", action="store_true", help="only samples holding the GIL: Python CPU, no idle threads")
    parser.add_argument("--out", type=Path, default=Path(".bench/profiles"))
    options = parser.parse_args(argv)
    options.out.mkdir(parents=True, exist_ok=True)
    return asyncio.run(profile(options))


if __name__ == "__main__":
    sys.exit(main())
