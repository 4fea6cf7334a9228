"""``python -m bench`` (``make bench``): run the scenarios, print the table, write the JSON.

Examples::

    make bench                                    # everything, ~5-8 minutes
    make bench BENCH_ARGS="--quick"               # short points, for a smoke run
    python -m bench --scenario read --concurrency 1,16 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import h2load
from bench.bar import check_bar, floor_lines
from bench.calibrate import calibrate, describe
from bench.ratios import check_ratios
from bench.stats import format_table, results_document

SCENARIOS = ("echo-floor", "read", "token", "pay", "replicas", "growth", "mix", "limiter", "ledger")


def parse_concurrency(text: str) -> list[int]:
    """``1,16,64`` -> [1, 16, 64]; every value must be a positive integer."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("a comma-separated list of integers, e.g. 1,16,64") from None
    if not values or any(value < 1 for value in values):
        raise argparse.ArgumentTypeError("every concurrency must be >= 1")
    return values


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("a positive integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError("a positive integer")
    return value


def parse_stores(text: str) -> list[str]:
    """``sqlite,postgres`` -> ["sqlite", "postgres"]."""
    stores = [part.strip() for part in text.split(",") if part.strip()]
    if not stores or any(store not in ("sqlite", "postgres") for store in stores):
        raise argparse.ArgumentTypeError("sqlite, postgres or sqlite,postgres")
    return stores


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", action="append", choices=("all", *SCENARIOS), help="repeatable; default all")
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per point (default 5)")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each point (default 1)")
    parser.add_argument("--concurrency", type=parse_concurrency, default=[1, 16, 64], help="default 1,16,64")
    parser.add_argument("--store", type=parse_stores, default=["sqlite", "postgres"], help="default sqlite,postgres")
    parser.add_argument("--limiter", choices=("memory", "redis"), default="redis", help="the gateway's limiter backend")
    parser.add_argument(
        "--rounds",
        type=_positive_int,
        default=3,
        help="echo-floor and read: the targets take turns this many times per concurrency; "
        "the bar takes the median of the rounds (default 3)",
    )
    parser.add_argument(
        "--cpus",
        type=int,
        default=2,
        help="pin the bench and everything it starts to this many CPUs (the bar's 2-core machine); 0 = all",
    )
    parser.add_argument("--no-h2load", action="store_true", help="skip the h2load rows")
    parser.add_argument(
        "--preload-scale",
        type=float,
        default=1.0,
        help="growth: the preloaded stores' size, 1.0 = about 100x the demo (1M payments); "
        "generated once per schema version and kept in --data-dir",
    )
    parser.add_argument(
        "--data-dir", type=Path, default=Path(".bench") / "data", help="where the preloaded stores are cached"
    )
    parser.add_argument("--quick", action="store_true", help="2 s points, 0.5 s warm-up: a smoke run")
    parser.add_argument("--output", type=Path, default=None, help="JSON path (default .bench/results-<time>.json)")
    return parser


def machine_info(cpus: list[int]) -> dict[str, Any]:
    """nproc, the CPU model, memory, and which CPUs the run was pinned to."""
    model, memory_kb = "unknown", 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError, ValueError, IndexError):
        memory_kb = int(Path("/proc/meminfo").read_text().splitlines()[0].split()[1])
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(memory_kb / 1024 / 1024, 1),
        "pinned_cpus": cpus,
        "python": sys.version.split()[0],
    }


def pin_cpus(count: int) -> list[int]:
    """Restrict this process (and so every child it starts) to the first ``count`` CPUs."""
    available = sorted(os.sched_getaffinity(0))
    if count <= 0 or count >= len(available):
        return available
    chosen = available[:count]
    os.sched_setaffinity(0, chosen)
    return chosen


def _room_for_three_meshes(postgres: Any) -> None:
    """The bar runs three meshes on one PostgreSQL (fresh, two payment replicas, preloaded):
    up to 20 connections per service process each, more than a test server's 300."""
    from tests.support.servers import PrivatePostgres

    if isinstance(postgres, PrivatePostgres) and "max_connections=300" in postgres.options:
        postgres.stop("fast")
        postgres.options = postgres.options.replace("max_connections=300", "max_connections=800")
        postgres.start()


async def run_all(options: Any, scenarios: set[str]) -> Any:
    """Start what the chosen scenarios need, run them in order, return the Run."""
    from bench import scenarios as sc
    from bench.ledger_bench import ledger
    from bench.mesh import running_mesh
    from bench.preload import preloader
    from bench.rounds import pay_info, pay_rounds
    from tests.support.servers import ServerUnavailable, create_database, postgres_server, redis_server

    run = sc.Run(options)
    run.say("calibrating: how fast this machine runs Python, a grpc.aio round trip and fdatasync")
    run.calibration = await calibrate(options.work_dir)
    run.say(describe(run.calibration))
    with contextlib.ExitStack() as stack:
        postgres = redis = None
        store_scenarios = {"pay", "mix", "ledger", "read", "echo-floor", "token", "replicas", "growth"}
        needs_postgres = "postgres" in options.stores and scenarios & store_scenarios
        if needs_postgres:
            try:
                postgres = stack.enter_context(postgres_server())
                _room_for_three_meshes(postgres)
            except ServerUnavailable as error:
                run.skipped["postgres"] = str(error)
                options.stores = [s for s in options.stores if s != "postgres"]
        if options.limiter == "redis" or "limiter" in scenarios:
            try:
                redis = stack.enter_context(redis_server())
            except ServerUnavailable as error:
                run.skipped["redis"] = str(error)
                if options.limiter == "redis":
                    run.say("no redis-server: the gateway runs the in-process limiter")
                    options.limiter = "memory"
        mesh_scenarios = scenarios & {"echo-floor", "read", "token", "pay", "replicas", "growth", "mix"}
        for index, store in enumerate(options.stores):
            wanted = set(mesh_scenarios) if index == 0 else mesh_scenarios - {"echo-floor", "read", "token"}
            if not wanted:
                continue
            run.say(f"starting the mesh ({store}, {options.limiter} limiter) for {', '.join(sorted(wanted))}")
            common = {
                "store": store,
                "limiter": options.limiter,
                "postgres": postgres,
                "redis_url": redis.url if redis else None,
            }
            try:
                async with contextlib.AsyncExitStack() as meshes:
                    mesh = await meshes.enter_async_context(running_mesh(options.work_dir, **common))
                    replicas = preloaded = None
                    if "replicas" in wanted and store == "postgres":
                        run.say("  and a mesh with two payment replicas")
                        replicas = await meshes.enter_async_context(
                            running_mesh(options.work_dir, payment_replicas=2, **common)
                        )
                    if "growth" in wanted:
                        run.say(f"  and a mesh on preloaded stores (scale {options.preload_scale:g})")
                        preload = await preloader(options, store, postgres, run.say)
                        preloaded = await meshes.enter_async_context(
                            running_mesh(options.work_dir, before_start=preload, **common)
                        )
                    if wanted & {"echo-floor", "read", "token"}:
                        await sc.read_targets(run, mesh, wanted)
                    if "pay" in wanted:
                        await pay_info(run, mesh)
                    if wanted & {"pay", "replicas", "growth"}:
                        await pay_rounds(run, mesh, replicas=replicas, preloaded=preloaded)
                    if "mix" in wanted:
                        await sc.mix(run, mesh)
            except Exception as error:  # a mesh that will not start is a finding, not a crash
                run.skipped[f"mesh/{store}"] = f"{type(error).__name__}: {error}"
                run.say(f"mesh on {store} failed: {error}")
        if "limiter" in scenarios and redis is not None:
            run.say("limiter: RateLimiter + RedisBackend vs redis-benchmark")
            await sc.limiter(run, redis)
        if "ledger" in scenarios:
            for store in options.stores:
                run.say(f"ledger on {store}")
                if store == "sqlite":
                    url = f"sqlite:///{options.work_dir / 'ledger-bench.db'}"
                else:
                    url = await create_database(postgres, f"bench_ledger_{os.getpid()}")
                await ledger(run, store, url)
    return run


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = build_parser().parse_args(argv)
    scenarios = set(SCENARIOS) if not args.scenario or "all" in args.scenario else set(args.scenario)
    duration, warmup = (2.0, 0.5) if args.quick else (args.duration, args.warmup)
    cpus = pin_cpus(args.cpus)
    work_dir = Path(tempfile.mkdtemp(prefix="obm-bench-"))
    from bench.scenarios import Options

    options = Options(
        scenarios=sorted(scenarios),
        duration=duration,
        warmup=warmup,
        concurrency=args.concurrency,
        stores=list(args.store),
        limiter=args.limiter,
        work_dir=work_dir,
        h2load=not args.no_h2load,
        rounds=args.rounds,
        preload_scale=args.preload_scale,
        data_dir=args.data_dir,
    )
    started = dt.datetime.now(dt.UTC)
    try:
        run = asyncio.run(run_all(options, scenarios))
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    print(format_table(run.measurements))
    ratios = check_ratios(run.measurements, options.stores)
    print("\nThe bar (issue 27), each a median over the rounds of ratios measured side by side:")
    print("\n".join(check.line() for check in ratios))
    checks = check_bar(run.measurements, options.stores)
    print("\nInformation: issue 10's absolute rows (read them with the calibration below):")
    print("\n".join(check.line().replace("[PASS]", "[info]").replace("[FAIL]", "[info]") for check in checks))
    print("\n".join(floor_lines(run.measurements)))
    print(describe(run.calibration))
    for what, why in run.skipped.items():
        print(f"  skipped {what}: {why}")
    output = args.output or Path(".bench") / f"results-{started:%Y%m%dT%H%M%SZ}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    document = results_document(
        run.measurements,
        machine={**machine_info(cpus), "calibration": run.calibration},
        options={
            "scenarios": options.scenarios,
            "duration_s": duration,
            "warmup_s": warmup,
            "concurrency": options.concurrency,
            "stores": options.stores,
            "limiter": options.limiter,
            "h2load": options.h2load and h2load.available(),
            "rounds": options.rounds,
            "preload_scale": options.preload_scale,
            "started": started.isoformat(),
        },
        skipped=run.skipped,
    )
    document["bar"] = [check.__dict__ for check in ratios]
    document["absolute_rows"] = [check.__dict__ for check in checks]
    output.write_text(json.dumps(document, indent=2))
    print(f"\nJSON: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
