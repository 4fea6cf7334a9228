"""Concurrent batches on the real store (SQLite and PostgreSQL): the cap holds across racing
batches, a payment is reserved once however many batches and single calls race for it,
opposite flows do not deadlock, and a batch of commits never lands in a window after it closed."""

from __future__ import annotations

import asyncio

from meshlib.money import Amount
from services.settlement.domain.obligations import ObligationState
from services.settlement.obligation_batches import CommitItem, ReserveItem
from tests.integration.settlement.support import Layer, key


def _reserve(payment: str, payer: str, payee: str, minor: int) -> ReserveItem:
    return ReserveItem(key(), payment, payer, payee, Amount("EUR", minor))


async def _positions(layer: Layer):  # type: ignore[no-untyped-def]
    async with layer.uow() as uow:
        return {p.participant_id: p for p in await uow.positions.all()}


async def test_racing_batches_never_pass_the_cap(layer: Layer) -> None:
    bank = await layer.bank()
    wallet = await layer.wallet("w1", cap=1_000)
    batches = [[_reserve(f"p{b}-{i}", wallet.id, bank.id, 100) for i in range(5)] for b in range(6)]
    outcomes = await asyncio.gather(*(layer.batches.reserve(key("batch"), items) for items in batches))
    reasons = [r.error_reason for results in outcomes for r in results]
    assert reasons.count(None) == 10
    assert set(reasons) == {None, "NET_DEBIT_CAP_EXCEEDED"}
    assert (await _positions(layer))[wallet.id].reserved_minor == 1_000


async def test_racing_batches_and_single_calls_reserve_a_payment_once(layer: Layer) -> None:
    bank = await layer.bank()
    wallet = await layer.wallet("w1", cap=10_000)
    payments = [(f"p{i}", 10 + i) for i in range(10)]

    def batch() -> list[ReserveItem]:
        return [_reserve(payment, wallet.id, bank.id, minor) for payment, minor in payments]

    racers = [layer.batches.reserve(key("batch"), batch()) for _ in range(4)]
    singles = [
        layer.positions.reserve(key(), payment, wallet.id, bank.id, Amount("EUR", minor)) for payment, minor in payments
    ]
    outcomes = await asyncio.gather(*racers, *singles)
    for results in outcomes[:4]:
        assert [(r.obligation.id, r.obligation.state) for r in results] == [  # type: ignore[union-attr]
            (payment, ObligationState.RESERVED) for payment, _ in payments
        ]
    assert (await _positions(layer))[wallet.id].reserved_minor == sum(minor for _, minor in payments)


async def test_opposite_flows_in_batches_commit_concurrently_without_deadlock(layer: Layer) -> None:
    wallet_a = await layer.wallet("a", cap=100_000)
    wallet_b = await layer.wallet("b", cap=100_000)
    pairs = [(wallet_a.id, wallet_b.id), (wallet_b.id, wallet_a.id)]

    async def flow(batch: int) -> None:
        payer, payee = pairs[batch % 2]
        items = [_reserve(f"p{batch}-{i}", payer, payee, 10 + i) for i in range(8)]
        reserved = await layer.batches.reserve(key("batch"), items)
        assert all(r.obligation is not None for r in reserved)
        committed = await layer.batches.commit(key("batch"), [CommitItem(key(), item.payment_id) for item in items])
        assert all(r.obligation is not None and r.obligation.window_id for r in committed)

    await asyncio.gather(*(flow(batch) for batch in range(12)))
    positions = await _positions(layer)
    a, b = positions[wallet_a.id], positions[wallet_b.id]
    assert a.net_minor + b.net_minor == 0 and a.reserved_minor == b.reserved_minor == 0


async def test_batched_commits_never_land_in_a_closed_window(layer: Layer) -> None:
    bank = await layer.bank()
    wallet = await layer.wallet("w1", cap=1_000_000)
    await layer.batches.reserve(key("batch"), [_reserve(f"p{i}", wallet.id, bank.id, 1 + i) for i in range(40)])
    commits = [
        layer.batches.commit(key("batch"), [CommitItem(key(), f"p{i}") for i in range(start, start + 10)])
        for start in range(0, 40, 10)
    ]
    closes = [layer.windows.close(key(), currency="EUR") for _ in range(3)]
    outcomes = await asyncio.gather(*commits, *closes)
    closed = [pair[0] for pair in outcomes[4:]]  # type: ignore[index]
    async with layer.uow() as uow:
        obligations = await uow.obligations.all()
    assert all(o.state is ObligationState.COMMITTED and o.window_id for o in obligations)
    # A closed window's totals were final when it closed: nothing was committed into it later.
    for window in closed:
        landed = [o for o in obligations if o.window_id == window.id]
        assert (len(landed), sum(o.amount_minor for o in landed)) == (window.obligation_count, window.gross_minor)
    assert sum(o.amount_minor for o in obligations) == sum(1 + i for i in range(40))
