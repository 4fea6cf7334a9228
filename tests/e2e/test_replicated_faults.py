"""Faults answered as faults, with two replicas of everything (issue 27 items 4 and 5).

One mesh for the module: two processes of every service and the gateway on a PostgreSQL of
its own (so the test may restart and stop it) and a Redis Cluster of three masters with a
replica each (``redis+cluster://``: the limiters, stream slots and invalidation bus of every
process), a partner balancing over both gateways with the SDK's retries. Under payments and
reads:

- PostgreSQL restarted (0.4 s down) and then stopped for 6 s;
- one replica of each service SIGKILLed in turn and restarted (in the background);
- the Redis master holding the invalidation bus's shard SIGKILLed (its replica takes over);
- tokens revoked as each fault begins, a consent revoked while the Redis shard fails over: each
  refused by every gateway, account and payment replica within the status caches' bound;
- both account replicas hung (SIGSTOP, without load): the gateways eject them and refuse at
  once (UPSTREAM_UNAVAILABLE), and serve again after SIGCONT.

Every failed attempt was UNAVAILABLE and the SDK retried each call to an answer; after the
load every payment SETTLED or REJECTED, one per request, the ledger nets to zero with no hold,
the customer paid and the wallet's position grew by exactly the settled ones, and the closed
window reconciles clean. Each fault's report (failed attempts, recovery) is printed (``-s``).

The long form (``-m slow``) repeats the rounds for ``OBM_SOAK_SECONDS`` (default 600) with
twice the load, and writes the report to ``OBM_FAULT_REPORT`` (default
``fault-report.json`` in the test's temporary directory)::

    OBM_SOAK_SECONDS=600 OBM_FAULT_REPORT=fault-report.json \\
        .venv/bin/python -m pytest -s -m slow tests/e2e/test_replicated_faults.py
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from redis.cluster import RedisCluster as ClusterClient

from meshcli.mesh import MeshProcess
from meshlib.grpc_errors import decode_rpc_error
from openbank.account.v1 import account_pb2, account_pb2_grpc
from tests.e2e.replicated_harness import Attempt, ReplicatedMesh, Revocations, replicated_mesh
from tests.support.redis_cluster import ClusterNode, RedisCluster, redis_cluster
from tests.support.servers import ServerUnavailable, free_port, private_postgres_server

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

SERVICES = ("identity", "account", "settlement", "payment", "gateway")


@dataclass
class Mesh:
    """The module's mesh and the stores it runs on."""

    running: ReplicatedMesh
    redis: RedisCluster
    data_dir: Path


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def replicated(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    with contextlib.ExitStack() as stores:
        try:  # both at once: a few seconds each
            postgres, cluster = await asyncio.gather(
                asyncio.to_thread(stores.enter_context, private_postgres_server()),
                asyncio.to_thread(stores.enter_context, redis_cluster(masters=3, replicas=1)),
            )
        except ServerUnavailable as error:
            pytest.fail(str(error))
        data_dir = tmp_path_factory.mktemp("replicated") / "data"
        async with replicated_mesh(data_dir, postgres, cluster.url, f"rep{free_port()}:") as mesh:
            yield Mesh(mesh, cluster, data_dir)


async def _until(condition: Callable[[], Awaitable[bool]], what: str, timeout: float = 60.0) -> float:
    """Wait until ``condition()`` holds; the seconds it took."""
    began = time.monotonic()
    while not await condition():
        assert time.monotonic() - began < timeout, f"{what}: not within {timeout:g} s"
        await asyncio.sleep(0.1)
    return time.monotonic() - began


async def _progress(mesh: ReplicatedMesh, payments: int = 3, timeout: float = 120.0) -> float:
    """Wait until the load made ``payments`` more payments (the mesh is working)."""
    target = len(mesh.load.payments) + payments

    async def made() -> bool:
        return len(mesh.load.payments) >= target

    return await _until(made, "payments resumed", timeout)


@dataclass
class Fault:
    """One fault's measurements: the attempts that failed while it lasted (each then retried
    by the SDK) and how long until the mesh went on."""

    fault: str
    failed: dict[str, int]  # "<method> <code> <reason>": attempts
    payments_again_seconds: float  # after the fault began, the load made payments again
    back_seconds: float | None = None  # the process, database or Redis node served again, after the fault began
    note: str = ""
    at: float = 0.0  # seconds into the run when it was reported

    def line(self) -> str:
        failed = ", ".join(f"{n}x {what}" for what, n in self.failed.items()) or "none"
        back = f", back {self.back_seconds:.1f} s after it" if self.back_seconds is not None else ""
        note = f"; {self.note}" if self.note else ""
        return (
            f"[{self.at:5.1f} s] {self.fault}: {sum(self.failed.values())} failed attempts ({failed}), "
            f"payments again {self.payments_again_seconds:.1f} s after it began{back}{note}"
        )


@dataclass
class Report:
    """The faults of a run, printed as they come (``-s`` shows them, a failure too)."""

    faults: list[Fault] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    began: float = field(default_factory=time.monotonic)

    def fault(self, fault: Fault) -> None:
        fault.at = round(time.monotonic() - self.began, 1)
        print(fault.line(), flush=True)
        self.faults.append(fault)

    def note(self, line: str) -> None:
        line = f"[{time.monotonic() - self.began:5.1f} s] {line}"
        print(line, flush=True)
        self.notes.append(line)

    def write(self, path: Path, **summary: Any) -> None:
        path.write_text(
            json.dumps({**summary, "faults": [asdict(f) for f in self.faults], "notes": self.notes}, indent=2) + "\n"
        )
        print(f"report written to {path}", flush=True)


def _counts(attempts: list[Attempt]) -> dict[str, int]:
    return dict(Counter(f"{a.method} {a.code.name} {a.reason}" for a in attempts).most_common())


def _only_unavailable(mesh: ReplicatedMesh) -> None:
    assert not mesh.load.gave_up, mesh.load.gave_up  # the SDK retried every failed call to an answer
    codes = {attempt.code for attempt in mesh.attempts.failed}
    assert codes <= {grpc.StatusCode.UNAVAILABLE}, _counts(mesh.attempts.failed)


async def _database_outages(mesh: ReplicatedMesh, report: Report, revocations: Revocations) -> list[asyncio.Task[Any]]:
    """PostgreSQL restarted (down 0.4 s), then stopped for 6 s, under the running load; a token
    is revoked as each outage begins (answered once the database is back)."""
    revoking = []
    for down in (0.4, 6.0):
        began = time.monotonic()
        await asyncio.to_thread(mesh.postgres.stop)
        revoking.append(asyncio.create_task(revocations.revoke_token()))
        await asyncio.sleep(down)
        await asyncio.to_thread(mesh.postgres.start)  # returns once it accepts connections
        back = time.monotonic() - began
        await _progress(mesh, payments=2)
        ended = time.monotonic()
        failed = _counts(mesh.attempts.between(began, ended))
        report.fault(Fault(f"PostgreSQL down {down:g} s", failed, ended - began, back))
    return revoking


@dataclass
class Kills:
    """The replicas killed in a round: when each died and the mesh went on without it, and
    their restarts, which run on in the background while the round goes on."""

    spans: list[tuple[MeshProcess, float, float]] = field(default_factory=list)
    restarts: list[asyncio.Task[None]] = field(default_factory=list)
    serving: dict[str, float] = field(default_factory=dict)
    revoking: list[asyncio.Task[Any]] = field(default_factory=list)

    async def restarted(self, mesh: ReplicatedMesh, report: Report) -> None:
        """Wait for every restart, then report each kill."""
        await asyncio.gather(*self.restarts)
        for child, began, ended in self.spans:
            failed = mesh.attempts.between(began, ended)
            report.fault(Fault(f"SIGKILL {child.label}", _counts(failed), ended - began, self.serving[child.label]))


async def _kill_each_replica(mesh: ReplicatedMesh, revocations: Revocations, replica: int = 1) -> Kills:
    """SIGKILL one replica of each service in turn, revoking a token as each dies; each is
    restarted once the mesh moved on without it, in the background (the next kill does not
    wait for it: another service's replica)."""
    kills = Kills()

    async def restart(child: MeshProcess, began: float) -> None:
        await mesh.mesh.restart(child)
        kills.serving[child.label] = time.monotonic() - began

    for name in SERVICES:
        child = mesh.mesh.replica(name, replica)
        began = time.monotonic()
        mesh.mesh.kill(child)
        kills.revoking.append(asyncio.create_task(revocations.revoke_token()))
        await _progress(mesh, payments=2)
        kills.spans.append((child, began, time.monotonic()))
        kills.restarts.append(asyncio.create_task(restart(child, began)))
    return kills


def _master_of(cluster: RedisCluster, key: str) -> ClusterNode:
    """The node that is master of ``key``'s slot now (asked of a live node)."""
    seed = next(node for node in cluster.nodes if node.process.poll() is None)
    client = ClusterClient(host="127.0.0.1", port=seed.port)
    try:
        port = client.get_node_from_key(key).port
    finally:
        client.close()
    return next(node for node in cluster.nodes if node.port == port)


async def _kill_redis_master(
    mesh: Mesh, report: Report, revocations: Revocations, *, consent: bool
) -> list[asyncio.Task[Any]]:
    """SIGKILL the Redis master holding the invalidation bus's shard, under the load; a token
    (and, once, the second consent) is revoked while its replica takes over, so the bus may lose
    the message. The node is started again afterwards (it rejoins as a replica)."""
    running, cluster = mesh.running, mesh.redis
    channel = running.mesh.env["OBM_INVALIDATION_CHANNEL"]
    await asyncio.to_thread(cluster.wait_healthy)  # its replica synced: it can take over
    master = await asyncio.to_thread(_master_of, cluster, channel)
    began = time.monotonic()
    await asyncio.to_thread(master.kill)
    revoking = [asyncio.create_task(revocations.revoke_token())]
    if consent:
        revoking.append(asyncio.create_task(revocations.revoke_consent()))

    async def failed_over() -> bool:
        node = await asyncio.to_thread(_master_of, cluster, channel)
        return node is not master and node.info("cluster").get("cluster_state") == "ok"

    failover = await _until(failed_over, "a replica took over the killed master's slots", timeout=60)
    await _progress(mesh.running, payments=2)
    ended = time.monotonic()
    failed = running.attempts.between(began, ended)
    await asyncio.to_thread(master.restart)
    await asyncio.to_thread(cluster.wait_healthy, 60.0)
    report.fault(
        Fault(
            f"SIGKILL Redis master :{master.port} (the bus's shard)",
            _counts(failed),
            ended - began,
            note=f"its replica took over {failover:.1f} s after the kill",
        )
    )
    return revoking


async def _revocations_took_effect(revoking: list[asyncio.Task[Any]], revocations: Revocations, report: Report) -> None:
    await asyncio.gather(*revoking)
    await revocations.check_all_refused()
    slowest = max(revocations.revoked, key=lambda r: r.took_effect)
    report.note(
        f"  revocations: {len(revocations.revoked)} issued during the run "
        f"({Counter(r.what for r in revocations.revoked)}), each refused by every replica, "
        f"the slowest {slowest.took_effect:.2f} s after it was issued ({slowest.what})"
    )


async def _hung_account(mesh: ReplicatedMesh, report: Report) -> None:
    """Both account replicas SIGSTOPped: the gateways bound the wait, mark them down and refuse
    at once; after SIGCONT the replicas are served again."""
    stub = account_pb2_grpc.AccountServiceStub(mesh.partner_channel)
    metadata = (*await mesh.token.metadata(), ("x-fapi-customer-ip-address", "198.51.100.7"))

    async def balance() -> tuple[str, float]:
        """One GetBalance with no retry: the reason it failed ("" when answered), and its time."""
        began = time.monotonic()
        try:
            await stub.GetBalance(
                account_pb2.GetBalanceRequest(account=mesh.customer_account), metadata=metadata, timeout=20
            )
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.UNAVAILABLE, error
            return decode_rpc_error(error).reason, time.monotonic() - began
        return "", time.monotonic() - began

    assert (await balance())[0] == ""
    hung = [mesh.mesh.replica("account", 1), mesh.mesh.replica("account", 2)]
    for child in hung:
        mesh.mesh.kill(child, signal.SIGSTOP)
    try:
        # The calls in flight wait the reads class's upstream deadline (2 s here), not the
        # partner's 20 s; their timeouts mark every replica down in every gateway.
        first = await asyncio.gather(*(balance() for _ in range(16)))
        assert {reason for reason, _ in first} <= {"UPSTREAM_TIMEOUT", "UPSTREAM_UNAVAILABLE"}

        async def refused() -> bool:
            return (await balance())[0] == "UPSTREAM_UNAVAILABLE"

        await _until(refused, "the gateways refuse at once", timeout=60)
        # Once marked down, calls are refused at the gateway without waiting for the hung peer.
        later = [await balance() for _ in range(10)]
        assert {reason for reason, _ in later} == {"UPSTREAM_UNAVAILABLE"}
    finally:
        for child in hung:
            mesh.mesh.kill(child, signal.SIGCONT)

    async def served() -> bool:
        return (await balance())[0] == ""

    back = await _until(served, "served again after SIGCONT", timeout=60)
    report.note(
        f"account hung (SIGSTOP): calls in flight answered UPSTREAM_TIMEOUT within "
        f"{max(s for _, s in first):.2f} s, then refused UPSTREAM_UNAVAILABLE in at most "
        f"{max(s for _, s in later) * 1000:.0f} ms; served again {back:.1f} s after SIGCONT"
    )


async def _round(
    mesh: Mesh, report: Report, revocations: Revocations, number: int
) -> tuple[list[asyncio.Task[Any]], Kills]:
    """One round of every fault under the running load: the database, a replica of each
    service (replica 2, then 1, alternating: the operator's commands use replica 1), the bus's
    Redis master. Returns the revocations it issued and the kills, whose restarts may still
    be running."""
    await revocations.mint(2 + len(SERVICES) + 1)  # one as each fault begins
    revoking = await _database_outages(mesh.running, report, revocations)
    kills = await _kill_each_replica(mesh.running, revocations, replica=2 - (number - 1) % 2)
    # The Redis master dies while the killed replicas are still starting again.
    revoking += await _kill_redis_master(mesh, report, revocations, consent=number == 1)
    return revoking + kills.revoking, kills


async def test_faults_are_answered_unavailable_and_retried_with_two_replicas_of_everything(
    replicated: Mesh,
) -> None:
    """One test (one mesh, one worker): one round of every fault under one load, then the
    money and revocation checks, then the hung account service."""
    running, report = replicated.running, Report()
    revocations = Revocations(running)
    await revocations.prepare()
    before = await running.snapshot()
    async with running.driving():
        await _progress(running)
        revoking, kills = await _round(replicated, report, revocations, 1)
    # The money is checked (through replica 1) while the killed replicas 2 start again.
    states, _ = await asyncio.gather(running.check_money(before), kills.restarted(running, report))
    _only_unavailable(running)
    # The faults were felt (the test would prove nothing otherwise), and answered as faults.
    assert running.attempts.failed, "no call failed during the faults"
    # A payment whose replica died before the post is carried forward by recovery on the other
    # replica, never rolled back for a fault: a replica of each peer was up throughout, and the
    # longest outage (the database's) is far shorter than recovery's resume attempts.
    assert "REJECTED SERVICE_UNAVAILABLE" not in states, states
    await _revocations_took_effect(revoking, revocations, report)
    report.note(f"  payments {states}, reads {running.load.reads}")

    await running.snapshot()
    await _hung_account(running, report)


@pytest.mark.slow
async def test_replicas_the_database_and_redis_fail_again_and_again_under_load(replicated: Mesh) -> None:
    """The long form: rounds of every fault for OBM_SOAK_SECONDS, the report to OBM_FAULT_REPORT."""
    running, report = replicated.running, Report()
    revocations = Revocations(running)
    await revocations.prepare()
    before = await running.snapshot()
    began = time.monotonic()
    ends = began + float(os.environ.get("OBM_SOAK_SECONDS", "600"))
    rounds = 0
    revoking: list[asyncio.Task[Any]] = []
    async with running.driving(payers=4, readers=4):
        while time.monotonic() < ends:
            rounds += 1
            issued, kills = await _round(replicated, report, revocations, rounds)
            await kills.restarted(running, report)
            revoking += issued
    states = await running.check_money(before, timeout=180)
    _only_unavailable(running)
    await _revocations_took_effect(revoking, revocations, report)
    report.note(f"{rounds} rounds in {time.monotonic() - began:.0f} s: payments {states}, reads {running.load.reads}")
    path = Path(os.environ.get("OBM_FAULT_REPORT") or replicated.data_dir.parent / "fault-report.json")
    report.write(
        path,
        rounds=rounds,
        seconds=round(time.monotonic() - began),
        payments=states,
        reads=running.load.reads,
        revocations=[{"what": r.what, "took_effect_seconds": round(r.took_effect, 3)} for r in revocations.revoked],
    )
