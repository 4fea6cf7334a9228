"""300 concurrent transfers against one hot account over real gRPC, on SQLite and PostgreSQL.

Every transfer is either accepted or refused INSUFFICIENT_FUNDS; the final balances equal the
sum of the accepted ones, the hot account never went below zero, and the ledger sums to zero.
The server admits all 300 streams at once: with the default limit (256) gRPC refused the
streams over it (RST_STREAM REFUSED_STREAM, UNAVAILABLE) whenever they raced the limit,
which made this test flaky on a loaded machine.
"""

from __future__ import annotations

import asyncio
import random

import grpc

from openbank.account.v1 import ledger_pb2
from tests.integration.account.harness import AccountHarness, reason_of, running_account_service

TRANSFERS = 300
HOT_FUNDING = 4_000


async def test_hot_account_under_300_concurrent_transfers(database_url: str) -> None:
    async with running_account_service(database_url, max_concurrent_streams=2 * TRANSFERS) as harness:
        await _hot_account(harness)


async def _hot_account(harness: AccountHarness) -> None:
    hot = await harness.open(customer="hot")
    others = [await harness.open(customer=f"c{index}") for index in range(6)]
    await harness.fund(hot.name, HOT_FUNDING)
    for other in others:
        await harness.fund(other.name, 1_000)
    rng = random.Random(7)
    # Two thirds debit the hot account (more than it holds in total), one third credit it.
    plan = []
    for index in range(TRANSFERS):
        other = rng.choice(others).name
        amount = rng.randint(1, 150)
        if index % 3:
            plan.append((f"hot-{index}", hot.name, other, amount))
        else:
            plan.append((f"hot-{index}", other, hot.name, amount))
    assert sum(a for _, d, _, a in plan if d == hot.name) > HOT_FUNDING

    async def send(request_id: str, debit: str, credit: str, amount: int) -> bool:
        try:
            transfer = await harness.transfer(debit, credit, amount, request_id=request_id)
        except grpc.aio.AioRpcError as error:
            assert reason_of(error) == "INSUFFICIENT_FUNDS", (error.code(), error.details())
            return False
        assert transfer.state == ledger_pb2.TRANSFER_STATE_POSTED
        return True

    accepted = await asyncio.gather(*(send(*item) for item in plan))
    expected = {hot.name: HOT_FUNDING, **{other.name: 1_000 for other in others}}
    for (_, debit, credit, amount), ok in zip(plan, accepted, strict=True):
        if ok:
            expected[debit] -= amount
            expected[credit] += amount
    assert not all(accepted) and any(accepted)
    for name, balance in expected.items():
        got = await harness.balance_of(name)
        assert got.current.minor_units == balance, name
        assert got.available.minor_units >= 0
    totals = (await harness.totals()).totals
    assert [(t.currency_code, t.net.minor_units, t.balanced) for t in totals] == [("EUR", 0, True)]
    # Every accepted transfer is on the ledger exactly once.
    listing = ledger_pb2.ListTransfersRequest(account=hot.name, page_size=500)
    listed = await harness.ledger.ListTransfers(listing, metadata=harness.internal)
    assert len(listed.transfers) == sum(accepted) + 1  # plus the funding
