"""The ledger's audit trail over gRPC: money moved and accounts frozen are recorded with who did
it (from the token) in the same transaction; a refused transfer leaves no record."""

from __future__ import annotations

import json

import grpc
import pytest

from openbank.account.v1 import account_admin_pb2, ledger_pb2
from openbank.common.v1 import audit_pb2, audit_pb2_grpc
from tests.integration.account.harness import AccountHarness, money, new_id


async def _records(harness: AccountHarness, **filters: str) -> list[audit_pb2.AuditRecord]:
    audit = audit_pb2_grpc.AuditServiceStub(harness.channel)
    auditor = harness.metadata(scopes=("audit:read",), subject="service:auditor")
    answer = await audit.ListAuditRecords(audit_pb2.ListAuditRecordsRequest(page_size=500, **filters), metadata=auditor)
    return list(answer.records)


async def test_money_and_account_changes_are_recorded_and_a_refused_transfer_is_not(harness: AccountHarness) -> None:
    alice, bob = await harness.open(customer="alice"), await harness.open(customer="bob")
    await harness.fund(alice.name, 1_000)
    await harness.transfer(alice.name, bob.name, 300, reference="pay-1")
    with pytest.raises(grpc.aio.AioRpcError):
        await harness.transfer(alice.name, bob.name, 5_000)  # more than alice has: refused, rolled back
    operator = harness.metadata(scopes=("ledger:admin",), subject="service:operator", client_id="operator")
    await harness.admin.FreezeAccount(
        account_admin_pb2.FreezeAccountRequest(request_id=new_id(), name=bob.name, reason="fraud check"),
        metadata=operator,
    )

    records = await _records(harness)
    transfers = [r for r in records if r.action.startswith("transfer.")]
    assert [[t["amount_minor"] for t in json.loads(r.details_json)["transfers"]] for r in transfers] == [
        [300],
        [1_000],
    ]  # newest first
    assert transfers[0].resource.startswith("transfers/") and transfers[0].outcome == "POSTED"
    assert all(r.actor == "service:payment" and r.actor_kind == "service" for r in transfers)
    (frozen,) = [r for r in records if r.action == "account.freeze"]
    assert (frozen.actor, frozen.actor_kind, frozen.outcome) == ("service:operator", "operator", "FROZEN")
    assert frozen.resource == bob.name and json.loads(frozen.details_json)["reason"] == "fraud check"
    assert {r.action for r in records} >= {"account.open", "transfer.create", "account.freeze"}

    await harness.server.audit.seal()
    verified = await audit_pb2_grpc.AuditServiceStub(harness.channel).VerifyAuditChain(
        audit_pb2.VerifyAuditChainRequest(), metadata=harness.metadata(scopes=("audit:read",), subject="service:x")
    )
    assert verified.intact and verified.checked_count == len(records)


async def test_a_batch_is_one_record_per_outcome_listing_every_transfer_it_made(harness: AccountHarness) -> None:
    alice, bob = await harness.open(customer="alice"), await harness.open(customer="bob")
    await harness.fund(alice.name, 1_000)

    def item(minor_units: int, *, pending: bool = False) -> ledger_pb2.CreateTransferRequest:
        request = ledger_pb2.CreateTransferRequest(
            request_id=new_id("t"),
            debit_account=alice.name,
            credit_account=bob.name,
            amount=money(minor_units),
            type=ledger_pb2.TRANSFER_TYPE_PENDING if pending else ledger_pb2.TRANSFER_TYPE_SINGLE_PHASE,
            reference=f"batch-{minor_units}",
        )
        if pending:
            request.timeout.seconds = 60
        return request

    items = [item(10), item(20, pending=True), item(5_000), item(30), item(40, pending=True)]  # 5_000: refused
    answer = await harness.ledger.BatchCreateTransfers(
        ledger_pb2.BatchCreateTransfersRequest(request_id=new_id(), requests=items), metadata=harness.internal
    )
    made = {result.transfer.name.removeprefix("transfers/") for result in answer.results if result.transfer.name}
    assert len(made) == 4

    new = [r for r in await _records(harness) if '"reference":"batch-' in r.details_json]
    assert sorted((r.action, r.outcome, r.resource) for r in new) == [
        ("transfer.create", "PENDING", "transfers"),
        ("transfer.create", "POSTED", "transfers"),
    ]
    listed = {r.outcome: json.loads(r.details_json)["transfers"] for r in new}
    assert sorted(t["amount_minor"] for t in listed["POSTED"]) == [10, 30]
    assert sorted(t["amount_minor"] for t in listed["PENDING"]) == [20, 40]
    assert {t["id"] for ts in listed.values() for t in ts} == made  # every transfer made, none refused
    assert all(t["debit_account"] and t["reference"].startswith("batch-") for ts in listed.values() for t in ts)
