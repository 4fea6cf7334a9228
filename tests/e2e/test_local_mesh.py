"""The local mesh the way `make up` runs it: five real processes, each SERVING with its
services on reflection, demo data seeded once, all stopped by SIGTERM within seconds with
exit code 0."""

from __future__ import annotations

import time

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from meshcli.mesh import LocalMesh
from meshcli.operator import Operator
from meshcli.seed import load_demo_credentials, seed_demo_data
from openbank.account.v1 import account_admin_pb2, account_admin_pb2_grpc
from openbank.identity.v1 import token_pb2, token_pb2_grpc
from tests.support.servers import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

EXPECTED_SERVICES = {
    "identity": "openbank.identity.v1.TokenService",
    "account": "openbank.account.v1.AccountService",
    "settlement": "openbank.settlement.v1.SettlementService",
    "payment": "openbank.payment.v1.PaymentService",
    "gateway": "openbank.payment.v1.PaymentService",
}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def mesh(tmp_path_factory):  # type: ignore[no-untyped-def]
    data_dir = tmp_path_factory.mktemp("mesh") / "data"
    ports = {name: free_port() for name in EXPECTED_SERVICES}
    running = LocalMesh(data_dir, ports=ports, extra_env={"OBM_LOG_FORMAT": "json"}, quiet=True)
    await running.start()
    yield running
    if any(c.process and c.process.returncode is None for c in running.children):
        await running.stop(grace=10)


async def _services(port: int) -> set[str]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        return {s.name async for r in responses for s in r.list_services_response.service}


async def test_five_processes_answer_serving_and_list_their_services(mesh) -> None:  # type: ignore[no-untyped-def]
    for name, port in mesh.ports.items():
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            answer = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING, name
        services = await _services(port)
        assert EXPECTED_SERVICES[name] in services, (name, services)
        assert "grpc.health.v1.Health" in services
    # The gateway shows no internal service.
    assert not any("Admin" in s or "Ledger" in s or "Position" in s for s in await _services(mesh.ports["gateway"]))
    assert (mesh.data_dir / "account.db").exists()


async def test_demo_data_is_seeded_once_and_its_partners_can_log_in(mesh) -> None:  # type: ignore[no-untyped-def]
    operator = Operator(mesh.data_dir, ports=mesh.ports)
    try:
        seeded = await seed_demo_data(operator, say=lambda _: None)
        assert load_demo_credentials(mesh.data_dir) == seeded
        assert await seed_demo_data(operator, say=lambda _: None) == seeded  # second start: nothing new
        acme = seeded["partners"]["acme"]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{mesh.ports['gateway']}") as gateway:
            token = await token_pb2_grpc.TokenServiceStub(gateway).IssueToken(
                token_pb2.IssueTokenRequest(
                    grant_type=token_pb2.GRANT_TYPE_CLIENT_CREDENTIALS,
                    client_id=acme["client_id"],
                    client_secret=acme["client_secret"],
                    scopes=["consents:write"],
                ),
                timeout=10,
            )
        assert token.access_token and token.token_type == "Bearer"
        totals = await account_admin_pb2_grpc.AccountAdminServiceStub(operator.channel("account")).GetLedgerTotals(
            account_admin_pb2.GetLedgerTotalsRequest(), metadata=await operator.metadata()
        )
        assert totals.totals and all(t.balanced for t in totals.totals)
    finally:
        await operator.close()


async def test_sigterm_stops_every_process_within_seconds_with_exit_code_zero(mesh) -> None:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    codes = await mesh.stop(grace=10)
    assert codes == [0, 0, 0, 0, 0]
    assert time.monotonic() - started < 10
