"""Hypothesis on the real service layer and store (SQLite and PostgreSQL): random batches of
reservations and commits, mixed with single releases and window closes, give item by item
what the reference model gives applying the same items one by one, and keep its invariants."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings

from meshlib.errors import MeshError
from meshlib.money import Amount
from services.settlement.domain.participants import NetDebitCap, ParticipantType
from services.settlement.obligation_batches import CommitItem, ReserveItem
from tests.integration.settlement.support import Layer, key
from tests.unit.settlement.scenarios import (
    CAPS,
    CURRENCY,
    OK,
    BatchStep,
    CommitBatch,
    PureBook,
    Release,
    ReserveBatch,
    batch_steps,
    check_invariants,
    outcome,
    payment_id,
)


async def _run_step(layer: Layer, ids: list[str], step: BatchStep) -> list[str]:
    """Run one step on the service layer; the outcome of each of its items."""
    if isinstance(step, ReserveBatch):
        reserves = [
            ReserveItem(key(), payment_id(r.payment), ids[r.payer], ids[r.payee], Amount(CURRENCY, r.amount))
            for r in step.items
        ]
        results = await layer.batches.reserve(key("batch"), reserves)
    elif isinstance(step, CommitBatch):
        commits = [CommitItem(key(), payment_id(c.payment)) for c in step.items]
        results = await layer.batches.commit(key("batch"), commits)
    else:
        try:
            if isinstance(step, Release):
                await layer.positions.release(key(), payment_id(step.payment))
            else:
                await layer.windows.close(key(), currency=CURRENCY)
        except MeshError as error:
            return [outcome(error)]
        return [OK]
    return [OK if r.obligation is not None else r.error_reason for r in results]  # type: ignore[misc]


async def _state(layer: Layer):  # type: ignore[no-untyped-def]
    async with layer.uow() as uow:
        positions = {p.participant_id: p for p in await uow.positions.all()}
        obligations = await uow.obligations.all()
        rows = await uow.windows.page(None, None, None, 10_000)
    return positions, obligations, [window for _, window in reversed(rows)]


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=batch_steps)
async def test_batches_on_the_real_store_match_the_model_one_by_one(layer: Layer, steps: list[BatchStep]) -> None:
    await layer.wipe()
    ids = [
        (
            await layer.participants.register(
                key(), ParticipantType.WALLET, f"partner-{i}", f"accounts/s{i}", [NetDebitCap(CURRENCY, cap, 80)]
            )
        ).id
        for i, cap in enumerate(CAPS)
    ]
    book = PureBook()
    for step in steps:
        items = step.items if isinstance(step, ReserveBatch | CommitBatch) else (step,)
        expected = [book.apply(item) for item in items]
        assert await _run_step(layer, ids, step) == expected, step
        positions, obligations, windows = await _state(layer)
        check_invariants(positions, dict(zip(ids, CAPS, strict=True)), obligations, windows, settled_any=False)
        for index, participant in enumerate(ids):
            assert positions[participant].net_minor == book.positions[index].net_minor
            assert positions[participant].reserved_minor == book.positions[index].reserved_minor
        assert sorted((o.id, o.state, o.amount_minor) for o in obligations) == sorted(
            (o.id, o.state, o.amount_minor) for o in book.obligations.values()
        )
        assert [w.state for w in windows] == [w.state for w in book.windows]
