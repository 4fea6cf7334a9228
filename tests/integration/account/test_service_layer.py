"""The ledger's service layer on the real stores with a controlled clock: lazy expiry and purges."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial

import pytest

from meshlib.errors import FailedPrecondition
from meshlib.money import Amount
from meshlib.storage import Database
from meshlib.storage.migrations import upgrade_to_head
from services.account.admin_service import AccountAdminService
from services.account.bootstrap import VERSIONS_DIR
from services.account.domain.ledger import (
    AccountType,
    OpenAccountCommand,
    TransferRequest,
    TransferState,
    TransferType,
)
from services.account.ledger_service import LedgerService
from services.account.unit_of_work import AccountUnitOfWork
from tests.integration.account.harness import SettableClock


@dataclass
class Ledger:
    service: LedgerService
    clock: SettableClock
    database: Database
    alice: str
    bob: str


@pytest.fixture
async def ledger(database_url: str) -> AsyncIterator[Ledger]:
    database = Database(database_url)
    await upgrade_to_head(database, VERSIONS_DIR, "account")
    clock = SettableClock(dt.datetime(2026, 5, 1, 8, tzinfo=dt.UTC))
    uow = partial(AccountUnitOfWork, database)
    service = LedgerService(uow, clock=clock)
    admin = AccountAdminService(uow, service, clock=clock)
    ids = []
    for name in ("alice", "bob"):
        account = await admin.open_account(
            OpenAccountCommand(
                request_id=f"open-{name}",
                customer_id=name,
                currency="EUR",
                type=AccountType.CURRENT,
                overdraft_limit=None,
                display_name=name,
            )
        )
        ids.append(account.id)
    await service.fund_account("fund-alice", ids[0], Amount("EUR", 1_000), "")
    try:
        yield Ledger(service, clock, database, *ids)
    finally:
        await database.dispose()


def hold(ledger: Ledger, transfer_id: str, amount: int = 300) -> TransferRequest:
    return TransferRequest(
        transfer_id, ledger.alice, ledger.bob, Amount("EUR", amount), TransferType.PENDING, dt.timedelta(seconds=10)
    )


async def test_touching_an_elapsed_hold_releases_it(ledger: Ledger) -> None:
    first = await ledger.service.create_transfer(hold(ledger, "h1"))
    await ledger.service.create_transfer(hold(ledger, "h2"))
    await ledger.service.create_transfer(hold(ledger, "h3"))
    assert first.state is TransferState.PENDING
    ledger.clock.now += dt.timedelta(seconds=11)
    # A replay, a read and a post each release the hold they touch, without any sweep.
    assert (await ledger.service.create_transfer(hold(ledger, "h1"))).state is TransferState.EXPIRED
    assert (await ledger.service.get_transfer("h2")).state is TransferState.EXPIRED
    with pytest.raises(FailedPrecondition) as caught:
        await ledger.service.post_transfer("post-h3", "h3")
    assert caught.value.reason == "TRANSFER_EXPIRED"
    assert (await ledger.service.get_transfer("h3")).state is TransferState.EXPIRED
    async with AccountUnitOfWork(ledger.database, read_only=True) as uow:
        alice = await uow.accounts.get(ledger.alice)
    assert alice is not None and (alice.debits_pending, alice.available) == (0, 1_000)
    assert await ledger.service.expire_due() == 0


async def test_sweep_releases_due_holds_only(ledger: Ledger) -> None:
    await ledger.service.create_transfer(hold(ledger, "s1", 100))
    ledger.clock.now += dt.timedelta(seconds=5)
    await ledger.service.create_transfer(hold(ledger, "s2", 100))
    ledger.clock.now += dt.timedelta(seconds=6)
    assert await ledger.service.expire_due() == 1
    assert (await ledger.service.get_transfer("s2")).state is TransferState.PENDING


async def test_purge_forgets_old_answers_but_never_transfers(ledger: Ledger) -> None:
    await ledger.service.create_transfer(hold(ledger, "p1", 100))
    await ledger.service.void_transfer("void-p1", "p1")
    async with AccountUnitOfWork(ledger.database) as uow:
        await uow.consent_reads.increment("c1", ledger.clock.now.date())
        await uow.commit()
    assert await ledger.service.purge_old_records() == 0
    ledger.clock.now += dt.timedelta(days=3)
    assert await ledger.service.purge_old_records() >= 2
    assert (await ledger.service.get_transfer("p1")).state is TransferState.VOIDED


async def test_two_replicas_sweeping_at_once_release_each_hold_once(ledger: Ledger) -> None:
    """Two account replicas run the expiry sweep on one database at the same moment: every
    elapsed hold is released by exactly one of them and the money comes back once."""
    for index in range(20):
        await ledger.service.create_transfer(hold(ledger, f"r{index}", 10))
    ledger.clock.now += dt.timedelta(seconds=11)
    uow = partial(AccountUnitOfWork, ledger.database)
    replicas = [LedgerService(uow, clock=ledger.clock) for _ in range(2)]
    released = await asyncio.gather(*(replica.expire_due() for replica in replicas))
    assert sum(released) == 20, released
    states = {(await ledger.service.get_transfer(f"r{index}")).state for index in range(20)}
    assert states == {TransferState.EXPIRED}
    async with AccountUnitOfWork(ledger.database, read_only=True) as reader:
        alice = await reader.accounts.get(ledger.alice)
    assert alice is not None and (alice.debits_pending, alice.available) == (0, 1_000)
