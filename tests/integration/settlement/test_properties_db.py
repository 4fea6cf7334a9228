"""Hypothesis on the real service layer and store (SQLite and PostgreSQL): the same random
scenarios as the pure model give the same outcomes and keep the same invariants."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings

from meshlib.errors import MeshError
from meshlib.money import Amount
from services.settlement.domain.participants import NetDebitCap, ParticipantType
from services.settlement.domain.reports import window_nets
from services.settlement.domain.settlement_legs import moved_out
from services.settlement.domain.windows import WindowState
from tests.integration.settlement.support import Layer, key
from tests.unit.settlement.scenarios import (
    CAPS,
    CURRENCY,
    OK,
    Close,
    Commit,
    Operation,
    PureBook,
    Release,
    Reserve,
    Settle,
    check_invariants,
    operations,
    outcome,
    payment_id,
)


async def _run_operation(layer: Layer, ids: list[str], op: Operation) -> str:
    try:
        if isinstance(op, Reserve):
            await layer.positions.reserve(
                key(), payment_id(op.payment), ids[op.payer], ids[op.payee], Amount(CURRENCY, op.amount)
            )
        elif isinstance(op, Commit):
            await layer.positions.commit(key(), payment_id(op.payment))
        elif isinstance(op, Release):
            await layer.positions.release(key(), payment_id(op.payment))
        elif isinstance(op, Close):
            await layer.windows.close(key(), currency=CURRENCY)
        elif isinstance(op, Settle):
            windows = await _windows(layer)
            await layer.settlement.settle(key(), windows[op.pick % len(windows)].id)
    except MeshError as error:
        return outcome(error)
    return OK


async def _windows(layer: Layer):  # type: ignore[no-untyped-def]
    async with layer.uow() as uow:
        rows = await uow.windows.page(None, None, None, 10_000)
    return [window for _, window in reversed(rows)]


async def _state(layer: Layer, ids: list[str]):  # type: ignore[no-untyped-def]
    async with layer.uow() as uow:
        # The model's participants only (the bank, settlement's counterpart, has none of its own).
        positions = {p.participant_id: p for p in await uow.positions.all() if p.participant_id in ids}
        obligations = await uow.obligations.all()
    return positions, obligations, await _windows(layer)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=operations)
async def test_random_operations_on_the_real_store_match_the_model(layer: Layer, ops: list[Operation]) -> None:
    await layer.wipe()
    ids = [
        (
            await layer.participants.register(
                key(), ParticipantType.WALLET, f"partner-{i}", f"accounts/s{i}", [NetDebitCap(CURRENCY, cap, 80)]
            )
        ).id
        for i, cap in enumerate(CAPS)
    ]
    await layer.bank()  # settlement's counterpart account; no obligation of its own here
    book = PureBook()
    settled_any = False
    for op in ops:
        if isinstance(op, Settle) and not book.windows:
            continue  # the first window opens on demand; nothing to pick yet
        expected = book.apply(op)
        actual = await _run_operation(layer, ids, op)
        assert actual == expected, op
        settled_any = settled_any or (isinstance(op, Settle) and actual == OK)
        positions, obligations, windows = await _state(layer, ids)
        if isinstance(op, Reserve) and actual == OK:
            assert positions[ids[op.payer]].exposure_minor <= CAPS[op.payer]
        check_invariants(positions, dict(zip(ids, CAPS, strict=True)), obligations, windows, settled_any)
        # Same figures as the model, participant by participant.
        for index, participant in enumerate(ids):
            assert positions[participant].net_minor == book.positions[index].net_minor
            assert positions[participant].reserved_minor == book.positions[index].reserved_minor
        # Settled windows moved money, exactly their nets, once: what left each settlement
        # account on the ledger is what its participant was owed over the settled windows.
        settled_nets = window_nets(
            o for o in obligations if o.window_id in {w.id for w in windows if w.state is WindowState.SETTLED}
        )
        moved = moved_out((t.debit_account, t.credit_account, t.amount.minor_units) for t in layer.ledger.transfers)
        for index, participant in enumerate(ids):
            assert moved.get(f"accounts/s{index}", 0) == settled_nets.get(participant, 0)
        assert sum(moved.values()) == 0
