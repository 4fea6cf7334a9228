"""The local mesh the way `make up` runs it: five real processes, each SERVING with its
services on reflection, all stopped by SIGTERM within seconds with exit code 0."""

from __future__ import annotations

import asyncio
import sys
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from meshcli.mesh import LocalMesh
from tests.support.servers import free_port

pytestmark = pytest.mark.e2e

EXPECTED_SERVICES = {
    "identity": "openbank.identity.v1.TokenService",
    "account": "openbank.account.v1.AccountService",
    "settlement": "openbank.settlement.v1.SettlementService",
    "payment": "openbank.payment.v1.PaymentService",
    "gateway": "openbank.payment.v1.PaymentService",
}


async def _services(port: int) -> set[str]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        return {s.name async for r in responses for s in r.list_services_response.service}


async def test_five_processes_serve_and_stop_cleanly(tmp_path) -> None:  # type: ignore[no-untyped-def]
    ports = {name: free_port() for name in EXPECTED_SERVICES}
    mesh = LocalMesh(tmp_path / "data", ports=ports, extra_env={"OBM_LOG_FORMAT": "json"}, quiet=True)
    try:
        await asyncio.wait_for(mesh.start(), 90)
        for name, port in ports.items():
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                answer = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
                assert answer.status == health_pb2.HealthCheckResponse.SERVING, name
            services = await _services(port)
            assert EXPECTED_SERVICES[name] in services, (name, services)
            assert "grpc.health.v1.Health" in services
        # The gateway shows no internal service.
        assert not any("Admin" in s or "Ledger" in s or "Position" in s for s in await _services(ports["gateway"]))
        assert (tmp_path / "data" / "account.db").exists()
    finally:
        started = time.monotonic()
        codes = await mesh.stop(grace=10)
        elapsed = time.monotonic() - started
    assert codes == [0, 0, 0, 0, 0]
    assert elapsed < 10
    assert sys.executable
