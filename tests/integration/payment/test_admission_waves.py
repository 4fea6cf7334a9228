"""CreatePayments start in waves: the payments that arrive while a wave runs start together as
the next one, so each of their downstream calls leaves as one batch (meshlib.admission)."""

from __future__ import annotations

import asyncio

from meshlib.metrics import REGISTRY
from openbank.payment.v1 import payment_pb2
from tests.integration.payment.mesh import running_mesh, standard_mesh


def _hold_batches() -> tuple[float, float]:
    labels = {"batch": "ledger.CreateTransfer"}
    count = REGISTRY.get_sample_value("openbank_coalesced_batch_items_count", labels) or 0.0
    items = REGISTRY.get_sample_value("openbank_coalesced_batch_items_sum", labels) or 0.0
    return count, items


async def test_payments_arriving_during_a_wave_start_together_and_share_each_batch(tmp_path) -> None:  # type: ignore[no-untyped-def]
    urls = {n: f"sqlite+aiosqlite:///{tmp_path / f'{n}.db'}" for n in ("account", "settlement", "payment")}
    async with running_mesh(urls) as running:
        mesh = await standard_mesh(running, funds=100_000)
        mesh.grant("slow", "partner-1", ["alice", "bob"])
        gate = mesh.consents.gates["slow"] = asyncio.Event()
        count_before, items_before = _hold_batches()
        first = asyncio.ensure_future(mesh.transfer(100, consent="slow"))  # its wave waits on the gate
        await asyncio.sleep(0.05)
        later = []
        for _ in range(4):  # arriving one by one, while the first wave runs
            later.append(asyncio.ensure_future(mesh.transfer(100)))
            await asyncio.sleep(0.02)
        assert not any(task.done() for task in later)
        gate.set()
        settled = await asyncio.gather(first, *later)
        assert {payment.state for payment in settled} == {payment_pb2.PAYMENT_STATE_SETTLED}
        count, items = _hold_batches()
        # The first payment's hold alone, then the four later ones' holds as one batch.
        assert (count - count_before, items - items_before) == (2, 5)


async def test_without_the_speed_ups_each_payment_sends_its_own_calls_and_settles_the_same(tmp_path) -> None:  # type: ignore[no-untyped-def]
    urls = {n: f"sqlite+aiosqlite:///{tmp_path / f'{n}.db'}" for n in ("account", "settlement", "payment")}
    async with running_mesh(urls, payment_batching=False) as running:
        mesh = await standard_mesh(running, funds=100_000)
        count_before, items_before = _hold_batches()
        settled = await asyncio.gather(*(mesh.transfer(100) for _ in range(5)))
        assert {payment.state for payment in settled} == {payment_pb2.PAYMENT_STATE_SETTLED}
        assert _hold_batches() == (count_before, items_before)  # no coalescer on the way
        assert await mesh.balance("bob") == (500, 500)
