"""Faults answered as faults, with two replicas of everything (issue 27 items 4 and 5).

One mesh for the module: two processes of every service and the gateway on a PostgreSQL of
its own (so the test may restart and stop it) and Redis, a partner balancing over both
gateways with the SDK's retries. Under payments and reads:

- PostgreSQL restarted (0.4 s down) and then stopped for 6 s: every failed attempt was
  UNAVAILABLE and the SDK retried each call to an answer;
- both account replicas hung (SIGSTOP): the gateways eject them and refuse at once
  (UPSTREAM_UNAVAILABLE), and serve again after SIGCONT;
- one replica of each service SIGKILLed in turn and restarted: only UNAVAILABLE, all retried.

After each load: every payment SETTLED or REJECTED, one per request, the ledger nets to zero
with no hold, the customer paid and the wallet's position grew by exactly the settled ones,
and the closed window reconciles clean. The long form (``-m slow``) repeats the kills and
the database outages for ``OBM_SOAK_SECONDS`` (default 600).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable

import grpc
import pytest
import pytest_asyncio

from meshcli.mesh import MeshProcess
from meshlib.grpc_errors import decode_rpc_error
from openbank.account.v1 import account_pb2, account_pb2_grpc
from tests.e2e.replicated_harness import ReplicatedMesh, replicated_mesh
from tests.support.servers import RedisServer, ServerUnavailable, free_port, private_postgres_server

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

SERVICES = ("identity", "account", "settlement", "payment", "gateway")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def replicated(tmp_path_factory: pytest.TempPathFactory, redis_srv: RedisServer):  # type: ignore[no-untyped-def]
    try:
        postgres_context = private_postgres_server()
        postgres = postgres_context.__enter__()
    except ServerUnavailable as error:
        pytest.fail(str(error))
    try:
        data_dir = tmp_path_factory.mktemp("replicated") / "data"
        async with replicated_mesh(data_dir, postgres, redis_srv.url, f"rep{free_port()}:") as mesh:
            yield mesh
    finally:
        postgres_context.__exit__(None, None, None)


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


class Report(list[str]):
    """The measurements of each fault, printed as they come (``-s`` shows them, a failure too)."""

    def append(self, line: str) -> None:
        print(line, flush=True)
        super().append(line)


def _summary(attempts: list) -> str:  # type: ignore[type-arg]
    counts = Counter(f"{a.method} {a.code.name} {a.reason}" for a in attempts)
    return ", ".join(f"{n}x {what}" for what, n in counts.most_common()) or "none"


def _only_unavailable(mesh: ReplicatedMesh) -> None:
    assert not mesh.load.gave_up, mesh.load.gave_up  # the SDK retried every failed call to an answer
    codes = {attempt.code for attempt in mesh.attempts.failed}
    assert codes <= {grpc.StatusCode.UNAVAILABLE}, _summary(mesh.attempts.failed)


async def _database_outages(mesh: ReplicatedMesh, report: list[str]) -> None:
    """PostgreSQL restarted (down 0.4 s), then stopped for 6 s, under the running load."""
    for down in (0.4, 6.0):
        began = time.monotonic()
        await asyncio.to_thread(mesh.postgres.stop)
        await asyncio.sleep(down)
        await asyncio.to_thread(mesh.postgres.start)
        recovered = await _progress(mesh)
        failed = mesh.attempts.between(began, time.monotonic())
        report.append(
            f"PostgreSQL down {down:g} s: {len(failed)} failed attempts ({_summary(failed)}), "
            f"payments again {recovered:.1f} s after it was back"
        )


async def _kill_each_replica(mesh: ReplicatedMesh, report: list[str], replica: int = 1) -> None:
    """SIGKILL one replica of each service in turn; each is restarted once the mesh moved on
    without it (the next kill does not wait for that restart: another service's replica)."""

    async def restart(child: MeshProcess, began: float) -> None:
        await mesh.mesh.restart(child)
        serving[child.label] = time.monotonic() - began

    serving: dict[str, float] = {}
    restarts = []
    spans: list[tuple[MeshProcess, float, float, float]] = []
    for name in SERVICES:
        child = mesh.mesh.replica(name, replica)
        began = time.monotonic()
        mesh.mesh.kill(child)
        without = await _progress(mesh, payments=2)
        spans.append((child, began, time.monotonic(), without))
        restarts.append(asyncio.create_task(restart(child, began)))
    await asyncio.gather(*restarts)
    for child, began, ended, without in spans:
        failed = mesh.attempts.between(began, ended)
        report.append(
            f"SIGKILL {child.label}: {len(failed)} failed attempts ({_summary(failed)}), payments went on "
            f"{without:.1f} s after the kill, the replica served again {serving[child.label]:.1f} s after it"
        )


async def _hung_account(mesh: ReplicatedMesh, report: list[str]) -> None:
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
    report.append(
        f"account hung (SIGSTOP): calls in flight answered UPSTREAM_TIMEOUT within "
        f"{max(s for _, s in first):.2f} s, then refused UPSTREAM_UNAVAILABLE in at most "
        f"{max(s for _, s in later) * 1000:.0f} ms; served again {back:.1f} s after SIGCONT"
    )


async def test_faults_are_answered_unavailable_and_retried_with_two_replicas_of_everything(
    replicated: ReplicatedMesh,
) -> None:
    """One test (one mesh, one worker): the database outages, the hung account service, then
    every service losing a replica, each load followed by the money checks."""
    report = Report()
    before = await replicated.snapshot()
    async with replicated.driving():
        await _progress(replicated)
        await _database_outages(replicated, report)
    states = await replicated.check_money(before)
    _only_unavailable(replicated)
    # The outages were felt (the test would prove nothing otherwise), and answered as faults.
    assert replicated.attempts.failed, "no call failed while PostgreSQL was down"
    report.append(f"  payments {states}, reads {replicated.load.reads}")

    await replicated.snapshot()
    await _hung_account(replicated, report)

    before = await replicated.snapshot()
    async with replicated.driving():
        await _progress(replicated)
        await _kill_each_replica(replicated, report)
    states = await replicated.check_money(before)
    _only_unavailable(replicated)
    report.append(f"  payments {states}, reads {replicated.load.reads}")


@pytest.mark.slow
async def test_replicas_and_the_database_fail_again_and_again_under_load(replicated: ReplicatedMesh) -> None:
    """The long form: kill rounds (alternating replicas) and database outages for OBM_SOAK_SECONDS."""
    before = await replicated.snapshot()
    report = Report()
    ends = time.monotonic() + float(os.environ.get("OBM_SOAK_SECONDS", "600"))
    rounds = 0
    async with replicated.driving(payers=4, readers=4):
        while time.monotonic() < ends:
            rounds += 1
            await _kill_each_replica(replicated, report, replica=1 + rounds % 2)
            await _database_outages(replicated, report)
    states = await replicated.check_money(before, timeout=180)
    _only_unavailable(replicated)
    report.append(f"{rounds} rounds: payments {states}, reads {replicated.load.reads}")
