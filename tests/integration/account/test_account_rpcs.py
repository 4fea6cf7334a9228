"""AccountService (public, consent-bound) over real gRPC with an in-memory consent lookup."""

from __future__ import annotations

import datetime as dt

import grpc
import pytest
from google.protobuf import timestamp_pb2

from openbank.account.v1 import account_pb2
from tests.integration.account.harness import AccountHarness, money, reason_of


async def _fails(call, code: grpc.StatusCode, reason: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, caught.value.details()
    assert reason_of(caught.value) == reason


async def test_reads_see_only_the_consents_accounts(harness: AccountHarness) -> None:
    mine, savings = await harness.open(), await harness.open(account_type=account_pb2.ACCOUNT_TYPE_SAVINGS)
    outside = await harness.open()  # same customer, not in the consent
    theirs = await harness.open(customer="cust-2")  # another customer's, wrongly listed in the consent
    await harness.fund(mine.name, 5_000)
    harness.consents.grant("c1", [mine.name, savings.name, theirs.name])
    partner = harness.partner("c1")

    listed = await harness.accounts.ListAccounts(account_pb2.ListAccountsRequest(), metadata=partner)
    assert sorted(a.name for a in listed.accounts) == sorted([mine.name, savings.name])
    assert all(a.display_number.startswith("••••") for a in listed.accounts)
    got = await harness.accounts.GetAccount(account_pb2.GetAccountRequest(name=mine.name), metadata=partner)
    assert got.account == mine
    balance = await harness.accounts.GetBalance(account_pb2.GetBalanceRequest(account=mine.name), metadata=partner)
    assert (balance.balance.current.minor_units, balance.balance.available.minor_units) == (5_000, 5_000)
    for name in (outside.name, theirs.name, "accounts/does-not-exist"):
        await _fails(
            harness.accounts.GetAccount(account_pb2.GetAccountRequest(name=name), metadata=partner),
            grpc.StatusCode.NOT_FOUND,
            "RESOURCE_NOT_FOUND",
        )
        await _fails(
            harness.accounts.GetBalance(account_pb2.GetBalanceRequest(account=name), metadata=partner),
            grpc.StatusCode.NOT_FOUND,
            "RESOURCE_NOT_FOUND",
        )
    # Another partner presenting this consent id sees nothing of it.
    await _fails(
        harness.accounts.GetAccount(
            account_pb2.GetAccountRequest(name=mine.name), metadata=harness.partner("c1", partner_id="partner-2")
        ),
        grpc.StatusCode.NOT_FOUND,
        "RESOURCE_NOT_FOUND",
    )


async def test_bad_names_and_page_sizes_are_invalid_argument(harness: AccountHarness) -> None:
    harness.consents.grant("c1", [])
    partner = harness.partner("c1")
    for name in ("", "accounts/", "account/x", "accounts/a/b"):
        await _fails(
            harness.accounts.GetAccount(account_pb2.GetAccountRequest(name=name), metadata=partner),
            grpc.StatusCode.INVALID_ARGUMENT,
            "FIELD_INVALID",
        )
    await _fails(
        harness.accounts.ListAccounts(account_pb2.ListAccountsRequest(page_size=-1), metadata=partner),
        grpc.StatusCode.INVALID_ARGUMENT,
        "FIELD_INVALID",
    )
    await _fails(
        harness.accounts.ListAccounts(account_pb2.ListAccountsRequest(page_token="garbage"), metadata=partner),
        grpc.StatusCode.INVALID_ARGUMENT,
        "PAGE_TOKEN_INVALID",
    )
    await _fails(
        harness.accounts.ListTransactions(
            account_pb2.ListTransactionsRequest(parent="x", page_size=1), metadata=partner
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "FIELD_INVALID",
    )


async def test_consent_state_and_permission_are_enforced(harness: AccountHarness) -> None:
    mine = await harness.open()
    harness.consents.grant("c-bal", [mine.name], permissions=frozenset({"READ_ACCOUNTS"}))
    harness.consents.grant("c-waiting", [mine.name], state="AWAITING_AUTHORISATION")
    await _fails(
        harness.accounts.GetBalance(
            account_pb2.GetBalanceRequest(account=mine.name), metadata=harness.partner("c-bal")
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "CONSENT_PERMISSION_MISSING",
    )
    await _fails(
        harness.accounts.GetAccount(
            account_pb2.GetAccountRequest(name=mine.name), metadata=harness.partner("c-waiting")
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "CONSENT_NOT_AUTHORISED",
    )
    no_consent = harness.metadata(scopes=("accounts:read",), partner_id="partner-1")
    await _fails(
        harness.accounts.GetAccount(account_pb2.GetAccountRequest(name=mine.name), metadata=no_consent),
        grpc.StatusCode.PERMISSION_DENIED,
        "CONSENT_REQUIRED",
    )


async def test_confirm_funds_answers_yes_or_no_only(harness: AccountHarness) -> None:
    mine = await harness.open(overdraft=100)
    await harness.fund(mine.name, 1_000)
    harness.consents.grant("c1", [mine.name])
    partner = harness.partner("c1")

    async def confirm(amount: int, currency: str = "EUR") -> bool:
        answer = await harness.accounts.ConfirmFunds(
            account_pb2.ConfirmFundsRequest(account=mine.name, amount=money(amount, currency)), metadata=partner
        )
        return answer.funds_available

    assert await confirm(1_100) is True  # overdraft included
    assert await confirm(1_101) is False
    await _fails(confirm(0), grpc.StatusCode.INVALID_ARGUMENT, "FIELD_INVALID")
    await _fails(confirm(5, "USD"), grpc.StatusCode.INVALID_ARGUMENT, "CURRENCY_MISMATCH")


async def test_reads_per_day_are_counted_per_consent(harness: AccountHarness) -> None:
    mine = await harness.open()
    harness.consents.grant("c-limited", [mine.name], reads_per_day=3)
    partner = harness.partner("c-limited")
    request = account_pb2.GetAccountRequest(name=mine.name)
    for _ in range(3):
        await harness.accounts.GetAccount(request, metadata=partner)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.accounts.GetAccount(request, metadata=partner)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert reason_of(caught.value) == "CONSENT_READS_EXHAUSTED"
    # Another consent has its own quota; 0 means unlimited.
    harness.consents.grant("c-free", [mine.name])
    for _ in range(5):
        await harness.accounts.GetAccount(request, metadata=harness.partner("c-free"))


async def test_transactions_newest_first_with_pages_stable_under_inserts(harness: AccountHarness) -> None:
    mine, other = await harness.open(), await harness.open(customer="cust-2")
    await harness.fund(mine.name, 10_000)
    for index in range(5):
        await harness.transfer(mine.name, other.name, 100 + index, reference=f"payments/{index}")
    hold = await harness.transfer(mine.name, other.name, 7, pending_seconds=60, reference="payments/hold")
    harness.consents.grant("c1", [mine.name])
    partner = harness.partner("c1")
    listing = account_pb2.ListTransactionsRequest(parent=mine.name, page_size=3)
    first = await harness.accounts.ListTransactions(listing, metadata=partner)
    assert [t.reference for t in first.transactions] == ["payments/hold", "payments/4", "payments/3"]
    assert first.transactions[0].status == account_pb2.TRANSACTION_STATUS_PENDING
    assert first.transactions[0].transfer == hold.name
    assert first.transactions[1].credit_debit_indicator == account_pb2.CREDIT_DEBIT_INDICATOR_DEBIT
    # Rows booked between pages never shift, duplicate or hide the next page.
    await harness.transfer(mine.name, other.name, 1, reference="payments/late-1")
    await harness.transfer(mine.name, other.name, 2, reference="payments/late-2")
    listing.page_token = first.next_page_token
    second = await harness.accounts.ListTransactions(listing, metadata=partner)
    assert [t.reference for t in second.transactions] == ["payments/2", "payments/1", "payments/0"]
    listing.page_token = second.next_page_token
    third = await harness.accounts.ListTransactions(listing, metadata=partner)
    assert [t.status for t in third.transactions] == [account_pb2.TRANSACTION_STATUS_BOOKED]  # the funding
    assert third.next_page_token == ""
    # Changing a filter with a token is refused; bad time windows too.
    cutoff = timestamp_pb2.Timestamp()
    cutoff.FromDatetime(dt.datetime.now(dt.UTC))
    changed = account_pb2.ListTransactionsRequest(
        parent=mine.name, page_size=3, page_token=first.next_page_token, to_booking_time=cutoff
    )
    await _fails(
        harness.accounts.ListTransactions(changed, metadata=partner),
        grpc.StatusCode.INVALID_ARGUMENT,
        "PAGE_TOKEN_INVALID",
    )
    earlier = timestamp_pb2.Timestamp(seconds=cutoff.seconds - 3600)
    inverted = account_pb2.ListTransactionsRequest(parent=mine.name, from_booking_time=cutoff, to_booking_time=earlier)
    await _fails(
        harness.accounts.ListTransactions(inverted, metadata=partner), grpc.StatusCode.INVALID_ARGUMENT, "FIELD_INVALID"
    )
    window = account_pb2.ListTransactionsRequest(parent=mine.name, from_booking_time=cutoff)
    recent = await harness.accounts.ListTransactions(window, metadata=partner)
    assert [t.reference for t in recent.transactions] == []  # everything was booked before the cutoff
    await _fails(
        harness.accounts.ListTransactions(account_pb2.ListTransactionsRequest(parent=other.name), metadata=partner),
        grpc.StatusCode.NOT_FOUND,
        "RESOURCE_NOT_FOUND",
    )


async def test_list_accounts_pages(harness: AccountHarness) -> None:
    opened = [await harness.open() for _ in range(5)]
    harness.consents.grant("c1", [a.name for a in opened])
    partner = harness.partner("c1")
    names: list[str] = []
    token = ""
    while True:
        page = await harness.accounts.ListAccounts(
            account_pb2.ListAccountsRequest(page_size=2, page_token=token), metadata=partner
        )
        names += [a.name for a in page.accounts]
        token = page.next_page_token
        if not token:
            break
    assert names == sorted(a.name for a in opened)
