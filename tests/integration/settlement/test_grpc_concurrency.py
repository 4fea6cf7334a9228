"""Commits racing window closes over real gRPC: every committed obligation lands in exactly
one window, the one that was OPEN when it committed, and a closed window never gains an
obligation afterwards (Mojaloop's "settling right after close" bug)."""

from __future__ import annotations

import asyncio
import random

from openbank.settlement.v1 import position_pb2, settlement_admin_pb2, settlement_pb2
from tests.integration.settlement.grpc_support import Mesh

ROUNDS = 3
OBLIGATIONS_PER_ROUND = 40
CLOSES_PER_ROUND = 6


async def test_obligations_committed_while_windows_close_land_in_exactly_one_window(mesh: Mesh) -> None:
    names = [(await mesh.register(None, cap=10**9)).name]
    names += [(await mesh.register(f"w{i}", cap=10**9)).name for i in range(3)]
    rng = random.Random(7)
    committed: dict[str, position_pb2.Obligation] = {}
    closes: list[settlement_admin_pb2.CloseSettlementWindowResponse] = []

    for round_number in range(ROUNDS):
        payments = [f"r{round_number}-p{i}" for i in range(OBLIGATIONS_PER_ROUND)]
        for payment in payments:
            payer, payee = rng.sample(names, 2)
            await mesh.reserve(payment, payer, payee, rng.randint(1, 1_000))

        async def commit_all(batch: list[str] = payments) -> list[position_pb2.Obligation]:
            return list(await asyncio.gather(*(mesh.commit(p) for p in batch)))

        async def close_repeatedly() -> list[settlement_admin_pb2.CloseSettlementWindowResponse]:
            answers = []
            for _ in range(CLOSES_PER_ROUND):
                answers.append(await mesh.close())
                await asyncio.sleep(rng.random() / 200)
            return answers

        results, round_closes = await asyncio.gather(commit_all(), close_repeatedly())
        committed.update({o.name: o for o in results})
        closes += round_closes

    assert len(committed) == ROUNDS * OBLIGATIONS_PER_ROUND
    # The race really happened: commits of one round were split across windows.
    assert len({o.window for o in committed.values()}) >= 2
    windows = (
        await mesh.public.ListSettlementWindows(
            settlement_pb2.ListSettlementWindowsRequest(page_size=500, currency_code="EUR"), metadata=mesh.operator
        )
    ).settlement_windows
    by_name = {w.name: w for w in windows}
    assert sum(1 for w in windows if w.state == settlement_pb2.SETTLEMENT_WINDOW_STATE_OPEN) == 1
    # Every obligation sits in exactly one known window, and stays where its commit put it.
    for obligation in committed.values():
        assert obligation.window in by_name
        stored = await mesh.positions.GetObligation(
            position_pb2.GetObligationRequest(name=obligation.name), metadata=mesh.saga
        )
        assert stored.obligation.window == obligation.window
    assert sum(w.obligation_count for w in windows) == len(committed)
    # A window's contents were final when it closed: nothing joined it afterwards.
    for answer in closes:
        later = by_name[answer.closed_window.name]
        assert later.obligation_count == answer.closed_window.obligation_count
        assert later.gross_amount.minor_units == answer.closed_window.gross_amount.minor_units
        members = [o for o in committed.values() if o.window == answer.closed_window.name]
        assert len(members) == answer.closed_window.obligation_count
        report = (
            await mesh.public.GetSettlementReport(
                settlement_pb2.GetSettlementReportRequest(window=answer.closed_window.name), metadata=mesh.operator
            )
        ).report
        assert sum(p.net.minor_units for p in report.net_positions) == 0
