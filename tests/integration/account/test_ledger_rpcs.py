"""LedgerService and AccountAdminService over real gRPC, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from openbank.account.v1 import account_admin_pb2, account_pb2, ledger_pb2
from services.account import servicer as servicer_module
from tests.integration.account.harness import (
    AccountHarness,
    money,
    new_id,
    reason_of,
    running_account_service,
)


async def _fails(call, code: grpc.StatusCode, reason: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, caught.value.details()
    assert reason_of(caught.value) == reason


async def test_single_phase_transfer_moves_money_and_keeps_the_ledger_at_zero(harness: AccountHarness) -> None:
    alice, bob = await harness.open(), await harness.open(customer="cust-2")
    assert alice.display_number.startswith("••••") and len(alice.display_number) == 8
    await harness.fund(alice.name, 10_000)
    transfer = await harness.transfer(alice.name, bob.name, 2_500, reference="payments/p1")
    assert transfer.state == ledger_pb2.TRANSFER_STATE_POSTED
    a, b = await harness.balance_of(alice.name), await harness.balance_of(bob.name)
    assert (a.current.minor_units, a.available.minor_units) == (7_500, 7_500)
    assert (b.current.minor_units, b.posted_credits.minor_units) == (2_500, 2_500)
    totals = await harness.totals()
    assert [(t.currency_code, t.net.minor_units, t.balanced) for t in totals.totals] == [("EUR", 0, True)]
    assert totals.totals[0].account_count == 3  # the two customers and the bank's equity


async def test_pending_post_and_void_with_replays_and_state_errors(harness: AccountHarness) -> None:
    alice, bob = await harness.open(), await harness.open(customer="cust-2")
    await harness.fund(alice.name, 1_000)
    hold = await harness.transfer(alice.name, bob.name, 600, pending_seconds=60)
    assert hold.state == ledger_pb2.TRANSFER_STATE_PENDING and hold.HasField("expire_time")
    balance = await harness.balance_of(alice.name)
    assert (balance.pending_debits.minor_units, balance.available.minor_units) == (600, 400)
    # The hold counts: a second one above what is left is refused.
    await _fails(
        harness.transfer(alice.name, bob.name, 500, pending_seconds=60),
        grpc.StatusCode.FAILED_PRECONDITION,
        "INSUFFICIENT_FUNDS",
    )
    post = ledger_pb2.PostTransferRequest(request_id=new_id("post"), name=hold.name)
    posted = (await harness.ledger.PostTransfer(post, metadata=harness.internal)).transfer
    assert posted.state == ledger_pb2.TRANSFER_STATE_POSTED
    # Same request_id: the first answer; another request_id: TRANSFER_ALREADY_POSTED.
    assert (await harness.ledger.PostTransfer(post, metadata=harness.internal)).transfer == posted
    await _fails(
        harness.ledger.PostTransfer(
            ledger_pb2.PostTransferRequest(request_id=new_id(), name=hold.name), metadata=harness.internal
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "TRANSFER_ALREADY_POSTED",
    )
    await _fails(
        harness.ledger.VoidTransfer(
            ledger_pb2.VoidTransferRequest(request_id=new_id(), name=hold.name), metadata=harness.internal
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "TRANSFER_ALREADY_POSTED",
    )
    # Same request_id for another transfer: REQUEST_ID_REUSED.
    other = await harness.transfer(alice.name, bob.name, 100, pending_seconds=60)
    await _fails(
        harness.ledger.PostTransfer(
            ledger_pb2.PostTransferRequest(request_id=post.request_id, name=other.name), metadata=harness.internal
        ),
        grpc.StatusCode.ALREADY_EXISTS,
        "REQUEST_ID_REUSED",
    )
    void = ledger_pb2.VoidTransferRequest(request_id=new_id("void"), name=other.name)
    voided = (await harness.ledger.VoidTransfer(void, metadata=harness.internal)).transfer
    assert voided.state == ledger_pb2.TRANSFER_STATE_VOIDED
    assert (await harness.ledger.VoidTransfer(void, metadata=harness.internal)).transfer == voided
    await _fails(
        harness.ledger.PostTransfer(
            ledger_pb2.PostTransferRequest(request_id=new_id(), name=other.name), metadata=harness.internal
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "TRANSFER_ALREADY_VOIDED",
    )
    await _fails(
        harness.ledger.VoidTransfer(
            ledger_pb2.VoidTransferRequest(request_id=new_id(), name=other.name), metadata=harness.internal
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "TRANSFER_ALREADY_VOIDED",
    )
    single = await harness.transfer(alice.name, bob.name, 10)
    await _fails(
        harness.ledger.PostTransfer(
            ledger_pb2.PostTransferRequest(request_id=new_id(), name=single.name), metadata=harness.internal
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "TRANSFER_NOT_PENDING",
    )
    a = await harness.balance_of(alice.name)
    assert (a.current.minor_units, a.pending_debits.minor_units) == (390, 0)


async def test_create_transfer_errors(harness: AccountHarness) -> None:
    alice, bob = await harness.open(), await harness.open(customer="cust-2")
    dollars = await harness.open(currency="USD")
    await harness.fund(alice.name, 1_000)
    await _fails(harness.transfer(alice.name, alice.name, 1), grpc.StatusCode.INVALID_ARGUMENT, "SAME_ACCOUNT")
    await _fails(harness.transfer(alice.name, dollars.name, 1), grpc.StatusCode.INVALID_ARGUMENT, "CURRENCY_MISMATCH")
    await _fails(
        harness.transfer(alice.name, bob.name, 1, currency="USD"), grpc.StatusCode.INVALID_ARGUMENT, "CURRENCY_MISMATCH"
    )
    await _fails(
        harness.transfer(alice.name, bob.name, 1_001), grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS"
    )
    await _fails(harness.transfer(alice.name, "accounts/nope", 1), grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND")
    await _fails(harness.transfer(alice.name, bob.name, 0), grpc.StatusCode.INVALID_ARGUMENT, "FIELD_INVALID")
    await _fails(harness.transfer(alice.name, "bob", 5), grpc.StatusCode.INVALID_ARGUMENT, "FIELD_INVALID")
    no_timeout = ledger_pb2.CreateTransferRequest(
        request_id=new_id(),
        debit_account=alice.name,
        credit_account=bob.name,
        amount=money(5),
        type=ledger_pb2.TRANSFER_TYPE_PENDING,
    )
    await _fails(
        harness.ledger.CreateTransfer(no_timeout, metadata=harness.internal),
        grpc.StatusCode.INVALID_ARGUMENT,
        "FIELD_INVALID",
    )
    bad_id = ledger_pb2.CreateTransferRequest(
        request_id="bad id!",
        debit_account=alice.name,
        credit_account=bob.name,
        amount=money(5),
        type=ledger_pb2.TRANSFER_TYPE_SINGLE_PHASE,
    )
    await _fails(
        harness.ledger.CreateTransfer(bad_id, metadata=harness.internal),
        grpc.StatusCode.INVALID_ARGUMENT,
        "FIELD_INVALID",
    )
    # Frozen: neither debited nor credited; unfrozen: fine again.
    freeze = account_admin_pb2.FreezeAccountRequest(request_id=new_id(), name=bob.name, reason="fraud check")
    frozen = (await harness.admin.FreezeAccount(freeze, metadata=harness.internal)).account
    assert frozen.status == account_pb2.ACCOUNT_STATUS_FROZEN
    await _fails(harness.transfer(alice.name, bob.name, 1), grpc.StatusCode.FAILED_PRECONDITION, "ACCOUNT_NOT_ACTIVE")
    await _fails(
        harness.admin.FreezeAccount(
            account_admin_pb2.FreezeAccountRequest(request_id=new_id(), name=bob.name), metadata=harness.internal
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "INVALID_STATE_TRANSITION",
    )
    await harness.admin.UnfreezeAccount(
        account_admin_pb2.UnfreezeAccountRequest(request_id=new_id(), name=bob.name), metadata=harness.internal
    )
    assert (await harness.transfer(alice.name, bob.name, 1)).state == ledger_pb2.TRANSFER_STATE_POSTED


async def test_transfer_id_is_the_idempotency_key(harness: AccountHarness) -> None:
    alice, bob = await harness.open(), await harness.open(customer="cust-2")
    await harness.fund(alice.name, 1_000)
    first = await harness.transfer(alice.name, bob.name, 300, request_id="payment-1.hold")
    again = await harness.transfer(alice.name, bob.name, 300, request_id="payment-1.hold")
    assert again == first
    await _fails(
        harness.transfer(alice.name, bob.name, 301, request_id="payment-1.hold"),
        grpc.StatusCode.ALREADY_EXISTS,
        "TRANSFER_EXISTS_WITH_DIFFERENT_FIELDS",
    )
    assert (await harness.balance_of(alice.name)).current.minor_units == 700
    got = await harness.ledger.GetTransfer(
        ledger_pb2.GetTransferRequest(name="transfers/payment-1.hold"), metadata=harness.internal
    )
    assert got.transfer == first


async def test_replay_after_a_lost_reply_returns_the_committed_transfer(
    harness: AccountHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, bob = await harness.open(), await harness.open(customer="cust-2")
    await harness.fund(alice.name, 1_000)
    # The transaction commits, then the process dies before it can answer.
    real = servicer_module.converters.transfer_to_proto

    def crash_once(transfer):  # type: ignore[no-untyped-def]
        monkeypatch.setattr(servicer_module.converters, "transfer_to_proto", real)
        raise RuntimeError("process died after commit")

    monkeypatch.setattr(servicer_module.converters, "transfer_to_proto", crash_once)
    request = ledger_pb2.CreateTransferRequest(
        request_id="crash-1",
        debit_account=alice.name,
        credit_account=bob.name,
        amount=money(400),
        type=ledger_pb2.TRANSFER_TYPE_SINGLE_PHASE,
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.ledger.CreateTransfer(request, metadata=harness.internal, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    await harness.server.stop(0)  # type: ignore[attr-defined]
    # A new process on the same store: the client retries with the same transfer id.
    async with running_account_service(harness.database_url) as restarted:
        replay = (await restarted.ledger.CreateTransfer(request, metadata=restarted.internal)).transfer
        assert replay.name == "transfers/crash-1" and replay.state == ledger_pb2.TRANSFER_STATE_POSTED
        again = (await restarted.ledger.CreateTransfer(request, metadata=restarted.internal)).transfer
        assert again == replay
        assert (await restarted.balance_of(alice.name)).current.minor_units == 600
        assert all(t.balanced for t in (await restarted.totals()).totals)


async def test_expired_holds_are_released_by_the_loop_and_refused_afterwards(harness: AccountHarness) -> None:
    alice, bob = await harness.open(), await harness.open(customer="cust-2")
    await harness.fund(alice.name, 1_000)
    hold = await harness.transfer(alice.name, bob.name, 700, pending_seconds=1)
    for _ in range(60):
        state = (
            await harness.ledger.GetTransfer(ledger_pb2.GetTransferRequest(name=hold.name), metadata=harness.internal)
        ).transfer.state
        if state == ledger_pb2.TRANSFER_STATE_EXPIRED:
            break
        await asyncio.sleep(0.1)
    assert state == ledger_pb2.TRANSFER_STATE_EXPIRED
    assert (await harness.balance_of(alice.name)).available.minor_units == 1_000
    await _fails(
        harness.ledger.PostTransfer(
            ledger_pb2.PostTransferRequest(request_id=new_id(), name=hold.name), metadata=harness.internal
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "TRANSFER_EXPIRED",
    )
    await _fails(
        harness.ledger.VoidTransfer(
            ledger_pb2.VoidTransferRequest(request_id=new_id(), name=hold.name), metadata=harness.internal
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "TRANSFER_EXPIRED",
    )


async def test_batch_applies_items_on_their_own_and_replays(harness: AccountHarness) -> None:
    alice, bob = await harness.open(), await harness.open(customer="cust-2")
    await harness.fund(alice.name, 1_000)

    def item(request_id: str, amount: int, credit: str = bob.name) -> ledger_pb2.CreateTransferRequest:
        return ledger_pb2.CreateTransferRequest(
            request_id=request_id,
            debit_account=alice.name,
            credit_account=credit,
            amount=money(amount),
            type=ledger_pb2.TRANSFER_TYPE_SINGLE_PHASE,
        )

    batch = ledger_pb2.BatchCreateTransfersRequest(
        request_id=new_id("batch"),
        requests=[item("b1", 600), item("b2", 600), item("b3", 400), item("b4", 1, alice.name), item("b5", -1)],
    )
    results = (await harness.ledger.BatchCreateTransfers(batch, metadata=harness.internal)).results
    from openbank.common.v1 import error_reason_pb2 as er

    assert [r.error_reason for r in results] == [
        er.ERROR_REASON_UNSPECIFIED,
        er.ERROR_REASON_INSUFFICIENT_FUNDS,
        er.ERROR_REASON_UNSPECIFIED,
        er.ERROR_REASON_SAME_ACCOUNT,
        er.ERROR_REASON_FIELD_INVALID,
    ]
    assert [r.index for r in results] == [0, 1, 2, 3, 4]
    assert results[0].transfer.name == "transfers/b1" and not results[1].HasField("transfer")
    assert (await harness.balance_of(alice.name)).current.minor_units == 0
    replay = (await harness.ledger.BatchCreateTransfers(batch, metadata=harness.internal)).results
    assert list(replay) == list(results)
    changed = ledger_pb2.BatchCreateTransfersRequest(request_id=batch.request_id, requests=[item("b9", 1)])
    await _fails(
        harness.ledger.BatchCreateTransfers(changed, metadata=harness.internal),
        grpc.StatusCode.ALREADY_EXISTS,
        "REQUEST_ID_REUSED",
    )
    duplicate = ledger_pb2.BatchCreateTransfersRequest(request_id=new_id(), requests=[item("d", 1), item("d", 1)])
    await _fails(
        harness.ledger.BatchCreateTransfers(duplicate, metadata=harness.internal),
        grpc.StatusCode.INVALID_ARGUMENT,
        "FIELD_INVALID",
    )
    empty = ledger_pb2.BatchCreateTransfersRequest(request_id=new_id())
    await _fails(
        harness.ledger.BatchCreateTransfers(empty, metadata=harness.internal),
        grpc.StatusCode.INVALID_ARGUMENT,
        "FIELD_INVALID",
    )


async def test_batch_post_applies_items_on_their_own_like_post_transfer(harness: AccountHarness) -> None:
    from openbank.common.v1 import error_reason_pb2 as er

    alice, bob = await harness.open(), await harness.open(customer="cust-2")
    await harness.fund(alice.name, 1_000)
    h1, h2, h3, h4, h5 = [
        await harness.transfer(alice.name, bob.name, n, pending_seconds=60) for n in (300, 200, 100, 50, 5)
    ]
    single = await harness.transfer(alice.name, bob.name, 10)
    await harness.ledger.VoidTransfer(
        ledger_pb2.VoidTransferRequest(request_id=new_id(), name=h3.name), metadata=harness.internal
    )
    # h4 was posted through PostTransfer first: the batch item with the same request_id replays it.
    first_post = ledger_pb2.PostTransferRequest(request_id=new_id("p4"), name=h4.name)
    posted_h4 = (await harness.ledger.PostTransfer(first_post, metadata=harness.internal)).transfer

    def post(name: str, request_id: str | None = None) -> ledger_pb2.PostTransferRequest:
        return ledger_pb2.PostTransferRequest(request_id=request_id or new_id("bp"), name=name)

    batch = ledger_pb2.BatchPostTransfersRequest(
        request_id=new_id("batch"),
        requests=[
            post(h1.name),
            post("transfers/unknown"),
            post(h3.name),  # voided
            post("holds/h2"),  # malformed name
            post(h2.name),
            post(h4.name, first_post.request_id),  # replay of PostTransfer's answer
            post(single.name),  # not a hold
            post(h5.name, first_post.request_id),  # PostTransfer's key, another transfer
            post(h5.name.replace("transfers/", "transfers/x"), "bad id!"),  # malformed request_id
        ],
    )
    results = (await harness.ledger.BatchPostTransfers(batch, metadata=harness.internal)).results
    assert [r.index for r in results] == list(range(9))
    assert [r.error_reason for r in results] == [
        er.ERROR_REASON_UNSPECIFIED,
        er.ERROR_REASON_RESOURCE_NOT_FOUND,
        er.ERROR_REASON_TRANSFER_ALREADY_VOIDED,
        er.ERROR_REASON_FIELD_INVALID,
        er.ERROR_REASON_UNSPECIFIED,
        er.ERROR_REASON_UNSPECIFIED,
        er.ERROR_REASON_TRANSFER_NOT_PENDING,
        er.ERROR_REASON_REQUEST_ID_REUSED,
        er.ERROR_REASON_FIELD_INVALID,
    ]
    assert [r.transfer.state for r in results if r.HasField("transfer")] == [ledger_pb2.TRANSFER_STATE_POSTED] * 3
    assert results[0].transfer.name == h1.name and results[4].transfer.name == h2.name
    assert results[5].transfer == posted_h4  # the first answer, not a second post
    assert not results[1].HasField("transfer") and results[1].error_message
    a, b = await harness.balance_of(alice.name), await harness.balance_of(bob.name)
    # 1,000 - 10 - h1 300 - h2 200 - h4 50, with h5 (5) still held.
    assert (a.current.minor_units, a.pending_debits.minor_units) == (440, 5)
    assert (b.current.minor_units, b.pending_credits.minor_units) == (560, 5)
    assert all(t.balanced for t in (await harness.totals()).totals)

    # The batch's request_id replays the whole first answer; with another payload it is refused.
    assert list((await harness.ledger.BatchPostTransfers(batch, metadata=harness.internal)).results) == list(results)
    assert (await harness.balance_of(alice.name)).current.minor_units == 440
    changed = ledger_pb2.BatchPostTransfersRequest(request_id=batch.request_id, requests=[post(h5.name)])
    await _fails(
        harness.ledger.BatchPostTransfers(changed, metadata=harness.internal),
        grpc.StatusCode.ALREADY_EXISTS,
        "REQUEST_ID_REUSED",
    )
    # An item's request_id is PostTransfer's key: the single rpc replays the batch's answer...
    replayed = await harness.ledger.PostTransfer(batch.requests[0], metadata=harness.internal)
    assert replayed.transfer == results[0].transfer
    # ...and refuses it for another transfer, as if the single rpc had posted h1.
    await _fails(
        harness.ledger.PostTransfer(post(h5.name, batch.requests[0].request_id), metadata=harness.internal),
        grpc.StatusCode.ALREADY_EXISTS,
        "REQUEST_ID_REUSED",
    )
    # Without the key, a second post of h1 is the single rpc's TRANSFER_ALREADY_POSTED.
    await _fails(
        harness.ledger.PostTransfer(post(h1.name), metadata=harness.internal),
        grpc.StatusCode.FAILED_PRECONDITION,
        "TRANSFER_ALREADY_POSTED",
    )
    assert (await harness.balance_of(alice.name)).current.minor_units == 440

    # Whole-call errors: the same transfer twice, empty, over 500 items, a malformed batch id.
    for bad in (
        ledger_pb2.BatchPostTransfersRequest(request_id=new_id(), requests=[post(h5.name), post(h5.name)]),
        ledger_pb2.BatchPostTransfersRequest(request_id=new_id()),
        ledger_pb2.BatchPostTransfersRequest(
            request_id=new_id(), requests=[post(f"transfers/x{i}") for i in range(501)]
        ),
        ledger_pb2.BatchPostTransfersRequest(request_id="", requests=[post(h5.name)]),
    ):
        await _fails(
            harness.ledger.BatchPostTransfers(bad, metadata=harness.internal),
            grpc.StatusCode.INVALID_ARGUMENT,
            "FIELD_INVALID",
        )
    assert (await harness.balance_of(alice.name)).pending_debits.minor_units == 5


async def test_list_transfers_filters_and_stable_pages(harness: AccountHarness) -> None:
    alice, bob = await harness.open(), await harness.open(customer="cust-2")
    await harness.fund(alice.name, 10_000)
    for index in range(5):
        await harness.transfer(alice.name, bob.name, 10 + index, reference="payments/x", request_id=f"lt-{index}")
    listing = ledger_pb2.ListTransfersRequest(page_size=2, account=bob.name, reference="payments/x")
    first = await harness.ledger.ListTransfers(listing, metadata=harness.internal)
    assert [t.name for t in first.transfers] == ["transfers/lt-4", "transfers/lt-3"]
    await harness.transfer(alice.name, bob.name, 99, reference="payments/x", request_id="lt-new")
    listing.page_token = first.next_page_token
    second = await harness.ledger.ListTransfers(listing, metadata=harness.internal)
    assert [t.name for t in second.transfers] == ["transfers/lt-2", "transfers/lt-1"]
    listing.page_token = second.next_page_token
    third = await harness.ledger.ListTransfers(listing, metadata=harness.internal)
    assert [t.name for t in third.transfers] == ["transfers/lt-0"] and third.next_page_token == ""
    tampered = ledger_pb2.ListTransfersRequest(page_size=2, account=alice.name, page_token=first.next_page_token)
    await _fails(
        harness.ledger.ListTransfers(tampered, metadata=harness.internal),
        grpc.StatusCode.INVALID_ARGUMENT,
        "PAGE_TOKEN_INVALID",
    )
    await _fails(
        harness.ledger.ListTransfers(ledger_pb2.ListTransfersRequest(page_size=-1), metadata=harness.internal),
        grpc.StatusCode.INVALID_ARGUMENT,
        "FIELD_INVALID",
    )


async def test_admin_open_fund_close_and_their_errors(harness: AccountHarness) -> None:
    alice = await harness.open(overdraft=500)
    assert alice.overdraft_limit.minor_units == 500
    # An overdraft lets the balance go below zero, down to the limit.
    bob = await harness.open(customer="cust-2")
    await harness.transfer(alice.name, bob.name, 500)
    await _fails(harness.transfer(alice.name, bob.name, 1), grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS")
    # A second bank equity account of a currency is refused (EUR's was opened on demand).
    equity = account_admin_pb2.OpenAccountRequest(
        request_id=new_id(), currency_code="EUR", type=account_pb2.ACCOUNT_TYPE_BANK_EQUITY
    )
    await _fails(
        harness.admin.OpenAccount(equity, metadata=harness.internal),
        grpc.StatusCode.ALREADY_EXISTS,
        "RESOURCE_ALREADY_EXISTS",
    )
    no_customer = account_admin_pb2.OpenAccountRequest(
        request_id=new_id(), currency_code="EUR", type=account_pb2.ACCOUNT_TYPE_CURRENT
    )
    await _fails(
        harness.admin.OpenAccount(no_customer, metadata=harness.internal),
        grpc.StatusCode.INVALID_ARGUMENT,
        "FIELD_INVALID",
    )
    bad_overdraft = account_admin_pb2.OpenAccountRequest(
        request_id=new_id(),
        customer="customers/c",
        currency_code="EUR",
        type=account_pb2.ACCOUNT_TYPE_CURRENT,
        overdraft_limit=money(5, "USD"),
    )
    await _fails(
        harness.admin.OpenAccount(bad_overdraft, metadata=harness.internal),
        grpc.StatusCode.INVALID_ARGUMENT,
        "CURRENCY_MISMATCH",
    )
    open_request = account_admin_pb2.OpenAccountRequest(
        request_id=new_id(), customer="customers/c9", currency_code="GBP", type=account_pb2.ACCOUNT_TYPE_SAVINGS
    )
    opened = (await harness.admin.OpenAccount(open_request, metadata=harness.internal)).account
    assert (await harness.admin.OpenAccount(open_request, metadata=harness.internal)).account == opened
    open_request.display_name = "changed"
    await _fails(
        harness.admin.OpenAccount(open_request, metadata=harness.internal),
        grpc.StatusCode.ALREADY_EXISTS,
        "REQUEST_ID_REUSED",
    )
    await _fails(harness.fund(opened.name, 100), grpc.StatusCode.INVALID_ARGUMENT, "CURRENCY_MISMATCH")
    await _fails(harness.fund("accounts/missing", 100), grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND")
    fund = account_admin_pb2.FundAccountRequest(request_id="fund-x", account=opened.name, amount=money(100, "GBP"))
    funded = (await harness.admin.FundAccount(fund, metadata=harness.internal)).transfer
    assert (await harness.admin.FundAccount(fund, metadata=harness.internal)).transfer == funded
    fund.amount.minor_units = 101
    await _fails(
        harness.admin.FundAccount(fund, metadata=harness.internal),
        grpc.StatusCode.ALREADY_EXISTS,
        "TRANSFER_EXISTS_WITH_DIFFERENT_FIELDS",
    )
    close = account_admin_pb2.CloseAccountRequest(request_id=new_id(), name=opened.name)
    await _fails(
        harness.admin.CloseAccount(close, metadata=harness.internal),
        grpc.StatusCode.FAILED_PRECONDITION,
        "INVALID_STATE_TRANSITION",
    )
    empty = await harness.open(customer="cust-3")
    closed = (
        await harness.admin.CloseAccount(
            account_admin_pb2.CloseAccountRequest(request_id=new_id(), name=empty.name), metadata=harness.internal
        )
    ).account
    assert closed.status == account_pb2.ACCOUNT_STATUS_CLOSED
    await _fails(harness.fund(empty.name, 1), grpc.StatusCode.FAILED_PRECONDITION, "ACCOUNT_NOT_ACTIVE")
    totals = {t.currency_code: t for t in (await harness.totals()).totals}
    assert set(totals) == {"EUR", "GBP"} and all(t.balanced and t.net.minor_units == 0 for t in totals.values())


async def test_internal_rpcs_need_their_scopes(harness: AccountHarness) -> None:
    weak = harness.metadata(scopes=("ledger:read",), subject="service:x")
    request = account_admin_pb2.GetLedgerTotalsRequest()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.admin.GetLedgerTotals(request, metadata=weak)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    batch = ledger_pb2.BatchPostTransfersRequest(
        request_id=new_id(), requests=[ledger_pb2.PostTransferRequest(request_id=new_id(), name="transfers/x")]
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.ledger.BatchPostTransfers(batch, metadata=weak)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
