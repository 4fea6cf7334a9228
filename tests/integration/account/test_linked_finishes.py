"""PostLinkedTransfers and VoidLinkedTransfers over real gRPC, on SQLite and PostgreSQL: every hold
of a chain finished, or none."""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest

from meshlib.errors import InvalidArgument
from meshlib.grpc_errors import decode_rpc_error, decode_status, error_info
from openbank.account.v1 import account_pb2, ledger_pb2
from tests.integration.account.harness import AccountHarness, money, new_id


def _post(*items: tuple[str, str], request_id: str | None = None) -> ledger_pb2.PostLinkedTransfersRequest:
    return ledger_pb2.PostLinkedTransfersRequest(
        request_id=request_id or new_id("chain"),
        requests=[ledger_pb2.PostTransferRequest(request_id=key, name=name) for key, name in items],
    )


def _void(*items: tuple[str, str], request_id: str | None = None) -> ledger_pb2.VoidLinkedTransfersRequest:
    return ledger_pb2.VoidLinkedTransfersRequest(
        request_id=request_id or new_id("chain"),
        requests=[ledger_pb2.VoidTransferRequest(request_id=key, name=name) for key, name in items],
    )


async def _refusal(harness: AccountHarness, call, request, metadata=None):  # type: ignore[no-untyped-def]
    """The chain's failure: (code, reason, ErrorInfo metadata, the decoded error)."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(request, metadata=metadata or harness.internal, timeout=10)
    info = error_info(decode_status(caught.value.trailing_metadata()))
    assert info is not None
    return caught.value.code(), info.reason, dict(info.metadata), decode_rpc_error(caught.value)


async def _state(harness: AccountHarness, name: str) -> int:
    got = await harness.ledger.GetTransfer(ledger_pb2.GetTransferRequest(name=name), metadata=harness.internal)
    return got.transfer.state


async def _current(harness: AccountHarness, account: str) -> int:
    """An account's booked balance, from its posted transfers (settlement accounts have no customer
    consent to read a balance through)."""
    listed = await harness.ledger.ListTransfers(
        ledger_pb2.ListTransfersRequest(account=account, page_size=500), metadata=harness.internal
    )
    posted = [t for t in listed.transfers if t.state == ledger_pb2.TRANSFER_STATE_POSTED]
    return sum(t.amount.minor_units for t in posted if t.credit_account == account) - sum(
        t.amount.minor_units for t in posted if t.debit_account == account
    )


async def _payment_and_fee(harness: AccountHarness, tag: str) -> tuple[str, str, str, str, str]:
    """alice, the wallet's settlement account, the bank's fee income, and two holds created as one
    linked chain: the payment (alice -> wallet, 400) and its fee (wallet -> fee income, 30)."""
    alice = (await harness.open()).name
    wallet = (await harness.open(customer="", account_type=account_pb2.ACCOUNT_TYPE_SETTLEMENT)).name
    fees = (await harness.open(customer="", account_type=account_pb2.ACCOUNT_TYPE_SETTLEMENT)).name
    await harness.fund(alice, 1_000)
    await harness.fund(wallet, 50)

    def leg(transfer_id: str, debit: str, credit: str, minor: int) -> ledger_pb2.CreateTransferRequest:
        request = ledger_pb2.CreateTransferRequest(
            request_id=transfer_id,
            debit_account=debit,
            credit_account=credit,
            amount=money(minor),
            type=ledger_pb2.TRANSFER_TYPE_PENDING,
            reference=f"payments/{tag}",
        )
        request.timeout.seconds = 300
        return request

    chain = ledger_pb2.CreateLinkedTransfersRequest(
        request_id=new_id("create"),
        requests=[leg(f"{tag}-pay", alice, wallet, 400), leg(f"{tag}-fee", wallet, fees, 30)],
    )
    await harness.ledger.CreateLinkedTransfers(chain, metadata=harness.internal, timeout=10)
    return alice, wallet, fees, f"transfers/{tag}-pay", f"transfers/{tag}-fee"


async def test_a_payment_and_its_fee_post_together_and_replay(
    harness: AccountHarness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="services.account.ledger")
    alice, wallet, fees, pay, fee = await _payment_and_fee(harness, "p1")
    chain = _post(("p1-post-pay", pay), ("p1-post-fee", fee))
    transfers = (await harness.ledger.PostLinkedTransfers(chain, metadata=harness.internal, timeout=10)).transfers
    assert [(t.name, t.state, t.amount.minor_units) for t in transfers] == [
        (pay, ledger_pb2.TRANSFER_STATE_POSTED, 400),
        (fee, ledger_pb2.TRANSFER_STATE_POSTED, 30),
    ]
    assert (await harness.balance_of(alice)).current.minor_units == 600
    assert [await _current(harness, account) for account in (wallet, fees)] == [420, 30]
    totals = (await harness.totals()).totals
    assert [(t.currency_code, t.net.minor_units, t.balanced) for t in totals] == [("EUR", 0, True)]
    assert "linked holds finished" in caplog.messages

    # The same chain again: its first answer. Another chain key, the same items: each item's
    # PostTransfer key answers, nothing posted twice. An item's key through PostTransfer: the same.
    again = await harness.ledger.PostLinkedTransfers(chain, metadata=harness.internal, timeout=10)
    assert list(again.transfers) == list(transfers)
    other_key = _post(*((item.request_id, item.name) for item in chain.requests))
    assert list((await harness.ledger.PostLinkedTransfers(other_key, metadata=harness.internal)).transfers) == list(
        transfers
    )
    single = await harness.ledger.PostTransfer(
        ledger_pb2.PostTransferRequest(request_id="p1-post-fee", name=fee), metadata=harness.internal
    )
    assert single.transfer == transfers[1]
    assert (await harness.balance_of(alice)).current.minor_units == 600
    code, reason, _, _ = await _refusal(
        harness, harness.ledger.PostLinkedTransfers, _post(("p1-post-pay", pay), request_id=chain.request_id)
    )
    assert (code, reason) == (grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_REUSED")


async def test_one_refused_item_refuses_the_chain_and_nothing_is_posted(harness: AccountHarness) -> None:
    alice, wallet, _, pay, fee = await _payment_and_fee(harness, "p2")
    await harness.ledger.VoidTransfer(
        ledger_pb2.VoidTransferRequest(request_id="p2-void-fee", name=fee), metadata=harness.internal
    )
    code, reason, metadata, _ = await _refusal(
        harness, harness.ledger.PostLinkedTransfers, _post(("p2-post-pay", pay), ("p2-post-fee", fee))
    )
    assert (code, reason, metadata["index"]) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "TRANSFER_ALREADY_VOIDED",
        "1",
    )
    assert await _state(harness, pay) == ledger_pb2.TRANSFER_STATE_PENDING
    assert (await harness.balance_of(alice)).current.minor_units == 1_000
    assert (await harness.balance_of(alice)).available.minor_units == 600  # still held, not posted

    code, reason, metadata, _ = await _refusal(
        harness, harness.ledger.PostLinkedTransfers, _post(("p2-a", pay), ("p2-b", "transfers/nope"))
    )
    assert (code, reason, metadata["index"]) == (grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND", "1")
    # A refused chain saved nothing: the payment's key is still free, and its hold still pending.
    posted = await harness.ledger.PostTransfer(
        ledger_pb2.PostTransferRequest(request_id="p2-a", name=pay), metadata=harness.internal
    )
    assert posted.transfer.state == ledger_pb2.TRANSFER_STATE_POSTED
    assert await _current(harness, wallet) == 450


async def test_a_malformed_chain_is_refused_naming_the_item(harness: AccountHarness) -> None:
    _, _, _, pay, fee = await _payment_and_fee(harness, "p3")
    cases = {
        "requests[1].name": _post(("m-a", pay), ("m-b", "accounts/x")),
        "requests[1].request_id": _post(("m-a", pay), ("bad*key", fee)),
    }
    for field, chain in cases.items():
        code, reason, metadata, error = await _refusal(harness, harness.ledger.PostLinkedTransfers, chain)
        assert (code, reason, metadata["index"]) == (grpc.StatusCode.INVALID_ARGUMENT, "FIELD_INVALID", "1")
        assert isinstance(error, InvalidArgument) and error.violations[0].field == field, error.violations
    code, reason, _, error = await _refusal(
        harness, harness.ledger.PostLinkedTransfers, _post(("m-a", pay), ("m-b", pay))
    )
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "FIELD_INVALID")
    assert isinstance(error, InvalidArgument) and error.violations[0].field == "requests[1].name"
    code, reason, _, _ = await _refusal(harness, harness.ledger.VoidLinkedTransfers, _void())
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "FIELD_INVALID")
    assert await _state(harness, pay) == await _state(harness, fee) == ledger_pb2.TRANSFER_STATE_PENDING


async def test_a_chain_of_voids_releases_both_holds(harness: AccountHarness) -> None:
    alice, wallet, fees, pay, fee = await _payment_and_fee(harness, "p4")
    chain = _void(("p4-void-pay", pay), ("p4-void-fee", fee))
    transfers = (await harness.ledger.VoidLinkedTransfers(chain, metadata=harness.internal, timeout=10)).transfers
    assert [t.state for t in transfers] == [ledger_pb2.TRANSFER_STATE_VOIDED] * 2
    assert list((await harness.ledger.VoidLinkedTransfers(chain, metadata=harness.internal)).transfers) == list(
        transfers
    )
    balance = await harness.balance_of(alice)
    assert (balance.current.minor_units, balance.available.minor_units) == (1_000, 1_000)
    assert [await _current(harness, account) for account in (wallet, fees)] == [50, 0]
    totals = (await harness.totals()).totals
    assert all(t.balanced and t.net.minor_units == 0 for t in totals)


async def test_a_post_chain_racing_a_void_chain_finishes_both_holds_the_same_way(harness: AccountHarness) -> None:
    for round_ in range(3):
        _, _, _, pay, fee = await _payment_and_fee(harness, f"p5r{round_}")
        post = _post((f"p5r{round_}-p1", pay), (f"p5r{round_}-p2", fee))
        void = _void((f"p5r{round_}-v1", fee), (f"p5r{round_}-v2", pay))  # the other order on purpose
        outcomes = await asyncio.gather(
            harness.ledger.PostLinkedTransfers(post, metadata=harness.internal, timeout=30),
            harness.ledger.VoidLinkedTransfers(void, metadata=harness.internal, timeout=30),
            return_exceptions=True,
        )
        won = [o for o in outcomes if not isinstance(o, BaseException)]
        lost = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
        assert (len(won), len(lost)) == (1, 1), outcomes
        assert lost[0].code() == grpc.StatusCode.FAILED_PRECONDITION
        assert await _state(harness, pay) == await _state(harness, fee)
    totals = (await harness.totals()).totals
    assert all(t.balanced and t.net.minor_units == 0 for t in totals)


async def test_linked_finishes_need_ledger_write(harness: AccountHarness) -> None:
    reader = harness.metadata(scopes=("ledger:read",), subject="service:x")
    for call, chain in (
        (harness.ledger.PostLinkedTransfers, _post(("s-a", "transfers/x"))),
        (harness.ledger.VoidLinkedTransfers, _void(("s-a", "transfers/x"))),
    ):
        code, reason, _, _ = await _refusal(harness, call, chain, reader)
        assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "INSUFFICIENT_SCOPE")
