"""Settling a window moves money, on the real store (SQLite and PostgreSQL) with an in-memory
ledger: one linked chain, idempotent, recoverable after a crash between the ledger post and the
window update, refused as a whole."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from meshlib.audit import AuditFilter, AuditStore
from meshlib.errors import FailedPrecondition, MeshError, Unavailable
from meshlib.money import Amount
from services.settlement.domain.reconciliation import DifferenceKind
from services.settlement.domain.settlement_legs import chain_request_id, window_reference
from services.settlement.domain.windows import SettlementWindow, WindowState
from services.settlement.reconciliation_service import ReconciliationService
from services.settlement.tables import audit
from tests.integration.settlement.support import Layer, key


async def _closed_window(layer: Layer) -> tuple[SettlementWindow, dict[str, str]]:
    """A bank and two wallets; the bank pays w1 300 (a top-up), w2 pays the bank 120."""
    bank = await layer.bank()
    w1 = await layer.wallet("w1", cap=10_000)
    w2 = await layer.wallet("w2", cap=10_000)
    await layer.pay("p1", bank.id, w1.id, 300)
    await layer.pay("p2", w2.id, bank.id, 120)
    closed, _ = await layer.windows.close(key(), currency="EUR")
    return closed, {"bank": bank.id, "w1": w1.id, "w2": w2.id}


async def _nets(layer: Layer, ids: dict[str, str]) -> dict[str, int]:
    async with layer.uow() as uow:
        return {label: (await uow.positions.get(pid, "EUR")).net_minor for label, pid in ids.items()}  # type: ignore[union-attr]


def _legs(layer: Layer, window: SettlementWindow) -> list[tuple[str, str, int]]:
    return [
        (t.debit_account, t.credit_account, t.amount.minor_units)
        for t in layer.ledger.legs_of(window_reference(window.id))
    ]


async def test_settling_posts_each_net_as_one_chain_then_marks_the_window_settled(
    layer: Layer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="settlement.windows")  # its log lines are on the path
    window, ids = await _closed_window(layer)
    settled = await layer.settlement.settle(key(), window.id, "rtgs-1")
    assert (settled.state, settled.settlement_reference) == (WindowState.SETTLED, "rtgs-1")
    assert _legs(layer, window) == [
        ("accounts/settle-w1", "accounts/bank-settlement", 300),  # w1 is owed 300: paid out
        ("accounts/bank-settlement", "accounts/settle-w2", 120),  # w2 owes 120: pays in
    ]
    assert list(layer.ledger.chains) == [chain_request_id(window.id)]
    assert await _nets(layer, ids) == {"bank": 0, "w1": 0, "w2": 0}
    assert {"settlement posted", "settlement window settled"} <= set(caplog.messages)
    store = AuditStore(layer.database, audit, "settlement")
    (entry,) = await store.page(AuditFilter(action_prefix="window.settle"), before_id=None, limit=10)
    details = json.loads(entry["details"])
    assert details["ledger_transfers"] == [t.name for t in layer.ledger.transfers]
    assert details["ledger_chain"] == chain_request_id(window.id)


async def test_a_replayed_request_answers_first_and_another_is_refused_without_moving_money(layer: Layer) -> None:
    window, _ = await _closed_window(layer)
    request = key()
    first = await layer.settlement.settle(request, window.id)
    calls = layer.ledger.calls
    assert await layer.settlement.settle(request, window.id) == first
    assert layer.ledger.calls == calls  # the replay never reached the ledger
    with pytest.raises(FailedPrecondition) as again:
        await layer.settlement.settle(key(), window.id)
    assert again.value.reason == "WINDOW_ALREADY_SETTLED"
    assert len(_legs(layer, window)) == 2


async def test_a_crash_after_the_ledger_post_is_recovered_by_settling_again(layer: Layer) -> None:
    window, ids = await _closed_window(layer)
    layer.ledger.crash_after_post = True  # the money moves, the answer is lost
    with pytest.raises(Unavailable):
        await layer.settlement.settle(key(), window.id)
    async with layer.uow() as uow:
        assert (await uow.windows.get(window.id)).state is WindowState.CLOSED  # type: ignore[union-attr]
    assert await _nets(layer, ids) == {"bank": -180, "w1": 300, "w2": -120}  # positions untouched
    reconciliation = ReconciliationService(layer.transactions, layer.ledger)
    pending = await reconciliation.reconcile(window.id)
    assert DifferenceKind.SETTLEMENT_NOT_RECORDED in {d.kind for d in pending.differences}

    settled = await layer.settlement.settle(key(), window.id)  # any request_id: the same chain
    assert settled.state is WindowState.SETTLED
    assert len(_legs(layer, window)) == 2  # posted once
    assert await _nets(layer, ids) == {"bank": 0, "w1": 0, "w2": 0}
    after = await reconciliation.reconcile(window.id)
    assert not [d for d in after.differences if d.kind.value.startswith("SETTLEMENT")]


async def test_a_refused_chain_moves_nothing_and_leaves_the_window_closed(layer: Layer) -> None:
    window, ids = await _closed_window(layer)
    layer.ledger.refuse = FailedPrecondition("no money", reason="INSUFFICIENT_FUNDS", metadata={"index": "1"})
    with pytest.raises(MeshError) as refused:
        await layer.settlement.settle(key(), window.id)
    assert refused.value.reason == "INSUFFICIENT_FUNDS"
    assert _legs(layer, window) == []
    assert await _nets(layer, ids) == {"bank": -180, "w1": 300, "w2": -120}
    async with layer.uow() as uow:
        assert (await uow.windows.get(window.id)).state is WindowState.CLOSED  # type: ignore[union-attr]
    assert (await layer.settlement.settle(key(), window.id)).state is WindowState.SETTLED  # once fixed


async def test_racing_settles_post_the_chain_once_and_record_it_once(layer: Layer) -> None:
    window, ids = await _closed_window(layer)
    outcomes = await asyncio.gather(
        *(layer.settlement.settle(key(), window.id) for _ in range(3)), return_exceptions=True
    )
    settled = [o for o in outcomes if isinstance(o, SettlementWindow)]
    refused = [o for o in outcomes if isinstance(o, MeshError)]
    assert len(settled) == 1 and {e.reason for e in refused} <= {"WINDOW_ALREADY_SETTLED"}, outcomes
    assert len(_legs(layer, window)) == 2
    assert await _nets(layer, ids) == {"bank": 0, "w1": 0, "w2": 0}


async def test_a_window_with_nets_needs_the_bank_and_an_empty_one_needs_no_ledger(layer: Layer) -> None:
    w1 = await layer.wallet("w1", cap=1_000)
    w2 = await layer.wallet("w2", cap=1_000)
    await layer.pay("p1", w1.id, w2.id, 50)
    window, following = await layer.windows.close(key(), currency="EUR")
    with pytest.raises(FailedPrecondition) as missing:
        await layer.settlement.settle(key(), window.id)
    assert missing.value.reason == "PARTICIPANT_NOT_ACTIVE" and layer.ledger.calls == 0
    await layer.bank()
    await layer.settlement.settle(key(), window.id)
    assert _legs(layer, window) == [
        ("accounts/settle-w2", "accounts/bank-settlement", 50),
        ("accounts/bank-settlement", "accounts/settle-w1", 50),
    ]
    empty, _ = await layer.windows.close(key(), window_id=following.id)
    calls = layer.ledger.calls
    assert (await layer.settlement.settle(key(), empty.id)).state is WindowState.SETTLED
    assert layer.ledger.calls == calls
    assert Amount("EUR", 50) in {t.amount for t in layer.ledger.transfers}
