"""The credit line's daily accrual survives a crash of the account service (issue 28 item 2): a
real ``python -m services.account`` process with a fast accrual clock (a day a second) dies
(``os._exit(137)``) inside its first day's transaction, after the interest posting and the line's
new state are written and before they commit; started again, it books every day from that one
on (once the dead process's lease on the line ran out), each exactly once and exactly by the
rule, and the ledger sums to zero."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import sys
import time
from collections.abc import AsyncIterator
from fractions import Fraction
from functools import partial
from pathlib import Path

import pytest
import sqlalchemy as sa

from meshlib.money import Amount
from meshlib.storage import Database
from meshlib.storage.migrations import upgrade_to_head
from services.account.admin_service import AccountAdminService
from services.account.bootstrap import VERSIONS_DIR
from services.account.credit_service import CreditService, income_account_id
from services.account.credit_tables import credit_lines
from services.account.domain.credit_interest import accrue_day
from services.account.domain.credit_offers import Band, CreditRules
from services.account.domain.ledger import AccountType, OpenAccountCommand, TransferRequest, TransferType
from services.account.ledger_service import LedgerService
from services.account.read_service import ConsentCaller
from services.account.tables import transfers
from services.account.unit_of_work import AccountUnitOfWork
from tests.integration.account.harness import FakeConsents
from tests.support.servers import free_port

pytestmark = [pytest.mark.e2e]

APR = 3_650
RULES = CreditRules(
    history_days=30,
    validity=dt.timedelta(days=1),
    min_income_months=1,
    max_disputes=0,
    max_negative_days=0,
    bands=(Band(min_monthly_income=10_000, limit_share_bps=5_000, max_limit=50_000, apr_bps=APR),),
)


async def _prepared(url: str) -> tuple[str, str]:
    """A customer's account drawn 200.00 below zero on an accepted line; (account, line)."""
    database = Database(url)
    await upgrade_to_head(database, VERSIONS_DIR, "account")
    uow = partial(AccountUnitOfWork, database)
    ledger = LedgerService(uow)
    admin = AccountAdminService(uow, ledger)
    ids = []
    for name, customer in (("alice", "cust-1"), ("shop", "cust-2")):
        opened = await admin.open_account(
            OpenAccountCommand(f"open-{name}", customer, "EUR", AccountType.CURRENT, None, name)
        )
        ids.append(opened.id)
    consents = FakeConsents()
    consents.grant("consent-1", [ids[0]], permissions=frozenset({"CREDIT"}))
    credit = CreditService(uow, consents, RULES)
    await ledger.fund_account("salary", ids[0], Amount("EUR", 60_000), "salary")
    offer = await credit.request_offer(ConsentCaller("partner-1", "consent-1"), "offer-1", ids[0])
    _, line = await credit.accept("cust-1", "accept-1", offer.offer_id)
    await ledger.create_transfer(
        TransferRequest("draw", ids[0], ids[1], Amount("EUR", 80_000), TransferType.SINGLE_PHASE)
    )
    await database.dispose()
    return ids[0], line.line.line_id


def _account_process(url: str, **env: str) -> asyncio.subprocess.Process:
    child_env = dict(
        os.environ,
        OBM_DATABASE_URL=url,
        OBM_PORT=str(free_port()),
        OBM_SERVICE_NAME="account",
        OBM_CREDIT_ACCRUAL_DAYS_PER_SECOND="1",
        OBM_CREDIT_ACCRUAL_INTERVAL_SECONDS="0.2",
        # The crashed process's lease on the line runs out after this; then the restart takes it.
        OBM_CREDIT_ACCRUAL_LEASE_SECONDS="2",
        OBM_EVENT_RELAY="false",
        **env,
    )
    for name in ("OBM_REDIS_URL", "OBM_SERVICE_CLIENT_ID", "OBM_SERVICE_CLIENT_SECRET"):
        child_env.pop(name, None)
    return asyncio.create_subprocess_exec(  # type: ignore[return-value]
        sys.executable,
        "-m",
        "services.account",
        env=child_env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def _state(url: str, line_id: str) -> tuple[dt.date, list[tuple[str, int]]]:
    database = Database(url)
    try:
        async with database.engine.connect() as connection:
            accrued = (
                await connection.execute(sa.select(credit_lines.c.accrued_through).where(credit_lines.c.id == line_id))
            ).scalar_one()
            rows = await connection.execute(
                sa.select(transfers.c.id, transfers.c.amount)
                .where(transfers.c.id.like(f"credit-interest-{line_id}-%"))
                .order_by(transfers.c.id)
            )
            return accrued, [(row.id, row.amount) for row in rows]
    finally:
        await database.dispose()


@pytest.fixture
async def drawn(tmp_path: Path) -> AsyncIterator[tuple[str, str, str]]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'account.db'}"
    account, line = await _prepared(url)
    yield url, account, line


async def test_a_crash_inside_a_days_accrual_books_nothing_and_the_restart_books_each_day_once(
    drawn: tuple[str, str, str],
) -> None:
    url, account, line_id = drawn
    opened_through, _ = await _state(url, line_id)
    crashing = await _account_process(url, OBM_CREDIT_FAILPOINT="before_accrual_commit")
    assert await asyncio.wait_for(crashing.wait(), 60) == 137  # died at the failpoint
    accrued, booked = await _state(url, line_id)
    assert (accrued, booked) == (opened_through, [])  # the day rolled back whole

    started = time.monotonic()
    running = await _account_process(url)
    try:
        while (await _state(url, line_id))[0] < opened_through + dt.timedelta(days=4):
            assert running.returncode is None and time.monotonic() - started < 60, "no accrual"
            await asyncio.sleep(0.3)
    finally:
        running.terminate()
        await asyncio.wait_for(running.wait(), 20)

    accrued, booked = await _state(url, line_id)
    days = (accrued - opened_through).days
    assert [transfer_id[-8:] for transfer_id, _ in booked] == [
        f"{opened_through + dt.timedelta(days=n):%Y%m%d}" for n in range(1, days + 1)
    ]
    # Each day's amount is the rule's on the balance that day (each day's interest compounds).
    balance, carry = -20_000, Fraction(0)
    for _, amount in booked:
        accrual = accrue_day(balance, APR, carry)
        assert amount == accrual.charged
        balance, carry = balance - amount, accrual.carry
    database = Database(url)
    try:
        ledger = LedgerService(partial(AccountUnitOfWork, database))
        assert (await ledger.get_account(account)).current == balance
        assert (await ledger.get_account(income_account_id("EUR"))).current == sum(a for _, a in booked)
        totals, _ = await AccountAdminService(partial(AccountUnitOfWork, database), ledger).ledger_totals()
        assert all(t.debits_posted == t.credits_posted for t in totals)
    finally:
        await database.dispose()
