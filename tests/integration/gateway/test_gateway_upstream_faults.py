"""The gateway bounds each rate class's upstream time and ejects a replica that stops answering
(issue 27 item 4): calls go to the replicas still answering, and with none left are refused
at once (UPSTREAM_UNAVAILABLE) until a health check finds one back."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2_grpc

from gateway.server import start_gateway
from gateway.settings import GatewaySettings
from meshlib.auth.consent import ConsentView
from meshlib.auth.testing import NeverRevoked, TestIssuer
from meshlib.auth.verifier import static_jwks
from meshlib.grpc_errors import decode_rpc_error
from openbank.account.v1 import account_pb2, account_pb2_grpc
from tests.support.consents import consent_view

GET_BALANCE = "/openbank.account.v1.AccountService/GetBalance"


class Replica(grpc.GenericRpcHandler):
    """A fake account replica that answers GetBalance, or hangs while ``hung`` is set."""

    def __init__(self) -> None:
        self.answering = asyncio.Event()
        self.answering.set()
        self.calls = 0

    @property
    def hung(self) -> bool:
        return not self.answering.is_set()

    @hung.setter
    def hung(self, value: bool) -> None:
        if value:
            self.answering.clear()
        else:
            self.answering.set()

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        if handler_call_details.method != GET_BALANCE:
            return None

        async def unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            self.calls += 1
            await self.answering.wait()
            return account_pb2.GetBalanceResponse().SerializeToString()

        return grpc.unary_unary_rpc_method_handler(unary)


class HealthWhileAnswering(health.aio.HealthServicer):  # type: ignore[misc]
    """Health follows the replica: a hung one does not answer its checks either."""

    def __init__(self, replica: Replica) -> None:
        super().__init__()
        self._replica = replica

    async def Check(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self._replica.answering.wait()
        return await super().Check(request, context)


async def _start_replica() -> tuple[grpc.aio.Server, int, Replica]:
    replica = Replica()
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([replica])
    health_pb2_grpc.add_HealthServicer_to_server(HealthWhileAnswering(replica), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port, replica


class BalanceConsents:
    """Every consent may read account a1's balance (this test is about upstreams, not consents)."""

    async def get(self, consent_id: str, *, partner_id: str) -> ConsentView:
        return consent_view(consent_id=consent_id, partner_id=partner_id, permissions=frozenset({"READ_BALANCES"}))


@pytest.fixture
async def mesh():  # type: ignore[no-untyped-def]
    issuer = TestIssuer(issuer="https://identity.openbank.local", audience="openbank-mesh")
    started = [await _start_replica(), await _start_replica()]
    target = ",".join(f"127.0.0.1:{port}" for _, port, _ in started)
    gateway = await start_gateway(
        GatewaySettings(
            port=0,
            identity_target=target,
            account_target=target,
            payment_target=target,
            settlement_target=target,
            upstream_deadlines={"reads": 0.3},
            upstream_ejection_seconds=0.2,
            upstream_max_ejection_seconds=0.4,
        ),
        jwks_fetcher=static_jwks(issuer.jwks),
        revocation=NeverRevoked(),
        consents=BalanceConsents(),
    )
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}")
    token = issuer.token("wallet-a", scopes=["accounts:read"], partner_id="wallet-a", consent_id="c1")
    stub = account_pb2_grpc.AccountServiceStub(channel)

    async def balance() -> tuple[grpc.StatusCode, str, float]:
        began = time.monotonic()
        try:
            await stub.GetBalance(
                account_pb2.GetBalanceRequest(account="accounts/a1"),
                # The customer is present: no unattended-reads quota in the way.
                metadata=(("authorization", f"Bearer {token}"), ("x-fapi-customer-ip-address", "198.51.100.7")),
                timeout=10,
            )
        except grpc.aio.AioRpcError as error:
            return error.code(), decode_rpc_error(error).reason, time.monotonic() - began
        return grpc.StatusCode.OK, "", time.monotonic() - began

    try:
        yield balance, [replica for _, _, replica in started], [server for server, _, _ in started], gateway
    finally:
        await channel.close()
        await gateway.stop(0)
        for server, _, _ in started:
            await server.stop(0)


async def test_a_hung_replica_is_ejected_and_the_other_serves(mesh) -> None:  # type: ignore[no-untyped-def]
    balance, (first, second), _, gateway = mesh
    assert {(await balance())[:2] for _ in range(4)} == {(grpc.StatusCode.OK, "")}
    assert first.calls and second.calls  # round robin over both
    first.hung = True
    answers = [await balance() for _ in range(12)]
    timeouts = [a for a in answers if a[1] == "UPSTREAM_TIMEOUT"]
    # Each call on the hung replica waits the reads class's 0.3 s, not the partner's 10 s,
    # until three in a row eject it; then every call goes to the other one.
    assert 1 <= len(timeouts) <= 3, answers
    assert {code for code, _, _ in answers[-6:]} == {grpc.StatusCode.OK}
    assert all(code in (grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE) for code, _, _ in answers)
    pool = gateway.upstreams["account"]
    assert [r.ejected for r in pool.replicas] == [True, False]
    first.hung = False
    await _until(lambda: not any(r.ejected for r in pool.replicas))
    served_before = first.calls
    assert {(await balance())[0] for _ in range(4)} == {grpc.StatusCode.OK}
    assert first.calls > served_before


async def test_with_every_replica_hung_calls_are_refused_fast_then_served_again(mesh) -> None:  # type: ignore[no-untyped-def]
    balance, replicas, _, gateway = mesh
    for replica in replicas:
        replica.hung = True
    pool = gateway.upstreams["account"]
    for _ in range(20):
        if all(r.ejected for r in pool.replicas):
            break
        code, reason, _ = await balance()
        assert (code, reason) == (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_TIMEOUT")
    assert all(r.ejected for r in pool.replicas)
    calls_before = sum(r.calls for r in replicas)
    refused = [await balance() for _ in range(10)]
    assert {(code, reason) for code, reason, _ in refused} == {(grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE")}
    assert sum(r.calls for r in replicas) == calls_before  # refused at the gateway, never sent
    for replica in replicas:
        replica.hung = False
    await _until(lambda: not all(r.ejected for r in pool.replicas))
    assert (await balance())[0] == grpc.StatusCode.OK


async def test_a_stopped_replica_costs_no_failed_call(mesh) -> None:  # type: ignore[no-untyped-def]
    balance, _, servers, gateway = mesh
    assert (await balance())[0] == grpc.StatusCode.OK
    await servers[0].stop(0)
    answers = [await balance() for _ in range(10)]
    # A call that finds its replica refusing connections is sent to the other one.
    assert {code for code, _, _ in answers} == {grpc.StatusCode.OK}
    assert gateway.upstreams["account"].replicas[0].ejected


async def _until(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.05)
