"""Concurrent reservations on the real store: the cap holds under contention, a payment is
reserved once however many callers race for it, and opposite flows do not deadlock."""

from __future__ import annotations

import asyncio

from meshlib.errors import FailedPrecondition
from meshlib.money import Amount
from services.settlement.domain.obligations import ObligationState
from tests.integration.settlement.support import Layer, key


async def _position(layer: Layer, participant: str):  # type: ignore[no-untyped-def]
    async with layer.uow() as uow:
        return await uow.positions.get(participant, "EUR")


async def test_racing_reservations_never_pass_the_cap(layer: Layer) -> None:
    bank = await layer.bank()
    wallet = await layer.wallet("w1", cap=1_000)

    async def attempt(index: int) -> bool:
        try:
            await layer.positions.reserve(key(), f"p{index}", wallet.id, bank.id, Amount("EUR", 100))
        except FailedPrecondition as error:
            assert error.reason == "NET_DEBIT_CAP_EXCEEDED"
            return False
        return True

    outcomes = await asyncio.gather(*(attempt(i) for i in range(25)))
    assert sum(outcomes) == 10
    assert (await _position(layer, wallet.id)).reserved_minor == 1_000


async def test_racing_reservations_of_one_payment_reserve_it_once(layer: Layer) -> None:
    bank = await layer.bank()
    wallet = await layer.wallet("w1", cap=1_000)
    results = await asyncio.gather(
        *(layer.positions.reserve(key(), "same", wallet.id, bank.id, Amount("EUR", 300)) for _ in range(8))
    )
    assert {(r.id, r.state) for r in results} == {("same", ObligationState.RESERVED)}
    assert (await _position(layer, wallet.id)).reserved_minor == 300


async def test_opposite_flows_commit_concurrently_without_deadlock(layer: Layer) -> None:
    wallet_a = await layer.wallet("a", cap=100_000)
    wallet_b = await layer.wallet("b", cap=100_000)
    pairs = [(wallet_a.id, wallet_b.id), (wallet_b.id, wallet_a.id)]
    await asyncio.gather(*(layer.pay(f"p{i}", *pairs[i % 2], 10 + i) for i in range(30)))
    a, b = await _position(layer, wallet_a.id), await _position(layer, wallet_b.id)
    assert a.net_minor + b.net_minor == 0 and a.reserved_minor == b.reserved_minor == 0
