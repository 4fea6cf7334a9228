"""Internal requests with text a store cannot hold (NUL, control characters, too long) are
refused as they enter the account service, naming the field, alike on SQLite and PostgreSQL;
a batch refuses only the bad item."""

from __future__ import annotations

import grpc
import pytest

from meshlib.grpc_errors import decode_rpc_error
from openbank.account.v1 import account_admin_pb2, account_pb2, ledger_pb2
from openbank.common.v1 import error_reason_pb2
from tests.integration.account.harness import AccountHarness, money, new_id


async def _refused(call, field: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    error = decode_rpc_error(caught.value)
    assert error.reason == "FIELD_INVALID"
    assert [v.field for v in error.violations] == [field]


async def test_bad_text_in_internal_requests_is_refused_naming_the_field(harness: AccountHarness) -> None:
    alice, bob = await harness.open(), await harness.open(customer="cust-2")
    await harness.fund(alice.name, 1_000)
    internal = harness.internal
    await _refused(
        harness.admin.OpenAccount(
            account_admin_pb2.OpenAccountRequest(
                request_id=new_id(),
                customer="customers/cust-3",
                currency_code="EUR",
                type=account_pb2.ACCOUNT_TYPE_CURRENT,
                display_name="Every\x00day",
            ),
            metadata=internal,
        ),
        "display_name",
    )
    await _refused(
        harness.admin.FundAccount(
            account_admin_pb2.FundAccountRequest(
                request_id=new_id(), account=alice.name, amount=money(1), description="top\x1b[2Jup"
            ),
            metadata=internal,
        ),
        "description",
    )
    await _refused(
        harness.admin.FreezeAccount(
            account_admin_pb2.FreezeAccountRequest(request_id=new_id(), name=bob.name, reason="fraud\ncheck"),
            metadata=internal,
        ),
        "reason",
    )

    def transfer(**text: str) -> ledger_pb2.CreateTransferRequest:
        return ledger_pb2.CreateTransferRequest(
            **{"request_id": new_id("t"), **text},
            debit_account=alice.name,
            credit_account=bob.name,
            amount=money(1),
            type=ledger_pb2.TRANSFER_TYPE_SINGLE_PHASE,
        )

    await _refused(harness.ledger.CreateTransfer(transfer(reference="payments/\x00"), metadata=internal), "reference")
    await _refused(harness.ledger.CreateTransfer(transfer(description="é" * 141), metadata=internal), "description")
    await _refused(harness.ledger.CreateTransfer(transfer(request_id="t\x00"), metadata=internal), "request_id")
    # The longest text each column holds is stored and read back whole, on both stores.
    kept = (
        await harness.ledger.CreateTransfer(
            transfer(reference="r" * 128, description=("€ Ünïcödé 😀 " + "é" * 140)[:140]), metadata=internal
        )
    ).transfer
    assert (len(kept.reference), len(kept.description)) == (128, 140)


async def test_a_batch_refuses_the_bad_item_alone(harness: AccountHarness) -> None:
    alice, bob = await harness.open(), await harness.open(customer="cust-2")
    await harness.fund(alice.name, 1_000)

    def item(request_id: str, description: str = "") -> ledger_pb2.CreateTransferRequest:
        return ledger_pb2.CreateTransferRequest(
            request_id=request_id,
            debit_account=alice.name,
            credit_account=bob.name,
            amount=money(10),
            type=ledger_pb2.TRANSFER_TYPE_SINGLE_PHASE,
            description=description,
        )

    batch = ledger_pb2.BatchCreateTransfersRequest(
        request_id=new_id("batch"), requests=[item("ok-1"), item("bad", "a\x00b"), item("ok-2", "fine")]
    )
    results = (await harness.ledger.BatchCreateTransfers(batch, metadata=harness.internal)).results
    assert [r.error_reason for r in results] == [
        error_reason_pb2.ERROR_REASON_UNSPECIFIED,
        error_reason_pb2.ERROR_REASON_FIELD_INVALID,
        error_reason_pb2.ERROR_REASON_UNSPECIFIED,
    ]
    assert "description" in results[1].error_message
    assert (await harness.balance_of(alice.name)).current.minor_units == 980

    names = ledger_pb2.BatchGetLedgerAccountsRequest(names=[alice.name, "accounts/\x00"])
    read = (await harness.ledger.BatchGetLedgerAccounts(names, metadata=harness.internal)).results
    assert read[0].account.name == alice.name
    assert read[1].error_reason == error_reason_pb2.ERROR_REASON_FIELD_INVALID
