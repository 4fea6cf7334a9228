"""Windows close on a schedule, once per slot even when several replicas run it."""

from __future__ import annotations

import asyncio

import grpc

from meshlib.app import start_service
from meshlib.auth.testing import TestIssuer
from meshlib.auth.verifier import static_jwks
from openbank.settlement.v1 import settlement_pb2, settlement_pb2_grpc
from services.settlement.bootstrap import settlement_spec
from services.settlement.schedule import close_due_windows
from services.settlement.settings import SettlementSettings


async def _windows(port: int, issuer: TestIssuer) -> list[settlement_pb2.SettlementWindow]:
    token = issuer.token("service:ops", scopes=["settlement:read", "settlement:admin"])
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        page = await settlement_pb2_grpc.SettlementServiceStub(channel).ListSettlementWindows(
            settlement_pb2.ListSettlementWindowsRequest(currency_code="EUR", page_size=100),
            metadata=(("authorization", f"Bearer {token}"),),
        )
    return list(page.settlement_windows)


async def test_the_schedule_closes_windows_and_a_slot_closes_only_once(database_url: str) -> None:
    issuer = TestIssuer(issuer="https://identity.openbank.local", audience="openbank-mesh")
    server = await start_service(
        settlement_spec(identity=False),
        SettlementSettings(port=0, database_url=database_url, window_close_interval_seconds=0.3),
        jwks_fetcher=static_jwks(issuer.jwks),
    )
    try:
        await asyncio.sleep(1.2)
        windows = await _windows(server.port, issuer)
        closed = [w for w in windows if w.state == settlement_pb2.SETTLEMENT_WINDOW_STATE_CLOSED]
        open_ = [w for w in windows if w.state == settlement_pb2.SETTLEMENT_WINDOW_STATE_OPEN]
        assert len(closed) >= 2 and len(open_) == 1
        # Two replicas in the same slot: one close, the other gets the same answer replayed.
        service = server.components.windows
        first, second = await asyncio.gather(
            close_due_windows(service, ["EUR"], 3600.0, clock=lambda: 7_200_000.0),
            close_due_windows(service, ["EUR"], 3600.0, clock=lambda: 7_200_000.0),
        )
        assert first == second  # one close for the slot; the other replica got it replayed
        assert await close_due_windows(service, ["EUR"], 3600.0, clock=lambda: 7_200_001.0) == first
    finally:
        await server.stop(0)
