"""CreateLinkedTransfers' rule in memory (no database, no gRPC): every leg of a chain or none."""

from __future__ import annotations

import copy
import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshlib.errors import InvalidArgument, MeshError
from meshlib.money import Amount
from services.account.batches import apply_creates, apply_linked, leg_refused
from services.account.domain.ledger import Account, AccountStatus, AccountType, TransferRequest, TransferType
from tests.unit.account.samples import sample_account

NOW = dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)


def leg(transfer_id: str, debit: str, credit: str, minor: int, currency: str = "EUR") -> TransferRequest:
    return TransferRequest(transfer_id, debit, credit, Amount(currency, minor), TransferType.SINGLE_PHASE)


def accounts(**balances: int) -> dict[str, Account]:
    return {name: sample_account(name, at=NOW, balance=balance) for name, balance in balances.items()}


def state(locked: dict[str, Account]) -> dict[str, tuple[int, int, int, int, int]]:
    """Everything a chain may change on an account."""
    return {
        a.id: (a.debits_posted, a.credits_posted, a.debits_pending, a.credits_pending, a.last_entry_seq)
        for a in locked.values()
    }


def refusal(legs: list[TransferRequest | MeshError], locked: dict[str, Account], existing=None) -> MeshError:  # type: ignore[no-untyped-def]
    with pytest.raises(MeshError) as caught:
        apply_linked(legs, existing or {}, locked, NOW)
    return caught.value


def test_a_leg_may_spend_what_an_earlier_leg_of_the_chain_credited() -> None:
    locked = accounts(customer=100, wallet=0, bank=0)
    chain: list[TransferRequest | MeshError] = [
        leg("l0", "customer", "wallet", 100),
        leg("l1", "wallet", "bank", 70),  # only possible because l0 came first
    ]
    applied = apply_linked(chain, {}, locked, NOW)
    assert applied.made == {0, 1} and [o.transfer.id for o in applied.created] == ["l0", "l1"]
    assert {a.id: a.current for a in locked.values()} == {"customer": 0, "wallet": 30, "bank": 70}
    assert sum(a.current for a in locked.values()) == 100  # what was there: a chain only moves money


def test_one_refused_leg_refuses_the_chain_with_its_reason_and_index_and_changes_nothing() -> None:
    locked = accounts(customer=100, wallet=0, bank=0)
    before = state(locked)
    chain: list[TransferRequest | MeshError] = [
        leg("l0", "customer", "wallet", 60),
        leg("l1", "wallet", "bank", 60),
        leg("l2", "customer", "bank", 41),  # 100 - 60 leaves 40
        leg("l3", "missing", "bank", 1),  # also refused, but l2 comes first
    ]
    error = refusal(chain, locked)
    assert (error.reason, error.metadata["index"]) == ("INSUFFICIENT_FUNDS", "2")
    assert error.metadata["account"] == "accounts/customer"
    assert state(locked) == before  # l0 and l1 were accepted in memory, then put back


def test_a_leg_refused_for_its_shape_names_its_field_in_the_chain() -> None:
    shaped = InvalidArgument.field("amount.minor_units", "must be greater than zero")
    error = leg_refused(3, shaped)
    assert isinstance(error, InvalidArgument)
    assert [v.field for v in error.violations] == ["requests[3].amount.minor_units"]
    assert (error.reason, error.metadata) == (
        "FIELD_INVALID",
        {"field": "requests[3].amount.minor_units", "index": "3"},
    )
    same = leg_refused(1, InvalidArgument.field("credit_account", "same", reason="SAME_ACCOUNT"))
    assert (same.reason, same.metadata["field"]) == ("SAME_ACCOUNT", "requests[1].credit_account")
    arrived_failed = refusal([leg("l0", "a", "b", 1), shaped], accounts(a=5, b=0))
    assert arrived_failed.metadata["index"] == "1"


def test_an_existing_leg_answers_itself_and_one_with_other_fields_refuses_the_chain() -> None:
    locked = accounts(customer=100, wallet=0)
    first = apply_linked([leg("l0", "customer", "wallet", 10)], {}, locked, NOW).created[0].transfer
    # A retry of the chain under another key: l0 exists with the same fields, l1 is new.
    retry: list[TransferRequest | MeshError] = [leg("l0", "customer", "wallet", 10), leg("l1", "customer", "wallet", 5)]
    applied = apply_linked(retry, {"l0": first}, locked, NOW)
    assert applied.made == {1} and applied.answers[0] is first
    assert locked["customer"].current == 85  # l0 was not applied twice
    before = state(locked)
    error = refusal([leg("l2", "customer", "wallet", 1), leg("l0", "customer", "wallet", 11)], locked, {"l0": first})
    assert (error.reason, error.metadata["index"]) == ("TRANSFER_EXISTS_WITH_DIFFERENT_FIELDS", "1")
    assert state(locked) == before


def test_frozen_accounts_and_currencies_refuse_the_chain_like_create_transfer() -> None:
    locked = accounts(a=50, b=0)
    locked["usd"] = sample_account("usd", at=NOW, currency="USD")
    locked["frozen"] = sample_account("frozen", at=NOW, status=AccountStatus.FROZEN)
    assert refusal([leg("l0", "a", "b", 1), leg("l1", "a", "usd", 1)], locked).reason == "CURRENCY_MISMATCH"
    assert refusal([leg("l0", "a", "frozen", 1)], locked).reason == "ACCOUNT_NOT_ACTIVE"
    assert state(locked)["a"] == (0, 50, 0, 0, 0)


# --- property: all or nothing, and the ledger still sums to zero ---------------------------

NAMES = ("equity", "a", "b", "c", "frozen", "usd")


def _ledger(balances: list[int]) -> dict[str, Account]:
    """Accounts funded from the bank's equity (so every currency sums to zero to start with)."""
    locked = {
        "equity": sample_account("equity", at=NOW, type=AccountType.BANK_EQUITY, customer_id=None),
        "frozen": sample_account("frozen", at=NOW, status=AccountStatus.FROZEN),
        "usd": sample_account("usd", at=NOW, currency="USD"),
    }
    for name, balance in zip(("a", "b", "c"), balances, strict=True):
        locked[name] = sample_account(name, at=NOW, balance=balance, overdraft_limit=5 if name == "c" else 0)
        locked["equity"].debits_posted += balance
    return locked


legs_strategy = st.lists(
    st.tuples(st.sampled_from((*NAMES, "missing")), st.sampled_from(NAMES), st.integers(1, 60)),
    min_size=1,
    max_size=8,
)


@settings(max_examples=400, deadline=None)
@given(balances=st.lists(st.integers(0, 100), min_size=3, max_size=3), raw=legs_strategy)
def test_a_chain_applies_every_leg_or_none_and_the_ledger_sums_to_zero(balances: list[int], raw) -> None:  # type: ignore[no-untyped-def]
    chain: list[TransferRequest | MeshError] = [
        leg(f"l{i}", debit, credit, minor) for i, (debit, credit, minor) in enumerate(raw)
    ]
    for index, item in enumerate(chain):  # a leg that fails its shape arrives as its error, as the service sends it
        try:
            assert isinstance(item, TransferRequest)
            item.validate()
        except MeshError as error:
            chain[index] = error
    locked = _ledger(balances)
    before = state(locked)
    # The model: the same legs one by one (a batch), the first refused one if any.
    one_by_one = apply_creates(chain, {}, copy.deepcopy(locked), NOW)
    refused = [i for i, answer in enumerate(one_by_one.answers) if isinstance(answer, MeshError)]
    try:
        applied = apply_linked(chain, {}, locked, NOW)
    except MeshError as error:
        assert refused, "a chain whose legs are all accepted one by one is accepted"
        first = one_by_one.answers[refused[0]]
        assert isinstance(first, MeshError)
        assert (error.metadata["index"], error.reason) == (str(refused[0]), first.reason)
        assert state(locked) == before, "a refused chain leaves every account as it was"
        return
    assert not refused
    assert applied.made == set(range(len(chain)))
    for currency in ("EUR", "USD"):
        assert sum(a.current for a in locked.values() if a.currency == currency) == 0
    requests = [item for item in chain if isinstance(item, TransferRequest)]
    for account in locked.values():
        moved_in = sum(r.amount.minor_units for r in requests if r.credit_account_id == account.id)
        moved_out = sum(r.amount.minor_units for r in requests if r.debit_account_id == account.id)
        assert account.current - (before[account.id][1] - before[account.id][0]) == moved_in - moved_out
        assert account.can_debit(0), "no leg took an account past its limit"
