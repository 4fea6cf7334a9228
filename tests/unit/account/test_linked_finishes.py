"""PostLinkedTransfers' and VoidLinkedTransfers' rule in memory (no database, no gRPC): every hold
of a chain finished, or none."""

from __future__ import annotations

import copy
import datetime as dt
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshlib.errors import InvalidArgument, MeshError
from meshlib.idempotency import SavedAnswer
from meshlib.money import Amount
from services.account.answers import finish_fingerprint
from services.account.batches import FinishRequest, apply_finishes, apply_linked_finishes
from services.account.domain.ledger import (
    Account,
    AccountStatus,
    AccountType,
    Transfer,
    TransferRequest,
    TransferState,
    TransferType,
    create_transfer,
    post_transfer,
    void_transfer,
)
from tests.unit.account.samples import sample_account

NOW = dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)


def hold(transfer_id: str, amount: int, debit: Account, credit: Account, at: dt.datetime = NOW) -> Transfer:
    request = TransferRequest(
        transfer_id, debit.id, credit.id, Amount("EUR", amount), TransferType.PENDING, dt.timedelta(seconds=30)
    )
    return create_transfer(request, debit, credit, at).transfer


def state(locked: dict[str, Account], holds: dict[str, Transfer]) -> tuple[object, ...]:
    """Everything a chain may change: the accounts' counters and the holds' states."""
    return (
        {
            a.id: (a.debits_posted, a.credits_posted, a.debits_pending, a.credits_pending, a.last_entry_seq)
            for a in locked.values()
        },
        {t.id: (t.state, t.updated_at) for t in holds.values()},
    )


def payment_and_fee() -> tuple[dict[str, Account], dict[str, Transfer]]:
    """A payment's hold (customer -> wallet's settlement account) and its fee's hold (wallet's
    settlement account -> the bank's fee income), created together."""
    locked = {
        "customer": sample_account("customer", at=NOW, balance=1_000),
        "wallet": sample_account("wallet", at=NOW, type=AccountType.SETTLEMENT, customer_id=None, balance=50),
        "fees": sample_account("fees", at=NOW, type=AccountType.SETTLEMENT, customer_id=None),
    }
    holds = {
        "pay": hold("pay", 400, locked["customer"], locked["wallet"]),
        "fee": hold("fee", 30, locked["wallet"], locked["fees"]),
    }
    return locked, holds


def refusal(items: list[FinishRequest | MeshError], holds, keys, locked, rule=post_transfer) -> MeshError:  # type: ignore[no-untyped-def]
    with pytest.raises(MeshError) as caught:
        apply_linked_finishes(items, holds, keys, locked, rule, NOW)
    return caught.value


def test_a_payment_and_its_fee_post_together() -> None:
    locked, holds = payment_and_fee()
    items: list[FinishRequest | MeshError] = [FinishRequest("k-pay", "pay"), FinishRequest("k-fee", "fee")]
    applied = apply_linked_finishes(items, holds, {}, locked, post_transfer, NOW)
    assert applied.made == {0, 1}
    assert [(o.transfer.id, o.transfer.state) for o in applied.changed] == [
        ("pay", TransferState.POSTED),
        ("fee", TransferState.POSTED),
    ]
    assert {a.id: (a.current, a.debits_pending, a.credits_pending) for a in locked.values()} == {
        "customer": (600, 0, 0),
        "wallet": (420, 0, 0),
        "fees": (30, 0, 0),
    }
    # Each item saved PostTransfer's own key, so the single rpc replays it.
    assert [(key, fingerprint) for key, fingerprint, _ in applied.keys] == [
        ("k-pay", finish_fingerprint("pay")),
        ("k-fee", finish_fingerprint("fee")),
    ]


@pytest.mark.parametrize(
    ("spoil", "reason"),
    [
        ("voided", "TRANSFER_ALREADY_VOIDED"),
        ("missing", "RESOURCE_NOT_FOUND"),
        ("elapsed", "TRANSFER_EXPIRED"),
        ("frozen", "ACCOUNT_NOT_ACTIVE"),
        ("key reused", "REQUEST_ID_REUSED"),
    ],
)
def test_one_refused_item_refuses_the_chain_with_its_reason_and_index_and_changes_nothing(
    spoil: str, reason: str
) -> None:
    locked, holds = payment_and_fee()
    keys: dict[str, SavedAnswer] = {}
    fee_item = FinishRequest("k-fee", "fee")
    if spoil == "voided":
        void_transfer(holds["fee"], locked["wallet"], locked["fees"], NOW)
    elif spoil == "missing":
        fee_item = FinishRequest("k-fee", "nope")
    elif spoil == "elapsed":
        holds["fee"].expires_at = NOW - dt.timedelta(seconds=1)
    elif spoil == "frozen":
        locked["fees"].status = AccountStatus.FROZEN
    else:  # k-fee already answered a post of another hold
        keys["k-fee"] = SavedAnswer("k-fee", finish_fingerprint("other"), b"{}")
    before = state(locked, holds)
    error = refusal([FinishRequest("k-pay", "pay"), fee_item], holds, keys, locked)
    assert (error.reason, error.metadata["index"]) == (reason, "1")
    # The payment's hold was posted in memory before the fee's was refused: put back, as the
    # elapsed hold's release (the expiry loop releases it, in its own transaction).
    assert state(locked, holds) == before
    assert holds["pay"].state is TransferState.PENDING


def test_an_item_whose_key_answered_counts_as_finished_and_is_not_applied_twice() -> None:
    locked, holds = payment_and_fee()
    post_transfer(holds["pay"], locked["customer"], locked["wallet"], NOW)  # by PostTransfer, key k-pay
    saved = json.dumps(holds["pay"].to_dict()).encode()
    keys = {"k-pay": SavedAnswer("k-pay", finish_fingerprint("pay"), saved)}
    items: list[FinishRequest | MeshError] = [FinishRequest("k-pay", "pay"), FinishRequest("k-fee", "fee")]
    applied = apply_linked_finishes(items, holds, keys, locked, post_transfer, NOW)
    assert applied.made == {1}
    assert [answer.state for answer in applied.answers if isinstance(answer, Transfer)] == [TransferState.POSTED] * 2
    assert locked["customer"].current == 600  # posted once


def test_a_chain_of_voids_releases_every_hold_even_on_a_frozen_account_or_none() -> None:
    locked, holds = payment_and_fee()
    locked["fees"].status = AccountStatus.FROZEN  # a release only gives money back
    items: list[FinishRequest | MeshError] = [FinishRequest("v-pay", "pay"), FinishRequest("v-fee", "fee")]
    applied = apply_linked_finishes(items, holds, {}, locked, void_transfer, NOW)
    assert [o.transfer.state for o in applied.changed] == [TransferState.VOIDED] * 2
    assert {a.id: (a.current, a.debits_pending) for a in locked.values()} == {
        "customer": (1_000, 0),
        "wallet": (50, 0),
        "fees": (0, 0),
    }
    locked, holds = payment_and_fee()
    post_transfer(holds["fee"], locked["wallet"], locked["fees"], NOW)
    before = state(locked, holds)
    error = refusal(items, holds, {}, locked, void_transfer)
    assert (error.reason, error.metadata["index"]) == ("TRANSFER_ALREADY_POSTED", "1")
    assert state(locked, holds) == before


def test_an_item_that_arrived_malformed_names_its_field_in_the_chain() -> None:
    locked, holds = payment_and_fee()
    malformed = InvalidArgument.field("name", "must be transfers/{transfer}")
    error = refusal([FinishRequest("k-pay", "pay"), malformed], holds, {}, locked)
    assert isinstance(error, InvalidArgument)
    assert (error.metadata["index"], [v.field for v in error.violations]) == ("1", ["requests[1].name"])
    assert holds["pay"].state is TransferState.PENDING


# --- property: all or nothing, and the ledger still sums to zero ---------------------------

ACCOUNTS = ("a", "b", "c", "frozen")
STATES = ("pending", "elapsed", "posted", "voided")


def _ledger(raw_holds: list[tuple[str, str, int, str]]) -> tuple[dict[str, Account], dict[str, Transfer]]:
    """Accounts funded from the bank's equity, and holds between them in the drawn states."""
    locked = {"equity": sample_account("equity", at=NOW, type=AccountType.BANK_EQUITY, customer_id=None)}
    for name in ACCOUNTS:
        locked[name] = sample_account(name, at=NOW, balance=500)
        locked["equity"].debits_posted += 500
    holds: dict[str, Transfer] = {}
    for index, (debit, credit, minor, drawn) in enumerate(raw_holds):
        if debit == credit:
            continue
        made = hold(f"h{index}", minor, locked[debit], locked[credit])
        if drawn == "posted":
            post_transfer(made, locked[debit], locked[credit], NOW)
        elif drawn == "voided":
            void_transfer(made, locked[debit], locked[credit], NOW)
        elif drawn == "elapsed":
            made.expires_at = NOW - dt.timedelta(seconds=1)
        holds[made.id] = made
    locked["frozen"].status = AccountStatus.FROZEN  # after its holds were made
    return locked, holds


@settings(max_examples=300, deadline=None)
@given(
    raw_holds=st.lists(
        st.tuples(st.sampled_from(ACCOUNTS), st.sampled_from(ACCOUNTS), st.integers(1, 100), st.sampled_from(STATES)),
        min_size=1,
        max_size=6,
    ),
    picks=st.lists(st.tuples(st.integers(0, 7), st.booleans()), min_size=1, max_size=6, unique_by=lambda p: p[0]),
    post=st.booleans(),
)
def test_a_chain_finishes_every_hold_or_none_and_the_ledger_sums_to_zero(raw_holds, picks, post) -> None:  # type: ignore[no-untyped-def]
    locked, holds = _ledger(raw_holds)
    rule = post_transfer if post else void_transfer
    # Some items replay a key saved by an earlier single finish of another hold: REQUEST_ID_REUSED.
    items: list[FinishRequest | MeshError] = [FinishRequest(f"k{i}", f"h{i}") for i, _ in picks]
    keys = {f"k{i}": SavedAnswer(f"k{i}", finish_fingerprint("elsewhere"), b"{}") for i, reused in picks if reused}
    before = state(locked, holds)
    model_locked, model_holds = copy.deepcopy(locked), copy.deepcopy(holds)
    one_by_one = apply_finishes(items, model_holds, keys, model_locked, rule, NOW)
    refused = [i for i, answer in enumerate(one_by_one.answers) if isinstance(answer, MeshError)]
    try:
        applied = apply_linked_finishes(items, holds, keys, locked, rule, NOW)
    except MeshError as error:
        assert refused, "a chain whose items are all accepted one by one is accepted"
        first = one_by_one.answers[refused[0]]
        assert isinstance(first, MeshError)
        assert (error.metadata["index"], error.reason) == (str(refused[0]), first.reason)
        assert state(locked, holds) == before, "a refused chain leaves every account and hold as it was"
        return
    assert not refused
    assert applied.made == set(range(len(items)))
    assert state(locked, holds) == state(model_locked, model_holds), "accepted: exactly the items one by one"
    final = TransferState.POSTED if post else TransferState.VOIDED
    assert all(holds[item.transfer_id].state is final for item in items if isinstance(item, FinishRequest))
    assert sum(a.current for a in locked.values()) == 0
    assert sum(a.debits_pending for a in locked.values()) == sum(a.credits_pending for a in locked.values())
