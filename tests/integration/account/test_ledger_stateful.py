"""A Hypothesis state machine drives random holds, posts, voids, single transfers, batches of
transfers and of posts, and timeouts through the real service layer and store (SQLite and
PostgreSQL), checking after every step:

- per currency, the sum of all balances is zero and pending debits equal pending credits;
- no account except the bank's equity is below what it allows (current - held + overdraft >= 0);
- each account's pending totals equal the open holds (transfers in state PENDING) on it;
- posted totals match a model of the transfers the ledger accepted.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import tempfile
import uuid
from collections import defaultdict
from functools import partial
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from meshlib.errors import MeshError
from meshlib.money import Amount
from meshlib.storage import Database
from meshlib.storage.migrations import upgrade_to_head
from services.account.admin_service import AccountAdminService
from services.account.batches import FinishRequest
from services.account.bootstrap import VERSIONS_DIR
from services.account.domain.ledger import AccountType, OpenAccountCommand, TransferRequest, TransferType
from services.account.ledger_service import LedgerService
from services.account.unit_of_work import AccountUnitOfWork
from tests.integration.account.harness import SettableClock
from tests.support.servers import create_database, drop_database

# Accounts of the machine: (name, currency, type, overdraft).
ACCOUNTS = [
    ("alice", "EUR", AccountType.CURRENT, 0),
    ("bob", "EUR", AccountType.CURRENT, 50),
    ("carol", "EUR", AccountType.SAVINGS, 0),
    ("wallet", "EUR", AccountType.SETTLEMENT, 100),
    ("george", "GBP", AccountType.CURRENT, 0),
]
NAMES = [name for name, *_ in ACCOUNTS]
EXPECTED_REFUSALS = {"INSUFFICIENT_FUNDS", "SAME_ACCOUNT", "CURRENCY_MISMATCH"}
FINISH_REFUSALS = {"TRANSFER_ALREADY_POSTED", "TRANSFER_ALREADY_VOIDED", "TRANSFER_EXPIRED"}


def make_machine(store: str, postgres: Any) -> type[RuleBasedStateMachine]:
    """The state machine class for one store."""

    class LedgerMachine(RuleBasedStateMachine):
        holds = Bundle("holds")

        def __init__(self) -> None:
            super().__init__()
            self.loop = asyncio.new_event_loop()
            self.clock = SettableClock(dt.datetime(2026, 3, 1, 9, tzinfo=dt.UTC))
            self.ids: dict[str, str] = {}
            self.expected_posted: dict[str, int] = defaultdict(int)  # per account: credits - debits, posted
            self.state: dict[str, str] = {}  # hold id -> expected state
            self.run(self._set_up())

        def run(self, coroutine: Any) -> Any:
            return self.loop.run_until_complete(coroutine)

        async def _set_up(self) -> None:
            if store == "sqlite":
                self.tmp = tempfile.mkdtemp(prefix="ledger-machine-")
                url = f"sqlite+aiosqlite:///{self.tmp}/account.db"
            else:
                self.pg_name = f"m_{uuid.uuid4().hex[:16]}"
                url = await create_database(postgres, self.pg_name)
            self.database = Database(url, pool_size=4)
            await upgrade_to_head(self.database, VERSIONS_DIR, "account")
            uow = partial(AccountUnitOfWork, self.database)
            self.ledger = LedgerService(uow, clock=self.clock)
            self.admin = AccountAdminService(uow, self.ledger, clock=self.clock)
            for name, currency, account_type, overdraft in ACCOUNTS:
                account = await self.admin.open_account(
                    OpenAccountCommand(
                        request_id=f"open-{name}",
                        customer_id=None if account_type is AccountType.SETTLEMENT else f"cust-{name}",
                        currency=currency,
                        type=account_type,
                        overdraft_limit=Amount(currency, overdraft) if overdraft else None,
                        display_name=name,
                    )
                )
                self.ids[name] = account.id
                await self.ledger.fund_account(f"fund-{name}", account.id, Amount(currency, 300), "")
                self.expected_posted[name] += 300

        def teardown(self) -> None:
            async def tear_down() -> None:
                await self.database.dispose()
                if store == "sqlite":
                    shutil.rmtree(self.tmp, ignore_errors=True)
                else:
                    await drop_database(postgres, self.pg_name)

            try:
                self.run(tear_down())
            finally:
                self.loop.close()

        def _request(self, debit: str, credit: str, amount: int, timeout: int | None) -> TransferRequest:
            currency = dict((n, c) for n, c, *_ in ACCOUNTS)[debit]
            return TransferRequest(
                transfer_id=f"t-{uuid.uuid4().hex[:16]}",
                debit_account_id=self.ids[debit],
                credit_account_id=self.ids[credit],
                amount=Amount(currency, amount),
                type=TransferType.PENDING if timeout else TransferType.SINGLE_PHASE,
                timeout=dt.timedelta(seconds=timeout) if timeout else None,
            )

        @initialize()
        def ready(self) -> None:
            """Accounts are open and funded."""

        @rule(
            target=holds,
            debit=st.sampled_from(NAMES),
            credit=st.sampled_from(NAMES),
            amount=st.integers(1, 250),
            timeout=st.integers(1, 60),
        )
        def place_hold(self, debit: str, credit: str, amount: int, timeout: int) -> Any:
            request = self._request(debit, credit, amount, timeout)
            try:
                transfer = self.run(self.ledger.create_transfer(request))
            except MeshError as error:
                assert error.reason in EXPECTED_REFUSALS, error
                return multiple()
            # A replay of the same request is the same transfer, not a second hold.
            assert self.run(self.ledger.create_transfer(request)) == transfer
            self.state[transfer.id] = "PENDING"
            return (transfer.id, debit, credit, amount)

        @rule(debit=st.sampled_from(NAMES), credit=st.sampled_from(NAMES), amount=st.integers(1, 250))
        def single_phase(self, debit: str, credit: str, amount: int) -> None:
            try:
                self.run(self.ledger.create_transfer(self._request(debit, credit, amount, None)))
            except MeshError as error:
                assert error.reason in EXPECTED_REFUSALS, error
                return
            self.expected_posted[debit] -= amount
            self.expected_posted[credit] += amount

        @rule(
            target=holds,
            items=st.lists(
                st.tuples(
                    st.sampled_from(NAMES),
                    st.sampled_from(NAMES),
                    st.integers(1, 250),
                    st.none() | st.integers(1, 60),
                ),
                min_size=1,
                max_size=8,
            ),
        )
        def batch(self, items: list[tuple[str, str, int, int | None]]) -> Any:
            """BatchCreateTransfers: items apply in order, each over what the earlier ones left."""
            requests = [self._request(*item) for item in items]
            request_id = f"b-{uuid.uuid4().hex[:16]}"
            results = self.run(self.ledger.batch_create(request_id, list(requests)))
            assert self.run(self.ledger.batch_create(request_id, list(requests))) == results
            new_holds = []
            for (debit, credit, amount, timeout), result in zip(items, results, strict=True):
                if result.error_reason is not None:
                    assert result.error_reason in EXPECTED_REFUSALS, result
                    continue
                assert result.transfer is not None
                if timeout:
                    self.state[result.transfer.id] = "PENDING"
                    new_holds.append((result.transfer.id, debit, credit, amount))
                else:
                    self.expected_posted[debit] -= amount
                    self.expected_posted[credit] += amount
            return multiple(*new_holds)

        def _finish(self, hold: tuple[str, str, str, int], post: bool) -> None:
            transfer_id, debit, credit, amount = hold
            method = self.ledger.post_transfer if post else self.ledger.void_transfer
            try:
                transfer = self.run(method(f"r-{uuid.uuid4().hex[:12]}", transfer_id))
            except MeshError as error:
                assert error.reason in FINISH_REFUSALS, error
                if error.reason == "TRANSFER_EXPIRED":
                    self.state[transfer_id] = "EXPIRED"
                return
            assert self.state[transfer_id] == "PENDING"
            self.state[transfer_id] = transfer.state.value
            if post:
                self.expected_posted[debit] -= amount
                self.expected_posted[credit] += amount

        @rule(hold=holds)
        def post(self, hold: tuple[str, str, str, int]) -> None:
            self._finish(hold, post=True)

        @precondition(lambda self: bool(self.bundle("holds")))
        @rule(chosen=st.lists(holds, min_size=1, max_size=6, unique_by=lambda hold: hold[0]))
        def batch_post(self, chosen: list[tuple[str, str, str, int]]) -> None:
            """BatchPostTransfers: each item is a PostTransfer, and its key is PostTransfer's."""
            items = [FinishRequest(f"r-{uuid.uuid4().hex[:12]}", hold[0]) for hold in chosen]
            request_id = f"bp-{uuid.uuid4().hex[:16]}"
            results = self.run(self.ledger.batch_post(request_id, list(items)))
            assert self.run(self.ledger.batch_post(request_id, list(items))) == results
            for item, (transfer_id, debit, credit, amount), result in zip(items, chosen, results, strict=True):
                if result.transfer is None:
                    assert result.error_reason in FINISH_REFUSALS, result
                    if result.error_reason == "TRANSFER_EXPIRED":
                        self.state[transfer_id] = "EXPIRED"
                    continue
                assert self.state[transfer_id] == "PENDING"
                self.state[transfer_id] = "POSTED"
                self.expected_posted[debit] -= amount
                self.expected_posted[credit] += amount
                # The saga's recovery may replay the item through PostTransfer: the same answer, once.
                assert self.run(self.ledger.post_transfer(item.request_id, transfer_id)) == result.transfer

        @rule(hold=holds)
        def void(self, hold: tuple[str, str, str, int]) -> None:
            self._finish(hold, post=False)

        @rule(seconds=st.integers(1, 45))
        def time_passes(self, seconds: int) -> None:
            self.clock.now += dt.timedelta(seconds=seconds)

        @rule()
        def expiry_sweep(self) -> None:
            self.run(self.ledger.expire_due())

        @invariant()
        def ledger_invariants(self) -> None:
            async def read() -> tuple[Any, Any, Any]:
                async with AccountUnitOfWork(self.database, read_only=True) as uow:
                    return await uow.accounts.totals(), await uow.accounts.all(), await uow.transfers.open_holds()

            totals, accounts, open_holds = self.run(read())
            for total in totals:
                assert total.net == 0 and total.debits_pending == total.credits_pending, total
            held_debits: dict[str, int] = defaultdict(int)
            held_credits: dict[str, int] = defaultdict(int)
            for hold in open_holds:
                held_debits[hold.debit_account_id] += hold.amount
                held_credits[hold.credit_account_id] += hold.amount
            names = {account_id: name for name, account_id in self.ids.items()}
            for account in accounts:
                assert account.debits_pending == held_debits[account.id]
                assert account.credits_pending == held_credits[account.id]
                if account.type is not AccountType.BANK_EQUITY:
                    assert account.spendable >= 0, account
                    assert account.current == self.expected_posted[names[account.id]]
            # Every hold the model thinks finished is no longer open, and vice versa.
            open_ids = {hold.id for hold in open_holds}
            for transfer_id, state in self.state.items():
                if state != "PENDING":
                    assert transfer_id not in open_ids

    return LedgerMachine


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_ledger_invariants_hold_under_random_operations(store: str, request: pytest.FixtureRequest) -> None:
    postgres = request.getfixturevalue("postgres_srv") if store == "postgresql" else None
    run_state_machine_as_test(
        make_machine(store, postgres),
        settings=settings(
            max_examples=15,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
