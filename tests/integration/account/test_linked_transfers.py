"""CreateLinkedTransfers over real gRPC, on SQLite and PostgreSQL: every leg of a chain or none."""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest

from meshlib.errors import InvalidArgument
from meshlib.grpc_errors import decode_rpc_error, decode_status, error_info
from openbank.account.v1 import account_pb2, ledger_pb2
from tests.integration.account.harness import AccountHarness, money, new_id


def _leg(request_id: str, debit: str, credit: str, minor: int, **fields: object) -> ledger_pb2.CreateTransferRequest:
    return ledger_pb2.CreateTransferRequest(
        request_id=request_id,
        debit_account=debit,
        credit_account=credit,
        amount=money(minor),
        type=ledger_pb2.TRANSFER_TYPE_SINGLE_PHASE,
        reference="settlementWindows/w1",
        **fields,  # type: ignore[arg-type]
    )


def _chain(
    *legs: ledger_pb2.CreateTransferRequest, request_id: str | None = None
) -> ledger_pb2.CreateLinkedTransfersRequest:
    return ledger_pb2.CreateLinkedTransfersRequest(request_id=request_id or new_id("chain"), requests=legs)


async def _refusal(harness: AccountHarness, chain: ledger_pb2.CreateLinkedTransfersRequest, metadata=None):  # type: ignore[no-untyped-def]
    """The chain's failure: (code, reason, ErrorInfo metadata, the decoded error)."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.ledger.CreateLinkedTransfers(chain, metadata=metadata or harness.internal, timeout=10)
    info = error_info(decode_status(caught.value.trailing_metadata()))
    assert info is not None
    return caught.value.code(), info.reason, dict(info.metadata), decode_rpc_error(caught.value)


async def _exists(harness: AccountHarness, transfer_id: str) -> bool:
    try:
        await harness.ledger.GetTransfer(
            ledger_pb2.GetTransferRequest(name=f"transfers/{transfer_id}"), metadata=harness.internal
        )
    except grpc.aio.AioRpcError as error:
        assert error.code() == grpc.StatusCode.NOT_FOUND
        return False
    return True


async def _current(harness: AccountHarness, account: str) -> int:
    """An account's booked balance, from its posted transfers (settlement accounts have no customer
    consent to read a balance through)."""
    listed = await harness.ledger.ListTransfers(
        ledger_pb2.ListTransfersRequest(account=account, page_size=500), metadata=harness.internal
    )
    posted = [t for t in listed.transfers if t.state == ledger_pb2.TRANSFER_STATE_POSTED]
    assert not listed.next_page_token
    return sum(t.amount.minor_units for t in posted if t.credit_account == account) - sum(
        t.amount.minor_units for t in posted if t.debit_account == account
    )


async def _settlement_accounts(harness: AccountHarness) -> tuple[str, str]:
    wallet = await harness.open(customer="", account_type=account_pb2.ACCOUNT_TYPE_SETTLEMENT)
    bank = await harness.open(customer="", account_type=account_pb2.ACCOUNT_TYPE_SETTLEMENT)
    return wallet.name, bank.name


async def test_a_chain_posts_every_leg_in_one_go_and_a_leg_may_spend_an_earlier_ones_credit(
    harness: AccountHarness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="services.account.ledger")  # the log line is on the path
    alice = (await harness.open()).name
    wallet, bank = await _settlement_accounts(harness)
    await harness.fund(alice, 1_000)
    chain = _chain(_leg("c1-a", alice, wallet, 600), _leg("c1-b", wallet, bank, 400))
    transfers = (await harness.ledger.CreateLinkedTransfers(chain, metadata=harness.internal)).transfers
    assert [(t.name, t.state, t.amount.minor_units) for t in transfers] == [
        ("transfers/c1-a", ledger_pb2.TRANSFER_STATE_POSTED, 600),
        ("transfers/c1-b", ledger_pb2.TRANSFER_STATE_POSTED, 400),
    ]
    assert [await _current(harness, a) for a in (alice, wallet, bank)] == [400, 200, 400]
    totals = (await harness.totals()).totals
    assert [(t.currency_code, t.net.minor_units, t.balanced) for t in totals] == [("EUR", 0, True)]
    assert "linked transfers created" in caplog.messages

    # The same request_id and payload: the first answer. Another request_id, the same legs: the
    # existing transfers, nothing moved twice. The same request_id with other legs: refused.
    assert list((await harness.ledger.CreateLinkedTransfers(chain, metadata=harness.internal)).transfers) == list(
        transfers
    )
    again = _chain(*chain.requests)
    assert list((await harness.ledger.CreateLinkedTransfers(again, metadata=harness.internal)).transfers) == list(
        transfers
    )
    assert await _current(harness, alice) == 400
    changed = _chain(_leg("c1-c", alice, wallet, 1), request_id=chain.request_id)
    code, reason, _, _ = await _refusal(harness, changed)
    assert (code, reason) == (grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_REUSED")


async def test_one_refused_leg_refuses_the_chain_with_its_reason_and_index_and_nothing_moves(
    harness: AccountHarness,
) -> None:
    alice, bob = (await harness.open()).name, (await harness.open(customer="cust-2")).name
    wallet, bank = await _settlement_accounts(harness)
    await harness.fund(alice, 500)
    chain = _chain(
        _leg("c2-a", alice, wallet, 300),
        _leg("c2-b", wallet, bank, 300),
        _leg("c2-c", alice, bob, 201),  # 500 - 300 leaves 200
    )
    code, reason, metadata, _ = await _refusal(harness, chain)
    assert (code, reason, metadata["index"]) == (grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS", "2")
    assert metadata["account"] == alice
    assert not any([await _exists(harness, leg) for leg in ("c2-a", "c2-b", "c2-c")])
    assert [await _current(harness, a) for a in (alice, wallet, bank, bob)] == [500, 0, 0, 0]

    # A refusal is not saved: once the money is there, the same request runs again and posts.
    await harness.fund(alice, 1)
    transfers = (await harness.ledger.CreateLinkedTransfers(chain, metadata=harness.internal)).transfers
    assert [t.name for t in transfers] == ["transfers/c2-a", "transfers/c2-b", "transfers/c2-c"]
    assert await _current(harness, alice) == 0

    # Each other refusal of a leg: the leg's own reason, its index.
    unknown = _leg("c2-d", bank, "accounts/nope", 1)
    code, reason, metadata, _ = await _refusal(harness, _chain(_leg("c2-e", bank, wallet, 1), unknown))
    assert (code, reason, metadata["index"]) == (grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND", "1")
    other_fields = _leg("c2-a", alice, wallet, 299)  # the id of a posted transfer, with other fields
    code, reason, metadata, _ = await _refusal(harness, _chain(other_fields))
    assert (code, reason, metadata["index"]) == (
        grpc.StatusCode.ALREADY_EXISTS,
        "TRANSFER_EXISTS_WITH_DIFFERENT_FIELDS",
        "0",
    )
    assert not await _exists(harness, "c2-e")


async def test_a_malformed_leg_fails_the_chain_naming_its_field(harness: AccountHarness) -> None:
    alice = (await harness.open()).name
    wallet, bank = await _settlement_accounts(harness)
    await harness.fund(alice, 100)
    cases = {
        "requests[1].amount.minor_units": _leg("m-b", wallet, bank, 0),
        "requests[1].credit_account": _leg("m-b", wallet, wallet, 5),
        "requests[1].request_id": _leg("m-a", wallet, bank, 5),  # the id of leg 0 again
    }
    for field, bad in cases.items():
        code, reason, _, error = await _refusal(harness, _chain(_leg("m-a", alice, wallet, 10), bad))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert reason in ("FIELD_INVALID", "SAME_ACCOUNT")
        assert isinstance(error, InvalidArgument) and error.violations[0].field == field, error.violations
    # Text in a leg is checked with the whole request: a NUL names the leg's field.
    nul = _leg("m-b", wallet, bank, 5)
    nul.reference = "payments/\x00"
    code, reason, _, error = await _refusal(harness, _chain(_leg("m-a", alice, wallet, 10), nul))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "FIELD_INVALID")
    assert isinstance(error, InvalidArgument) and error.violations[0].field == "requests[1].reference"
    code, reason, _, _ = await _refusal(harness, _chain())
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "FIELD_INVALID")
    assert not await _exists(harness, "m-a")
    assert await _current(harness, alice) == 100


async def test_chains_racing_for_the_same_money_post_at_most_what_is_there(harness: AccountHarness) -> None:
    alice = (await harness.open()).name
    wallet, bank = await _settlement_accounts(harness)
    await harness.fund(alice, 100)
    chains = [_chain(_leg(f"r{i}-a", alice, wallet, 60), _leg(f"r{i}-b", wallet, bank, 60)) for i in range(4)]
    outcomes = await asyncio.gather(
        *(harness.ledger.CreateLinkedTransfers(c, metadata=harness.internal, timeout=30) for c in chains),
        return_exceptions=True,
    )
    posted = [o for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert (len(posted), len(refused)) == (1, 3), outcomes
    assert {error.code() for error in refused} == {grpc.StatusCode.FAILED_PRECONDITION}
    assert [await _current(harness, a) for a in (alice, wallet, bank)] == [40, 0, 60]
    totals = (await harness.totals()).totals
    assert all(t.balanced and t.net.minor_units == 0 for t in totals)


async def test_linked_transfers_need_ledger_write(harness: AccountHarness) -> None:
    reader = harness.metadata(scopes=("ledger:read",), subject="service:x")
    code, reason, _, _ = await _refusal(harness, _chain(_leg("s-a", "accounts/a", "accounts/b", 1)), reader)
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "INSUFFICIENT_SCOPE")
