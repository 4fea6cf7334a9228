"""The pay-side rounds of the bar: the bare echo, the mesh on fresh stores, two payment
replicas and preloaded stores taking turns at c64, round after round.

Every ratio of the pay side compares points of one round, seconds apart (the VM's speed
drifts by up to 2x within minutes); the bar takes the median of the rounds' ratios.
"""

from __future__ import annotations

import base64
from typing import Any

from bench.mesh import RunningMesh
from bench.scenarios import GET_BALANCE, EchoProxy, Run, driver_point, pay_spec, read_spec, settle
from openbank.account.v1 import account_pb2

BAR_CONCURRENCY = 64


async def _settle_mesh(mesh: RunningMesh) -> None:
    payer = mesh.payers[0]
    probe = account_pb2.GetBalanceRequest(account=payer.account).SerializeToString()
    await settle(mesh.ports["gateway"], GET_BALANCE, probe, payer.metadata)


async def pay_info(run: Run, mesh: RunningMesh) -> None:
    """Pay at the concurrencies other than the bar's, once each: information (issue 10's rows)."""
    spec = pay_spec(mesh)
    for concurrency in run.options.concurrency:
        if concurrency == BAR_CONCURRENCY:
            continue
        await _settle_mesh(mesh)
        point = await driver_point(
            run, "pay", "gateway", dict(spec, concurrency=concurrency), mesh.mesh.pids(), mesh.store
        )
        run.say(f"  pay/{mesh.store} c{concurrency}: {point.calls_per_second:.0f} settled/s, {point.statuses}")


async def pay_rounds(
    run: Run,
    fresh: RunningMesh,
    *,
    replicas: RunningMesh | None = None,
    preloaded: RunningMesh | None = None,
) -> None:
    """At c64, ``--rounds`` times: the bare echo, pay on fresh stores, pay with two payment
    replicas, pay on preloaded stores, then GetBalance through the gateway on fresh and on
    preloaded stores (the data-growth pair)."""
    store = fresh.store
    async with EchoProxy(None) as echo:
        assert echo.process is not None
        echo_spec = dict(read_spec(fresh), target=f"127.0.0.1:{echo.port}", concurrency=BAR_CONCURRENCY)
        echo_spec["request_b64"] = base64.b64encode(b"\x0a\x10bench-echo-ping!").decode()
        turns: list[tuple[str, str, RunningMesh | None, dict[str, Any]]] = [
            ("pay", "bare-echo", None, echo_spec),
            ("pay", "gateway", fresh, pay_spec(fresh)),
        ]
        if replicas is not None:
            turns.append(("pay", "gateway-2-payment-replicas", replicas, pay_spec(replicas)))
        if preloaded is not None:
            turns += [
                ("pay", "gateway-preloaded", preloaded, pay_spec(preloaded)),
                ("growth", "read-fresh", fresh, _gateway_read(fresh)),
                ("growth", "read-preloaded", preloaded, _gateway_read(preloaded)),
            ]
        for round_number in range(1, run.options.rounds + 1):
            for scenario, target, mesh, spec in turns:
                if mesh is None:
                    pids = {"echo": echo.process.pid}
                else:
                    await _settle_mesh(mesh)
                    pids = mesh.mesh.pids()
                point = await driver_point(run, scenario, target, dict(spec, concurrency=BAR_CONCURRENCY), pids, store)
                point.round = round_number
                run.say(
                    f"  {scenario}/{target}/{store} c{BAR_CONCURRENCY} #{round_number}: "
                    f"{point.calls_per_second:.0f}/s, p50 {point.latency.p50_ms:.0f} ms, "
                    f"p99 {point.latency.p99_ms:.0f} ms, {point.statuses}"
                )


def _gateway_read(mesh: RunningMesh) -> dict[str, Any]:
    return dict(read_spec(mesh), target=f"127.0.0.1:{mesh.ports['gateway']}")
