"""The consent-bound read rules with a fake unit of work and consent lookup (no DB, no gRPC)."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pytest

from meshlib.auth.consent import ConsentView
from meshlib.errors import InvalidArgument, NotFound, PermissionDenied, ResourceExhausted
from meshlib.money import Amount
from services.account.domain.ledger import Account, AccountStatus, AccountType
from services.account.read_service import AccountReadService, ConsentCaller, ReadQuota
from tests.support.consents import consent_view
from tests.unit.account.samples import sample_account

NOW = dt.datetime(2026, 2, 1, 23, 0, tzinfo=dt.UTC)


def account(account_id: str, customer: str = "cust-1", balance: int = 0, **changes: Any) -> Account:
    return sample_account(
        account_id, at=NOW, balance=balance, **{"number": "99990000001234", "customer_id": customer, **changes}
    )


class FakeStore:
    def __init__(self, accounts: list[Account]) -> None:
        self.accounts = {a.id: a for a in accounts}
        self.reads: dict[tuple[str, dt.date], int] = defaultdict(int)


class FakeUnitOfWork:
    """Just what the read service uses; changes are kept only on commit."""

    def __init__(self, store: FakeStore, read_only: bool = False) -> None:
        self._store = store
        self._pending: dict[tuple[str, dt.date], int] = {}
        outer = self

        class Accounts:
            async def get(self, account_id: str) -> Account | None:
                return store.accounts.get(account_id)

            async def many(self, ids: list[str]) -> dict[str, Account]:
                return {i: store.accounts[i] for i in ids if i in store.accounts}

        class Reads:
            async def increment(self, consent_id: str, day: dt.date, by: int = 1) -> int:
                key = (consent_id, day)
                outer._pending[key] = outer._pending.get(key, store.reads[key]) + by
                return outer._pending[key]

        self.accounts = Accounts()
        self.consent_reads = Reads()

    async def __aenter__(self) -> FakeUnitOfWork:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def commit(self) -> None:
        self._store.reads.update(self._pending)


class Consents:
    def __init__(self, view: ConsentView) -> None:
        self.view = view

    async def get(self, consent_id: str, *, partner_id: str) -> ConsentView:
        if consent_id != self.view.consent_id or partner_id != self.view.partner_id:
            raise NotFound("consent not found")
        return self.view


def service(
    accounts: list[Account], clock: Callable[[], dt.datetime] = lambda: NOW, **consent: Any
) -> tuple[AccountReadService, FakeStore]:
    view = consent_view(
        **{
            "customer_id": "cust-1",
            "permissions": frozenset({"READ_ACCOUNTS", "READ_BALANCES", "CONFIRM_FUNDS"}),
            "account_ids": frozenset(a.id for a in accounts),
            "expires_at": NOW + dt.timedelta(days=1),
            **consent,
        }
    )
    store = FakeStore(accounts)
    reads = AccountReadService(lambda read_only=False: FakeUnitOfWork(store, read_only), Consents(view), clock=clock)
    return reads, store


CALLER = ConsentCaller(partner_id="p1", consent_id="c1")


async def test_another_customers_or_a_bank_account_is_not_found() -> None:
    reads, _ = service(
        [account("a1"), account("a2", customer="cust-2"), account("s1", customer=None, type=AccountType.SETTLEMENT)]
    )
    assert (await reads.get_account(CALLER, "a1")).id == "a1"
    for account_id in ("a2", "s1", "not-in-consent"):
        with pytest.raises(NotFound):
            await reads.get_account(CALLER, account_id)
    page = await reads.list_accounts(CALLER, 50, "")
    assert [a.id for a in page.accounts] == ["a1"]


async def test_consent_must_be_usable_and_grant_the_permission() -> None:
    reads, _ = service([account("a1")], permissions=frozenset({"READ_ACCOUNTS"}))
    with pytest.raises(PermissionDenied) as caught:
        await reads.get_balance(CALLER, "a1")
    assert caught.value.reason == "CONSENT_PERMISSION_MISSING"
    expired, _ = service([account("a1")], expires_at=NOW)
    with pytest.raises(PermissionDenied) as caught:
        await expired.get_account(CALLER, "a1")
    assert caught.value.reason == "CONSENT_EXPIRED"
    paused, _ = service([account("a1")], paused=True)
    with pytest.raises(PermissionDenied) as caught:
        await paused.get_account(CALLER, "a1")
    assert caught.value.reason == "CONSENT_PAUSED"


async def test_reads_per_day_refuse_above_the_quota_until_midnight() -> None:
    reads, store = service([account("a1")], reads_per_day=2)
    await reads.get_account(CALLER, "a1")
    await reads.get_account(CALLER, "a1")
    with pytest.raises(ResourceExhausted) as caught:
        await reads.get_account(CALLER, "a1")
    assert caught.value.reason == "CONSENT_READS_EXHAUSTED"
    assert caught.value.retry_after_seconds == 3600  # 23:00 UTC -> midnight
    assert store.reads[("c1", NOW.date())] == 2  # the refused read did not count


async def test_unlimited_consents_never_write_a_read_counter() -> None:
    reads, store = service([account("a1")], reads_per_day=0)
    for _ in range(50):
        await reads.get_balance(CALLER, "a1")
    assert store.reads == {}


async def test_reads_are_claimed_in_blocks_and_spent_from_memory() -> None:
    reads, store = service([account("a1")], reads_per_day=100)
    await reads.get_balance(CALLER, "a1")
    assert store.reads[("c1", NOW.date())] == ReadQuota.block_size(100) == 5
    for _ in range(4):
        await reads.get_balance(CALLER, "a1")
    assert store.reads[("c1", NOW.date())] == 5  # the block covered them
    await reads.get_balance(CALLER, "a1")
    assert store.reads[("c1", NOW.date())] == 10


async def test_replicas_sharing_the_counter_never_admit_more_than_the_quota() -> None:
    first, store = service([account("a1")], reads_per_day=47)
    second = AccountReadService(
        lambda read_only=False: FakeUnitOfWork(store, read_only),
        first._consents,  # the same consent, as another replica would see it
        clock=lambda: NOW,
    )
    admitted = 0
    for turn in range(200):
        try:
            await (first if turn % 3 else second).get_balance(CALLER, "a1")
            admitted += 1
        except ResourceExhausted:
            pass
    assert admitted == 47
    assert store.reads[("c1", NOW.date())] == 47


async def test_a_new_utc_day_starts_a_new_quota() -> None:
    now = [NOW]
    reads, store = service([account("a1")], clock=lambda: now[0], reads_per_day=1)
    await reads.get_balance(CALLER, "a1")
    with pytest.raises(ResourceExhausted):
        await reads.get_balance(CALLER, "a1")
    now[0] = NOW + dt.timedelta(hours=2)  # past midnight
    await reads.get_balance(CALLER, "a1")
    assert store.reads[("c1", now[0].date())] == 1


async def test_confirm_funds_is_a_yes_or_no_on_the_available_balance() -> None:
    reads, _ = service(
        [account("a1", balance=100, overdraft_limit=20), account("f1", balance=100, status=AccountStatus.FROZEN)]
    )
    assert await reads.confirm_funds(CALLER, "a1", Amount("EUR", 120)) is True
    assert await reads.confirm_funds(CALLER, "a1", Amount("EUR", 121)) is False
    assert await reads.confirm_funds(CALLER, "f1", Amount("EUR", 1)) is False
    with pytest.raises(InvalidArgument) as caught:
        await reads.confirm_funds(CALLER, "a1", Amount("USD", 1))
    assert caught.value.reason == "CURRENCY_MISMATCH"


async def test_list_accounts_pages_and_rejects_foreign_tokens() -> None:
    reads, _ = service([account(f"a{i}") for i in range(5)])
    first = await reads.list_accounts(CALLER, 2, "")
    second = await reads.list_accounts(CALLER, 2, first.next_page_token)
    third = await reads.list_accounts(CALLER, 2, second.next_page_token)
    assert [a.id for p in (first, second, third) for a in p.accounts] == [f"a{i}" for i in range(5)]
    assert third.next_page_token == ""
    other, _ = service([account("a0")], consent_id="c2")
    with pytest.raises(InvalidArgument) as caught:
        await other.list_accounts(ConsentCaller("p1", "c2"), 2, first.next_page_token)
    assert caught.value.reason == "PAGE_TOKEN_INVALID"
