"""LedgerService.BatchGetLedgerAccounts over real gRPC, on SQLite and PostgreSQL.

The payment service coalesces the GetLedgerAccount calls of payments in flight into this one
rpc, so each item must answer exactly what GetLedgerAccount answers for its name (account,
or reason and message), in request order, whatever the other items are. The service reads
the batch's distinct accounts with one SELECT.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from sqlalchemy import event

from meshlib.grpc_errors import decode_status
from meshlib.storage import Database
from meshlib.storage.migrations import upgrade_to_head
from openbank.account.v1 import account_admin_pb2, account_pb2, ledger_pb2
from openbank.common.v1 import error_reason_pb2 as er
from services.account.admin_service import AccountAdminService
from services.account.bootstrap import VERSIONS_DIR
from services.account.domain.ledger import AccountType, OpenAccountCommand
from services.account.ledger_service import LedgerService
from services.account.unit_of_work import AccountUnitOfWork
from tests.integration.account.harness import AccountHarness, SettableClock, new_id, reason_of

Answer = tuple[account_pb2.Account | None, int, str]


async def single_answer(harness: AccountHarness, name: str) -> Answer:
    """What GetLedgerAccount answers for ``name``: (account, item-style reason, message)."""
    try:
        answer = await harness.ledger.GetLedgerAccount(
            ledger_pb2.GetLedgerAccountRequest(name=name), metadata=harness.internal, timeout=10
        )
    except grpc.aio.AioRpcError as error:
        return None, er.ErrorReason.Value(f"ERROR_REASON_{reason_of(error)}"), error.details() or ""
    return answer.account, er.ERROR_REASON_UNSPECIFIED, ""


def item_answer(result: ledger_pb2.BatchGetLedgerAccountResult) -> Answer:
    """One batch result in the shape of :func:`single_answer`."""
    return (result.account if result.HasField("account") else None), result.error_reason, result.error_message


async def batch(harness: AccountHarness, names: list[str], metadata: tuple | None = None) -> list[Any]:
    """The results of one BatchGetLedgerAccounts call."""
    answer = await harness.ledger.BatchGetLedgerAccounts(
        ledger_pb2.BatchGetLedgerAccountsRequest(names=names), metadata=metadata or harness.internal, timeout=10
    )
    return list(answer.results)


def violated_fields(error: grpc.aio.AioRpcError) -> list[str]:
    """The fields a failed call's BadRequest names."""
    status = decode_status(error.trailing_metadata())
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            return [violation.field for violation in bad.field_violations]
    return []


async def test_each_item_answers_what_get_ledger_account_answers(harness: AccountHarness) -> None:
    alice, bob = await harness.open(), await harness.open(customer="cust-2", currency="GBP", overdraft=300)
    funding = await harness.fund(alice.name, 1_000)
    equity = funding.debit_account  # the bank's EUR equity account: no customer
    frozen = await harness.open(customer="cust-3")
    await harness.admin.FreezeAccount(
        account_admin_pb2.FreezeAccountRequest(request_id=new_id(), name=frozen.name, reason="check"),
        metadata=harness.internal,
    )
    names = [
        alice.name,
        "accounts/nope",  # unknown
        "alice",  # malformed
        bob.name,
        alice.name,  # duplicate: its own result
        equity,
        frozen.name,
        "accounts/",  # malformed
        "accounts/nope",  # unknown, twice
    ]
    results = await batch(harness, names)
    assert [r.index for r in results] == list(range(len(names)))
    assert [r.error_reason for r in results] == [
        er.ERROR_REASON_UNSPECIFIED,
        er.ERROR_REASON_RESOURCE_NOT_FOUND,
        er.ERROR_REASON_FIELD_INVALID,
        er.ERROR_REASON_UNSPECIFIED,
        er.ERROR_REASON_UNSPECIFIED,
        er.ERROR_REASON_UNSPECIFIED,
        er.ERROR_REASON_UNSPECIFIED,
        er.ERROR_REASON_FIELD_INVALID,
        er.ERROR_REASON_RESOURCE_NOT_FOUND,
    ]
    # Item by item, exactly the single rpc's answer (account, or reason and message).
    assert [item_answer(r) for r in results] == [await single_answer(harness, name) for name in names]
    assert results[0].account == alice and results[3].account == bob and results[4].account == alice
    assert results[3].account.customer == "customers/cust-2" and results[3].account.overdraft_limit.minor_units == 300
    assert results[5].account.type == account_pb2.ACCOUNT_TYPE_BANK_EQUITY and results[5].account.customer == ""
    assert results[6].account.status == account_pb2.ACCOUNT_STATUS_FROZEN
    assert all(r.error_message for r in results if r.error_reason) and "name" in results[2].error_message
    assert not any(r.HasField("account") for r in results if r.error_reason)


async def test_a_batch_of_bad_names_only_and_the_largest_batch(harness: AccountHarness) -> None:
    results = await batch(harness, ["x", "accounts/missing", "customers/c1"])
    assert [r.error_reason for r in results] == [
        er.ERROR_REASON_FIELD_INVALID,
        er.ERROR_REASON_RESOURCE_NOT_FOUND,
        er.ERROR_REASON_FIELD_INVALID,
    ]
    alice = await harness.open()
    largest = await batch(harness, [alice.name] * 500)
    assert [r.index for r in largest] == list(range(500)) and all(r.account == alice for r in largest)


@pytest.mark.parametrize("count", [0, 501])
async def test_whole_call_errors_name_the_names_field(harness: AccountHarness, count: int) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await batch(harness, [f"accounts/a{i}" for i in range(count)])
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason_of(caught.value) == "FIELD_INVALID"
    assert violated_fields(caught.value) == ["names"]


async def test_callers_are_refused_as_for_get_ledger_account(harness: AccountHarness) -> None:
    account = await harness.open()
    harness.consents.grant("c-1", [account.name])
    callers = {
        "write scope only": harness.metadata(scopes=("ledger:write",), subject="service:x"),
        "partner token": harness.partner("c-1"),
        "no token": (),
    }
    for who, metadata in callers.items():
        with pytest.raises(grpc.aio.AioRpcError) as single:
            await harness.ledger.GetLedgerAccount(
                ledger_pb2.GetLedgerAccountRequest(name=account.name), metadata=metadata, timeout=10
            )
        with pytest.raises(grpc.aio.AioRpcError) as batched:
            await harness.ledger.BatchGetLedgerAccounts(
                ledger_pb2.BatchGetLedgerAccountsRequest(names=[account.name]), metadata=metadata, timeout=10
            )
        assert single.value.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED), who
        assert (batched.value.code(), reason_of(batched.value)) == (single.value.code(), reason_of(single.value)), who
    # ledger:read alone is enough, as for GetLedgerAccount.
    reader = harness.metadata(scopes=("ledger:read",), subject="service:payment")
    assert [r.account for r in await batch(harness, [account.name], reader)] == [account]


# ---- the service layer on the real stores: one SELECT for the whole batch ----


@pytest.fixture
async def ledger(database_url: str) -> AsyncIterator[tuple[LedgerService, AccountAdminService, Database]]:
    database = Database(database_url)
    await upgrade_to_head(database, VERSIONS_DIR, "account")
    clock = SettableClock(dt.datetime(2026, 6, 1, 9, 30, tzinfo=dt.UTC))
    uow = partial(AccountUnitOfWork, database)
    service = LedgerService(uow, clock=clock)
    try:
        yield service, AccountAdminService(uow, service, clock=clock), database
    finally:
        await database.dispose()


async def test_the_batch_reads_its_distinct_accounts_with_one_select(
    ledger: tuple[LedgerService, AccountAdminService, Database],
) -> None:
    service, admin, database = ledger
    ids = []
    for index in range(3):
        opened = await admin.open_account(
            OpenAccountCommand(
                request_id=f"open-{index}",
                customer_id=f"cust-{index}",
                currency="EUR",
                type=AccountType.CURRENT,
                overdraft_limit=None,
                display_name="",
            )
        )
        ids.append(opened.id)
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        statements.append(statement)

    event.listen(database.engine.sync_engine, "before_cursor_execute", record)
    try:
        results = await service.batch_get_accounts([*ids, "missing", ids[0], ids[1]] * 50)
    finally:
        event.remove(database.engine.sync_engine, "before_cursor_execute", record)
    assert len(results) == 300
    assert [r.account.id if r.account else r.error_reason for r in results[:6]] == [
        *ids,
        "RESOURCE_NOT_FOUND",
        ids[0],
        ids[1],
    ]
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 1 and "accounts" in selects[0], statements
    assert not any(s.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")) for s in statements), statements
