"""The movements outbox with fakes: the ledger's use cases (create, post, void) write an outbox
row for each posting on a customer's account, in the same unit of work as the posting, and none
for a hold, a void or the bank's own accounts; the relay hands a row to identity's intake as an
account movement for the account's customer (masked number, amount, reference)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from meshlib.idempotency import SavedAnswer
from meshlib.money import Amount
from openbank.events.v1 import events_pb2
from services.account.batches import FinishRequest
from services.account.domain.ledger import (
    Account,
    Entry,
    Transfer,
    TransferRequest,
    TransferType,
    post_transfer,
    void_transfer,
)
from services.account.domain.movements import Movement
from services.account.event_relay import MovementRow, intake_event
from services.account.transfers import create_transfers, finish_holds
from tests.unit.account.samples import sample_account

NOW = dt.datetime(2026, 12, 7, 12, tzinfo=dt.UTC)


class FakeLedger:
    """The repositories the ledger's use cases touch, in memory; what one unit of work wrote."""

    def __init__(self, accounts: Iterable[Account]) -> None:
        self.accounts_by_id = {a.id: a for a in accounts}
        self.transfers_by_id: dict[str, Transfer] = {}
        self.entries: list[Entry] = []
        self.movements: list[Movement] = []

    # accounts
    async def lock(self, ids: Iterable[str]) -> dict[str, Account]:
        return {i: self.accounts_by_id[i] for i in set(ids) if i in self.accounts_by_id}

    async def save_many(self, accounts: Iterable[Account]) -> None:
        for account in accounts:
            self.accounts_by_id[account.id] = account

    # transfers
    async def many(self, ids: Iterable[str]) -> dict[str, Transfer]:
        return {i: self.transfers_by_id[i] for i in ids if i in self.transfers_by_id}

    lock_many = many

    async def add_many(self, transfers: Iterable[Transfer]) -> None:
        for transfer in transfers:
            self.transfers_by_id[transfer.id] = transfer

    save_states = add_many

    # entries (the statement and the outbox)
    async def add(self, entries: list[Entry]) -> None:
        self.entries += entries

    async def drop_pending_many(self, transfer_ids: Iterable[str]) -> None:
        dropped = set(transfer_ids)
        self.entries = [e for e in self.entries if not (e.transfer_id in dropped and e.status.value == "PENDING")]

    async def add_movements(self, movements: list[Movement]) -> None:
        self.movements += movements

    # the audit trail
    def record(self, *args: Any, **kwargs: Any) -> None:
        return None


class FakeUow:
    def __init__(self, ledger: FakeLedger) -> None:
        self.accounts = ledger
        self.transfers = ledger
        self.entries = _Entries(ledger)
        self.idempotency = _Keys()
        self.audit = ledger


class _Entries:
    def __init__(self, ledger: FakeLedger) -> None:
        self.add = ledger.add
        self.drop_pending_many = ledger.drop_pending_many
        self.add_movements = ledger.add_movements


class _Keys:
    async def lookup_many(self, scope: str, method: str, ids: Iterable[str]) -> dict[str, SavedAnswer]:
        return {}

    async def save_many(self, *args: Any) -> None:
        return None


def _accounts() -> FakeLedger:
    alice = sample_account("alice", at=NOW, balance=10_000, number="DE0000000000001234", customer_id="cust-alice")
    bob = sample_account("bob", at=NOW, number="DE0000000000005678", customer_id="cust-bob")
    wallet = sample_account("wallet", at=NOW, customer_id=None)  # a wallet's settlement account: no customer
    return FakeLedger([alice, bob, wallet])


def _request(transfer_id: str, debit: str, credit: str, amount: int, *, pending: bool = False) -> TransferRequest:
    return TransferRequest(
        transfer_id,
        debit,
        credit,
        Amount("EUR", amount),
        TransferType.PENDING if pending else TransferType.SINGLE_PHASE,
        dt.timedelta(seconds=30) if pending else None,
        reference=f"payments/{transfer_id}",
    )


async def test_a_posting_writes_a_movement_for_each_customer_account_it_touches() -> None:
    ledger = _accounts()
    uow: Any = FakeUow(ledger)
    await create_transfers(
        uow, [_request("p1", "alice", "wallet", 250), _request("p2", "alice", "bob", 100)], lambda: NOW
    )
    assert [(m.account_id, m.customer_id, m.direction.value, m.amount, m.reference) for m in ledger.movements] == [
        ("alice", "cust-alice", "DEBIT", 250, "payments/p1"),
        ("alice", "cust-alice", "DEBIT", 100, "payments/p2"),
        ("bob", "cust-bob", "CREDIT", 100, "payments/p2"),
    ]
    # Only the masked number: never the full one.
    assert {m.masked_number for m in ledger.movements} == {"••••1234", "••••5678"}
    assert all(m.currency == "EUR" and m.booking_time == NOW for m in ledger.movements)


async def test_a_hold_moves_nothing_until_it_is_posted_and_a_void_never() -> None:
    ledger = _accounts()
    uow: Any = FakeUow(ledger)
    await create_transfers(
        uow,
        [_request("h1", "alice", "bob", 300, pending=True), _request("h2", "bob", "alice", 1, pending=True)],
        lambda: NOW,
    )
    await create_transfers(uow, [_request("h3", "alice", "wallet", 5, pending=True)], lambda: NOW)
    assert ledger.movements == []
    await finish_holds(uow, "VoidTransfer", [FinishRequest("v1", "h2")], void_transfer, lambda: NOW)
    assert ledger.movements == []
    later = NOW + dt.timedelta(seconds=1)
    await finish_holds(
        uow, "PostTransfer", [FinishRequest("k1", "h1"), FinishRequest("k3", "h3")], post_transfer, lambda: later
    )
    assert [(m.account_id, m.direction.value, m.amount, m.reference, m.booking_time) for m in ledger.movements] == [
        ("alice", "DEBIT", 300, "payments/h1", later),
        ("bob", "CREDIT", 300, "payments/h1", later),
        ("alice", "DEBIT", 5, "payments/h3", later),
    ]


async def test_a_refused_posting_writes_no_movement() -> None:
    ledger = _accounts()
    uow: Any = FakeUow(ledger)
    applied, _ = await create_transfers(uow, [_request("big", "bob", "alice", 1_000_000)], lambda: NOW)
    assert applied.results()[0].error_reason == "INSUFFICIENT_FUNDS"
    assert ledger.movements == []


def test_the_relay_hands_a_row_over_as_a_movement_for_the_customer_not_a_partner() -> None:
    row = MovementRow(42, "alice", "cust-alice", "DEBIT", 250, "EUR", "••••1234", "payments/p1", NOW)
    message = intake_event(row)
    assert message.source_key == "account:42"
    assert message.customer == "customers/cust-alice" and message.partner == ""
    event = message.event
    assert event.type == events_pb2.EVENT_TYPE_ACCOUNT_DEBITED and event.resource == "accounts/alice"
    assert (event.account.amount.currency_code, event.account.amount.minor_units) == ("EUR", 250)
    assert (event.account.masked_account_number, event.account.reference) == ("••••1234", "payments/p1")
    assert event.event_time.ToDatetime(tzinfo=dt.UTC) == NOW
    credit = intake_event(MovementRow(43, "bob", "cust-bob", "CREDIT", 1, "EUR", "••••5678", "", NOW))
    assert credit.event.type == events_pb2.EVENT_TYPE_ACCOUNT_CREDITED
