"""PostTransfer's and BatchPostTransfers' rules in memory (no database, no gRPC), and the key they share."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

from meshlib.idempotency import SavedAnswer
from meshlib.money import Amount
from services.account.answers import finish_fingerprint, transfer_answer
from services.account.batches import FinishRequest, apply_finishes
from services.account.domain.ledger import (
    Account,
    Transfer,
    TransferRequest,
    TransferState,
    TransferType,
    create_transfer,
    post_transfer,
)
from tests.unit.account.samples import sample_account

NOW = dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)


def account(account_id: str, balance: int = 0) -> Account:
    return sample_account(account_id, at=NOW, balance=balance)


def hold(transfer_id: str, amount: int, debit: Account, credit: Account, at: dt.datetime) -> Transfer:
    request = TransferRequest(
        transfer_id, debit.id, credit.id, Amount("EUR", amount), TransferType.PENDING, dt.timedelta(seconds=30)
    )
    return create_transfer(request, debit, credit, at).transfer


def test_post_transfer_keys_keep_their_fingerprint() -> None:
    """Keys PostTransfer saved before the batch existed must still answer a batch item, and back."""
    expected = hashlib.sha256(json.dumps({"transfer": "t-1"}).encode()).hexdigest()
    assert finish_fingerprint("t-1") == expected


def test_items_take_effect_in_order_each_as_post_transfer_would() -> None:
    alice, bob = account("alice", balance=1_000), account("bob")
    h1 = hold("h1", 300, alice, bob, NOW)
    h2 = hold("h2", 200, alice, bob, NOW - dt.timedelta(seconds=60))  # elapsed
    h3 = hold("h3", 100, alice, bob, NOW)
    older = json.dumps({**h3.to_dict(), "state": "POSTED"}).encode()
    keys = {"old": SavedAnswer("old", finish_fingerprint("h3"), older)}
    items = [
        FinishRequest("k1", "h1"),
        FinishRequest("k1", "h3"),  # k1 was saved by item 0: REQUEST_ID_REUSED
        FinishRequest("k2", "h2"),  # elapsed: released, then refused
        FinishRequest("old", "h3"),  # an older PostTransfer key: its answer, nothing applied
        FinishRequest("k3", "missing"),
    ]
    holds = {t.id: t for t in (h1, h2, h3)}
    batch = apply_finishes(items, holds, keys, {"alice": alice, "bob": bob}, post_transfer, NOW)
    assert [r.error_reason for r in batch.results()] == [
        None,
        "REQUEST_ID_REUSED",
        "TRANSFER_EXPIRED",
        None,
        "RESOURCE_NOT_FOUND",
    ]
    assert batch.answers[3] == Transfer.from_dict(json.loads(older))
    assert batch.made == {0}
    assert [(o.transfer.id, o.transfer.state) for o in batch.changed] == [
        ("h1", TransferState.POSTED),
        ("h2", TransferState.EXPIRED),
    ]
    # The one new key is PostTransfer's, with PostTransfer's answer.
    assert batch.keys == [("k1", finish_fingerprint("h1"), transfer_answer(batch.changed[0].transfer))]
    assert transfer_answer(batch.changed[0].transfer) == json.dumps(batch.changed[0].transfer.to_dict()).encode()
    # h1 posted, h2 released, h3 still held (the older key's answer changed nothing).
    assert (alice.debits_posted, alice.debits_pending) == (300, 100)
    assert (bob.credits_posted, bob.credits_pending) == (300, 100)
    assert set(batch.touched) == {"alice", "bob"}
