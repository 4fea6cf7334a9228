"""A payment in the audit trails of the three services that move its money: created by the
partner (from its token, also through the group commit), every state change by the saga, the
hold and posting at account, the reservation and commit at settlement; chains intact."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from openbank.common.v1 import audit_pb2, audit_pb2_grpc
from openbank.payment.v1 import payment_pb2
from tests.integration.payment.mesh import Mesh, running_mesh, standard_mesh


@pytest.fixture(params=["batched", "plain"])
async def mesh(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Mesh]:
    urls = {n: f"sqlite+aiosqlite:///{tmp_path / f'{n}.db'}" for n in ("account", "settlement", "payment")}
    async with running_mesh(urls, payment_batching=request.param == "batched") as running:
        yield await standard_mesh(running)


async def _records(mesh: Mesh, service: str, payment_id: str) -> list[audit_pb2.AuditRecord]:
    auditor = (("authorization", f"Bearer {mesh.issuer.token('service:auditor', scopes=['audit:read'])}"),)
    stub = audit_pb2_grpc.AuditServiceStub(mesh.channels[service])
    if service == "account":  # the ledger knows the payment by its transfers' reference only
        answer = await stub.ListAuditRecords(
            audit_pb2.ListAuditRecordsRequest(action_prefix="transfer."), metadata=auditor
        )
        records = [r for r in answer.records if payment_id in r.details_json]
    else:
        answer = await stub.ListAuditRecords(audit_pb2.ListAuditRecordsRequest(payment=payment_id), metadata=auditor)
        records = list(answer.records)
    verified = await stub.VerifyAuditChain(audit_pb2.VerifyAuditChainRequest(), metadata=auditor)
    assert verified.intact, verified.problems
    return list(reversed(records))  # oldest first


async def test_a_top_up_is_recorded_by_every_service_that_moves_its_money(mesh: Mesh) -> None:
    payment = await mesh.top_up(2_500)
    assert payment.state == payment_pb2.PAYMENT_STATE_SETTLED
    payment_id = payment.name.removeprefix("payments/")
    for server in mesh.servers.values():
        await server.audit.seal()

    created, *moves = await _records(mesh, "payment", payment_id)
    assert (created.action, created.actor, created.actor_kind) == ("payment.create", "partner-1", "partner")
    assert (created.partner, created.consent, created.outcome) == ("partner-1", "c1", "ACCEPTED")
    assert json.loads(created.details_json)["amount_minor"] == 2_500
    assert [(r.action, r.outcome, r.actor) for r in moves][-1] == ("payment.state", "SETTLED", "system:payment")
    assert all(len(r.trace_id) == 32 for r in (created, *moves))  # the saga run's trace

    settlement = await _records(mesh, "settlement", payment_id)
    assert [r.action for r in settlement] == ["obligation.reserve", "obligation.commit"]
    assert all(r.actor == "service:payment" for r in settlement)
    ledger = await _records(mesh, "account", payment_id)
    assert [r.action for r in ledger] == ["transfer.create", "transfer.posted"]
