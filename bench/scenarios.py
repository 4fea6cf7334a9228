"""The six scenarios: echo-floor, read, token, pay, limiter and ledger.

Each appends :class:`~bench.stats.Measurement` rows to a :class:`Run`; a scenario that
cannot run here (a missing tool, a service that does not start) records why in
``run.skipped`` instead of failing the whole benchmark.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import yaml

from bench import h2load
from bench.calibrate import python_loop_ns
from bench.loadloop import LoopResult, closed_loop
from bench.mesh import BENCH_RATELIMITS, RunningMesh
from bench.procstat import sample_cpu, sample_peak_rss
from bench.stats import LatencySummary, Measurement, cpu_per_call
from openbank.account.v1 import account_pb2
from openbank.identity.v1 import token_pb2
from tests.support.servers import free_port

GET_BALANCE = "/openbank.account.v1.AccountService/GetBalance"
ISSUE_TOKEN = "/openbank.identity.v1.TokenService/IssueToken"
CREATE_PAYMENT = "/openbank.payment.v1.PaymentService/CreatePayment"
SETTLE_TIMEOUT_SECONDS = 30.0


@dataclass
class Options:
    """What the command line asked for."""

    scenarios: list[str]
    duration: float
    warmup: float
    concurrency: list[int]
    stores: list[str]
    limiter: str
    work_dir: Path
    h2load: bool = True
    rounds: int = 3
    preload_scale: float = 1.0
    data_dir: Path = Path(".bench") / "data"


@dataclass
class Run:
    """Everything measured so far, and what was skipped and why."""

    options: Options
    measurements: list[Measurement] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)

    def record(self, measurement: Measurement) -> None:
        """Keep a point, with the machine's load and speed as it ended."""
        measurement.load_1m = os.getloadavg()[0]
        # This VM's CPU speed drifts by up to 2x within minutes (the same loop's CPU time
        # moves from 200 to 360 ns an iteration): each point says how fast the machine ran.
        measurement.speed_ns = round(python_loop_ns(iterations=200_000, repeats=1), 1)
        self.measurements.append(measurement)

    def say(self, text: str) -> None:
        """Progress on stderr, so stdout stays the table."""
        print(text, file=sys.stderr, flush=True)


# ---- load through gRPC: the Python driver and h2load ----


async def run_driver(
    spec: dict[str, Any], pids: dict[str, int]
) -> tuple[dict[str, Any], float | None, dict[str, float]]:
    """Run ``bench.driver`` in its own process; returns its result and the CPU per OK call."""
    with tempfile.NamedTemporaryFile("w", prefix="bench-spec-", suffix=".json", delete=False) as handle:
        json.dump(spec, handle)
    try:
        before = sample_cpu(pids)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.driver", handle.name, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await process.communicate()
        after = sample_cpu(pids)
    finally:
        os.unlink(handle.name)
    if process.returncode != 0 or not out.strip():
        raise RuntimeError(f"the driver failed with exit code {process.returncode}")
    result = json.loads(out.decode().strip().splitlines()[-1])
    cpu, used = cpu_per_call(before, after, result["total_ok_calls"])
    return result, cpu, used


async def driver_point(
    run: Run, scenario: str, target: str, spec: dict[str, Any], pids: dict[str, int], store: str | None
) -> Measurement:
    """One Python-driver point, recorded in ``run``."""
    spec = dict(spec, concurrency=spec["concurrency"], warmup=run.options.warmup, duration=run.options.duration)
    result, cpu, used = await run_driver(spec, pids)
    notes = ""
    if "payment_states" in result:
        notes = "final states: " + ", ".join(f"{k} {v}" for k, v in sorted(result["payment_states"].items()))
    if "refund_states" in result:
        notes += "; refunds: " + ", ".join(f"{k} {v}" for k, v in sorted(result["refund_states"].items()))
    if result.get("external_states"):
        notes += "; to other banks: " + ", ".join(f"{k} {v}" for k, v in sorted(result["external_states"].items()))
    measurement = Measurement(
        scenario=scenario,
        target=target,
        concurrency=spec["concurrency"],
        duration_s=result["duration_s"],
        ok_calls=result["ok_calls"],
        statuses=result["statuses"],
        latency=LatencySummary(**result["latency"]),
        store=store,
        cpu_seconds_per_call=cpu,
        cpu_seconds_by_process=used,
        peak_rss_mb=sample_peak_rss(pids),
        notes=notes,
    )
    run.record(measurement)
    return measurement


async def h2load_point(
    run: Run,
    scenario: str,
    target: str,
    port: int,
    message: bytes,
    metadata: tuple[tuple[str, str], ...],
    concurrency: int,
    pids: dict[str, int],
    store: str | None,
) -> Measurement | None:
    """One h2load point (raw capacity), after checking the call answers OK; None if it could not run."""
    status = await settle(port, GET_BALANCE, message, metadata)
    if status != "OK":
        run.skipped[f"{scenario}/{target}/h2load/c{concurrency}"] = f"probe call answered {status}"
        return None
    before = sample_cpu(pids)
    result = await asyncio.to_thread(
        h2load.run,
        f"http://127.0.0.1:{port}{GET_BALANCE}",
        message,
        list(metadata),
        concurrency=concurrency,
        duration=run.options.duration,
        warmup=run.options.warmup,
    )
    after = sample_cpu(pids)
    # h2load's CPU sample spans its warm-up too; the warm-up calls are not in its count, so
    # CPU per call is estimated from the measured rate over the whole sampled span.
    calls_in_span = result.requests_per_second * (result.duration_s + max(1, round(run.options.warmup)))
    cpu, used = cpu_per_call(before, after, round(calls_in_span))
    measurement = Measurement(
        scenario=scenario,
        target=target,
        concurrency=concurrency,
        duration_s=result.duration_s,
        ok_calls=result.succeeded,
        statuses={"HTTP_2XX": result.status_2xx, "FAILED": result.failed, "ERRORED": result.errored},
        latency=LatencySummary(max_ms=result.latency_max_s * 1000, mean_ms=result.latency_mean_s * 1000),
        tool="h2load",
        store=store,
        cpu_seconds_per_call=cpu,
        cpu_seconds_by_process=used,
        peak_rss_mb=sample_peak_rss(pids),
        grpc_status_checked=False,
        notes="h2load sees HTTP status only (probe call checked OK); latency: mean and max only",
    )
    run.record(measurement)
    return measurement


async def probe_status(port: int, method: str, message: bytes, metadata: tuple[tuple[str, str], ...]) -> str:
    """The gRPC status name of one call."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            await channel.unary_unary(method)(message, metadata=metadata, timeout=10)
        except grpc.aio.AioRpcError as error:
            return error.code().name
    return "OK"


async def settle(port: int, method: str, message: bytes, metadata: tuple[tuple[str, str], ...]) -> str:
    """Wait (up to 30 s) until a probe answers OK, so one point's backlog does not bleed into the next."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_SECONDS
    status = await probe_status(port, method, message, metadata)
    while status != "OK" and time.monotonic() < deadline:
        await asyncio.sleep(1.0)
        status = await probe_status(port, method, message, metadata)
    return status


class EchoProxy:
    """bench.echo_proxy in its own process, in front of one upstream (``None``: the bare echo
    server, answering every call itself, as the calibration times it)."""

    def __init__(self, upstream_port: int | None) -> None:
        self.port = free_port()
        self._upstream = [] if upstream_port is None else [f"127.0.0.1:{upstream_port}"]
        self.process: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> EchoProxy:
        from meshcli.mesh import wait_serving

        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.echo_proxy", str(self.port), *self._upstream
        )
        # The health check is forwarded like any call: SERVING means proxy and upstream are up.
        if not await wait_serving(self.port, timeout=30):
            raise RuntimeError("the echo proxy did not start")
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self.process and self.process.returncode is None:
            self.process.terminate()
            await self.process.wait()


def read_spec(mesh: RunningMesh) -> dict[str, Any]:
    """The driver spec of the read path: the first payer's GetBalance, as raw bytes (no target yet)."""
    payer = mesh.payers[0]
    message = account_pb2.GetBalanceRequest(account=payer.account).SerializeToString()
    return {
        "mode": "raw",
        "method": GET_BALANCE,
        "request_b64": base64.b64encode(message).decode(),
        "metadata": [list(map(list, payer.metadata))],
    }


def pay_spec(mesh: RunningMesh) -> dict[str, Any]:
    """The driver spec of the pay path: wallet top-ups through the gateway, payers taking turns."""
    return {
        "mode": "pay",
        "target": f"127.0.0.1:{mesh.ports['gateway']}",
        "payers": [{"metadata": list(map(list, p.metadata)), "account": p.account} for p in mesh.payers],
        "creditor_wallet": mesh.creditor_wallet,
    }


def token_spec(mesh: RunningMesh) -> dict[str, Any]:
    """The driver spec of the token endpoint: IssueToken (client credentials, client_secret_post)."""
    partner = mesh.demo["partners"]["acme"]
    message = token_pb2.IssueTokenRequest(
        grant_type=token_pb2.GRANT_TYPE_CLIENT_CREDENTIALS,
        client_id=partner["client_id"],
        client_secret=partner["client_secret"],
        scopes=["consents:read"],
    ).SerializeToString()
    return {"mode": "raw", "method": ISSUE_TOKEN, "request_b64": base64.b64encode(message).decode(), "metadata": [[]]}


def client_auth_point(run: Run, rounds: int = 20_000) -> Measurement:
    """CPU of one client authentication (a right and a wrong client secret, alternately), in-process."""
    from services.identity.domain.secrets import ClientSecretHasher, SecretHasher, new_secret

    hasher = ClientSecretHasher(os.urandom(32), legacy=SecretHasher(time_cost=1, memory_cost_kib=8, parallelism=1))
    secret = new_secret()
    stored = hasher.hash(secret)
    started_wall, started = time.monotonic(), time.process_time()
    for index in range(rounds):
        hasher.verify(stored, secret if index % 2 else "a-wrong-secret")
    cpu, wall = time.process_time() - started, time.monotonic() - started_wall
    measurement = Measurement(
        scenario="token",
        target="client-auth",
        concurrency=1,
        duration_s=wall,
        ok_calls=rounds,
        statuses={"OK": rounds},
        latency=LatencySummary(mean_ms=wall / rounds * 1000),
        tool="inproc",
        cpu_seconds_per_call=cpu / rounds,
        grpc_status_checked=False,
        notes="ClientSecretHasher.verify (keyed hash), no gRPC",
    )
    run.record(measurement)
    return measurement


async def read_targets(run: Run, mesh: RunningMesh, scenarios: set[str]) -> None:
    """echo-floor (proxy + direct), read (the gateway) and token (IssueToken) on one mesh."""
    payer = mesh.payers[0]
    message = account_pb2.GetBalanceRequest(account=payer.account).SerializeToString()
    base_spec = read_spec(mesh)
    specs = {"token": token_spec(mesh)}
    mesh_pids = mesh.mesh.pids()
    if "token" in scenarios:
        point = client_auth_point(run)
        run.say(f"  token/client-auth: {point.cpu_seconds_per_call * 1e6:.1f} µs of CPU per client authentication")
    async with EchoProxy(mesh.ports["account"]) as proxy, EchoProxy(None) as echo:
        assert proxy.process is not None and echo.process is not None
        targets: list[tuple[str, str, int, dict[str, int]]] = []
        # echo-floor's rows are read's (and token's) baselines too: measured once, under echo-floor.
        # The bare echo server (no application code) is the machine's own yardstick.
        if scenarios & {"echo-floor", "read", "token"}:
            targets += [
                ("echo-floor", "bare-echo", echo.port, {"echo": echo.process.pid}),
                ("echo-floor", "account-direct", mesh.ports["account"], {"account": mesh_pids["account"]}),
                (
                    "echo-floor",
                    "echo-proxy",
                    proxy.port,
                    {"echo-proxy": proxy.process.pid, "account": mesh_pids["account"]},
                ),
            ]
        if "read" in scenarios:
            targets.append(("read", "gateway", mesh.ports["gateway"], mesh_pids))
        if "token" in scenarios:
            targets.append(("token", "gateway", mesh.ports["gateway"], mesh_pids))
        # The targets take turns at each concurrency, round after round: the points the bar
        # compares are seconds apart, not minutes, so a drift in the machine's speed weighs on
        # both sides of a ratio alike (this VM's speed moves by up to 2x within minutes).
        for concurrency in run.options.concurrency:
            for round_number in range(1, run.options.rounds + 1):
                for scenario, target, port, pids in targets:
                    spec = dict(specs.get(scenario, base_spec), target=f"127.0.0.1:{port}", concurrency=concurrency)
                    await settle(port, GET_BALANCE, message, payer.metadata)
                    point = await driver_point(run, scenario, target, spec, pids, mesh.store)
                    point.round = round_number
                    run.say(
                        f"  {scenario}/{target} c{concurrency} round {round_number}: "
                        f"{point.calls_per_second:.0f} calls/s (python)"
                    )
                    if run.options.h2load and h2load.available() and scenario != "token":
                        measured = await h2load_point(
                            run, scenario, target, port, message, payer.metadata, concurrency, pids, mesh.store
                        )
                        if measured is not None:
                            measured.round = round_number
        if run.options.h2load and not h2load.available():
            run.skipped["h2load"] = "h2load is not installed (scripts/ensure_bench_tools.sh installs it)"


async def pay(run: Run, mesh: RunningMesh) -> None:
    """CreatePayment through the gateway until SETTLED, at each concurrency."""
    spec = pay_spec(mesh)
    payer = mesh.payers[0]
    probe = account_pb2.GetBalanceRequest(account=payer.account).SerializeToString()
    for concurrency in run.options.concurrency:
        await settle(mesh.ports["gateway"], GET_BALANCE, probe, payer.metadata)
        point = await driver_point(
            run, "pay", "gateway", dict(spec, concurrency=concurrency), mesh.mesh.pids(), mesh.store
        )
        run.say(f"  pay/{mesh.store} c{concurrency}: {point.calls_per_second:.0f} settled/s, {point.statuses}")
        if point.ok_calls == 0 and point.statuses:
            run.skipped[f"pay/{mesh.store}"] = f"no payment settled: {point.statuses} {point.notes}"
            return


async def mix(run: Run, mesh: RunningMesh) -> None:
    """Top-ups, refunds of them (one call in four) and payments to other banks through the scheme
    simulator (one call in four) through the gateway, at each concurrency: a call counts when its
    payment or refund is SETTLED."""
    spec = dict(pay_spec(mesh), mode="mix", minor_units=2, refund_every=4, external_every=4)
    payer = mesh.payers[0]
    probe = account_pb2.GetBalanceRequest(account=payer.account).SerializeToString()
    for concurrency in run.options.concurrency:
        await settle(mesh.ports["gateway"], GET_BALANCE, probe, payer.metadata)
        point = await driver_point(
            run, "mix", "gateway", dict(spec, concurrency=concurrency), mesh.mesh.pids(), mesh.store
        )
        run.say(f"  mix/{mesh.store} c{concurrency}: {point.calls_per_second:.0f} settled/s, {point.statuses}")
        if point.ok_calls == 0 and point.statuses:
            run.skipped[f"mix/{mesh.store}"] = f"nothing settled: {point.statuses} {point.notes}"
            return


# ---- the limiter alone, and redis-benchmark of the same script ----


def parse_redis_benchmark_csv(text: str) -> dict[str, float]:
    """The first result row of ``redis-benchmark --csv``: rps and latencies (ms)."""
    rows = list(csv.DictReader(io.StringIO(text.strip())))
    if not rows:
        raise ValueError("redis-benchmark printed no result")
    return {key: float(value) for key, value in rows[0].items() if key != "test"}


async def limiter(run: Run, redis: Any) -> None:
    """Decisions/s of RateLimiter + RedisBackend in this process vs redis-benchmark EVALSHA of
    the same script, taking turns round after round at each concurrency (the bar's ratio is
    the median of the rounds' own ratios); the leased limiter once, as information."""
    from gateway.ratelimit.config import parse_config
    from gateway.ratelimit.gcra import LUA_GCRA

    config = parse_config(yaml.safe_load(BENCH_RATELIMITS))
    pids = {"bench (limiter)": os.getpid()}
    if getattr(redis, "process", None) is not None:
        pids["redis-server"] = redis.process.pid
    sha = None
    if shutil.which("redis-benchmark") is None:
        run.skipped["limiter/redis-benchmark"] = "redis-benchmark is not installed (redis-tools)"
    else:
        import redis.asyncio as redis_client

        client = redis_client.Redis.from_url(redis.url)
        sha = await client.script_load(LUA_GCRA)
        await client.aclose()
    for concurrency in run.options.concurrency:
        for round_number in range(1, run.options.rounds + 1):
            # The bar compares every decision made in Redis with redis-benchmark running the same
            # script; the leased row is what the gateway runs by default (most calls never reach Redis).
            strict = await _limiter_point(run, redis.url, config, pids, "RateLimiter+Redis", 0.0, concurrency)
            strict.round = round_number
            if sha is not None:
                measured = await _redis_benchmark_point(run, redis.url, sha, config, pids, concurrency)
                if measured is not None:
                    measured.round = round_number
            if round_number == 1:
                await _limiter_point(run, redis.url, config, pids, "RateLimiter+Redis leased", 0.05, concurrency)


async def _limiter_point(
    run: Run, url: str, config: Any, pids: dict[str, int], target: str, lease_seconds: float, concurrency: int
) -> Measurement:
    from gateway.ratelimit import RateLimiter, RedisBackend

    backend = RedisBackend(url, prefix=f"bench:{uuid.uuid4().hex[:6]}:", lease_seconds=lease_seconds)
    rate_limiter = RateLimiter(lambda: config, backend)

    async def decide(index: int) -> int:
        await rate_limiter.check(f"partner-{index}", "bench", "reads")
        return 1

    before = sample_cpu(pids)
    result = await closed_loop(
        decide, concurrency=concurrency, warmup=run.options.warmup, duration=run.options.duration
    )
    after = sample_cpu(pids)
    await backend.close()
    point = record_loop(run, "limiter", target, concurrency, result, None, before, after, pids, "decisions")
    run.say(f"  {target} c{concurrency}: {result.ok_units / result.duration_s:.0f} decisions/s")
    return point


async def _redis_benchmark_point(
    run: Run, url: str, sha: str, config: Any, pids: dict[str, int], concurrency: int
) -> Measurement | None:
    limit = config.limit_for("bench", "reads")
    assert limit is not None
    host_port = url.split("//", 1)[1].split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)
    requests = max(2_000, int(25_000 * run.options.duration))
    command = [
        "redis-benchmark", "-h", host, "-p", port, "-n", str(requests), "-c", str(concurrency),
        "-r", "100000", "--csv",
        "EVALSHA", sha, "1", "bench:rb:__rand_int__", "", str(limit.emission_us), str(limit.burst), "1",
    ]  # fmt: skip
    before = sample_cpu(pids)
    started = time.perf_counter()
    completed = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    after = sample_cpu(pids)
    try:
        figures = parse_redis_benchmark_csv(completed.stdout)
    except ValueError:
        run.skipped[f"limiter/redis-benchmark/c{concurrency}"] = completed.stderr.strip()[:200] or "no output"
        return None
    rps = figures["rps"]
    _, used = cpu_per_call(before, after, requests)
    measurement = Measurement(
        scenario="limiter",
        target="redis-benchmark EVALSHA",
        concurrency=concurrency,
        duration_s=requests / rps if rps else elapsed,
        ok_calls=requests,
        statuses={"OK": requests},
        latency=LatencySummary(
            p50_ms=figures.get("p50_latency_ms", 0.0),
            p95_ms=figures.get("p95_latency_ms", 0.0),
            p99_ms=figures.get("p99_latency_ms", 0.0),
            max_ms=figures.get("max_latency_ms", 0.0),
            mean_ms=figures.get("avg_latency_ms", 0.0),
        ),
        tool="redis-benchmark",
        cpu_seconds_per_call=used.get("redis-server", 0.0) / requests if "redis-server" in used else None,
        cpu_seconds_by_process={"redis-server": used.get("redis-server", 0.0)},
        grpc_status_checked=False,
        notes="cpu/call: redis-server only",
    )
    run.record(measurement)
    run.say(f"  redis-benchmark EVALSHA c{concurrency}: {rps:.0f}/s")
    return measurement


def record_loop(
    run: Run,
    scenario: str,
    target: str,
    concurrency: int,
    result: LoopResult,
    store: str | None,
    before: dict[str, float],
    after: dict[str, float],
    pids: dict[str, int],
    unit: str,
) -> Measurement:
    """Record one in-process closed-loop point (the limiter, the ledger)."""
    cpu, used = cpu_per_call(before, after, result.total_ok_units)
    measurement = Measurement(
        scenario=scenario,
        target=target,
        concurrency=concurrency,
        duration_s=result.duration_s,
        ok_calls=result.ok_units,
        statuses=result.statuses,
        latency=result.latency,
        tool="in-process",
        store=store,
        cpu_seconds_per_call=cpu,
        cpu_seconds_by_process=used,
        peak_rss_mb=sample_peak_rss(pids),
        notes=f"calls/s counts {unit}; latency is per operation",
    )
    run.record(measurement)
    return measurement
