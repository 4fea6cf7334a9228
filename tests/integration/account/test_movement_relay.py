"""The movements outbox on SQLite and PostgreSQL: postings made through the ledger's use case
write their rows in the posting's transaction; one replica relays them (the lease), another
takes over when the lease lapses and sends nothing twice; retention purges only relayed rows."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator, Callable
from functools import partial

import pytest

from meshlib.money import Amount
from meshlib.outbox import RelayLoop, Retention
from meshlib.storage import Database
from meshlib.storage.migrations import upgrade_to_head
from services.account.admin_service import AccountAdminService
from services.account.bootstrap import VERSIONS_DIR
from services.account.domain.ledger import AccountType, OpenAccountCommand, TransferRequest, TransferType
from services.account.event_relay import MovementRow, SqlMovementOutbox
from services.account.ledger_service import LedgerService
from services.account.tables import account_events
from services.account.unit_of_work import AccountUnitOfWork

NOW = dt.datetime.now(dt.UTC)
LEASE = dt.timedelta(seconds=10)


class Intake:
    """identity's intake: each source key once."""

    def __init__(self) -> None:
        self.rows: list[MovementRow] = []

    async def append(self, rows: list[MovementRow]) -> None:
        known = {r.seq for r in self.rows}
        self.rows.extend(r for r in rows if r.seq not in known)


def _relay(outbox: SqlMovementOutbox, intake: Intake, clock: Callable[[], dt.datetime]) -> RelayLoop[MovementRow]:
    retention = Retention(dt.timedelta(days=30), outbox.purge)
    return RelayLoop("account-events", outbox, intake, clock=clock, lease=LEASE, gap_seconds=0, retention=retention)


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    await upgrade_to_head(database, VERSIONS_DIR, "account")
    try:
        yield database
    finally:
        await database.dispose()


async def _postings(ledger: LedgerService, alice: str, bob: str, count: int) -> None:
    for _ in range(count):
        await ledger.create_transfer(
            TransferRequest(
                uuid.uuid4().hex, alice, bob, Amount("EUR", 100), TransferType.SINGLE_PHASE, reference="payments/p1"
            )
        )


async def _customer_account(admin: AccountAdminService, customer_id: str) -> str:
    command = OpenAccountCommand(uuid.uuid4().hex, customer_id, "EUR", AccountType.CURRENT, None, customer_id)
    return (await admin.open_account(command)).id


async def test_postings_are_relayed_once_in_order_by_the_lease_holder(database: Database) -> None:
    uow = partial(AccountUnitOfWork, database)
    ledger = LedgerService(uow)
    admin = AccountAdminService(uow, ledger)
    alice, bob = await _customer_account(admin, "cust-alice"), await _customer_account(admin, "cust-bob")
    await ledger.fund_account(uuid.uuid4().hex, alice, Amount("EUR", 10_000), "funding")
    outbox, intake, clock = SqlMovementOutbox(uow), Intake(), [NOW]
    first, second = _relay(outbox, intake, lambda: clock[0]), _relay(outbox, intake, lambda: clock[0])
    await _postings(ledger, alice, bob, 2)
    # The funding's credit to alice (from the bank's equity account: no customer, no row), then
    # each posting's debit of alice and credit of bob.
    assert await first.relay_once() == 5
    await _postings(ledger, alice, bob, 1)
    assert await second.relay_once() == 0  # the lease is the first's
    clock[0] += dt.timedelta(seconds=11)  # the first replica died: its lease lapses
    assert await second.relay_once() == 2
    assert [r.seq for r in intake.rows] == [1, 2, 3, 4, 5, 6, 7]
    assert (intake.rows[0].account_id, intake.rows[0].direction, intake.rows[0].amount) == (alice, "CREDIT", 10_000)
    moved = [(r.account_id, r.direction, r.amount, r.reference) for r in intake.rows if r.reference]
    assert moved[-2:] == [(alice, "DEBIT", 100, "payments/p1"), (bob, "CREDIT", 100, "payments/p1")]
    assert all(r.masked_number.startswith("••••") and len(r.masked_number) == 8 for r in intake.rows)
    assert await first.relay_once() == 0  # back, it cannot relay over the new holder


async def test_retention_purges_only_relayed_rows(database: Database) -> None:
    uow = partial(AccountUnitOfWork, database)
    outbox, intake = SqlMovementOutbox(uow), Intake()
    relay = _relay(outbox, intake, lambda: NOW)
    old = NOW - dt.timedelta(days=40)
    row = {
        "account_id": "a1",
        "customer_id": "c1",
        "direction": "DEBIT",
        "amount": 1,
        "currency": "EUR",
        "masked_number": "••••1234",
        "reference": "",
        "transfer_id": "t",
        "event_time": old,
    }
    async with uow() as unit:
        await unit.connection.execute(account_events.insert(), [row, row])
        await unit.commit()
    assert await relay.relay_once() == 2
    async with uow() as unit:
        await unit.connection.execute(account_events.insert(), [row])  # old but not relayed yet
        await unit.commit()
    assert await relay.purge_once() == 2
    assert [r.seq for r in await outbox.rows_after(0, 10)] == [3]
