"""Identity's audit trail over gRPC: an operator's change recorded with the operator's identity
(from its token), readable and verifiable by an auditor through AuditService."""

from __future__ import annotations

import json

import grpc
import sqlalchemy as sa

from openbank.common.v1 import audit_pb2, audit_pb2_grpc
from openbank.identity.v1 import partner_pb2
from tests.integration.identity.harness import Identity, bearer, failure, pkce_pair, request_id


async def test_an_operator_action_is_recorded_with_the_operators_identity(identity: Identity) -> None:
    partner = await identity.register_partner()
    await identity.partners.SuspendPartner(
        partner_pb2.SuspendPartnerRequest(request_id=request_id(), name=partner.name),
        metadata=await identity.admin(),
    )
    audit = audit_pb2_grpc.AuditServiceStub(identity.channel)
    auditor = bearer(await identity.service_token("auditor"))
    answer = await audit.ListAuditRecords(
        audit_pb2.ListAuditRecordsRequest(partner=partner.partner_id, action_prefix="partner."), metadata=auditor
    )
    assert [r.action for r in answer.records] == ["partner.suspend", "partner.register"]
    suspend = answer.records[0]
    assert (suspend.actor, suspend.actor_kind, suspend.client_id) == ("service:ops-admin", "operator", "ops-admin")
    assert suspend.resource == f"partners/{partner.partner_id}" and suspend.service == "identity"
    assert json.loads(suspend.details_json)["status"] == "SUSPENDED"
    # The call's interaction id always; its trace id when tracing is on (none in this test).
    assert suspend.interaction_id and suspend.trace_id == "" and suspend.occur_time.seconds > 0

    # Chained by the sealer (every second; here at once), then verified intact.
    await identity.server.audit.seal()
    verified = await audit.VerifyAuditChain(audit_pb2.VerifyAuditChainRequest(), metadata=auditor)
    assert verified.intact and verified.unsealed_count == 0 and verified.checked_count >= 2
    sealed = await audit.ListAuditRecords(audit_pb2.ListAuditRecordsRequest(page_size=1), metadata=auditor)
    assert sealed.records[0].sequence == verified.head_sequence and sealed.records[0].hash == verified.head_hash
    assert sealed.next_page_token

    # An edit behind the service's back breaks the chain.
    tables = identity.server.audit.tables
    async with identity.server.runtime.database.engine.begin() as connection:
        await connection.execute(
            tables.records.update().where(tables.records.c.action == "partner.suspend").values(actor="service:nobody")
        )
    tampered = await audit.VerifyAuditChain(audit_pb2.VerifyAuditChainRequest(), metadata=auditor)
    assert not tampered.intact and any("hash mismatch (edited)" in p for p in tampered.problems)


async def test_consent_changes_record_the_partner_and_the_customer(identity: Identity) -> None:
    partner = await identity.register_partner()
    _verifier, challenge = pkce_pair()
    consent = await identity.create_consent(partner, challenge)
    customer = await identity.create_customer()
    await identity.authorise(consent.name, customer)
    audit = audit_pb2_grpc.AuditServiceStub(identity.channel)
    consent_id = consent.name.removeprefix("consents/")
    answer = await audit.ListAuditRecords(
        audit_pb2.ListAuditRecordsRequest(consent=consent_id), metadata=bearer(await identity.service_token("auditor"))
    )
    assert [(r.action, r.outcome, r.actor_kind) for r in answer.records] == [
        ("consent.authorise", "AUTHORISED", "operator"),  # the bank's app, an internal client
        ("consent.create", "AWAITING_AUTHORISATION", "partner"),
    ]
    assert answer.records[1].actor == partner.partner_id and answer.records[1].partner == partner.partner_id
    assert answer.records[0].customer == customer.name.removeprefix("customers/")


async def test_the_audit_needs_the_audit_scope(identity: Identity) -> None:
    audit = audit_pb2_grpc.AuditServiceStub(identity.channel)
    assert await failure(
        audit.ListAuditRecords(audit_pb2.ListAuditRecordsRequest(), metadata=await identity.admin())
    ) == (grpc.StatusCode.PERMISSION_DENIED, "INSUFFICIENT_SCOPE")


async def test_a_refused_change_leaves_no_record(identity: Identity) -> None:
    partner = await identity.register_partner()
    records = identity.server.audit.tables.records
    async with identity.server.runtime.database.engine.connect() as connection:
        before = await connection.scalar(sa.select(sa.func.count()).select_from(records))
    # Refused inside the transaction (the partner is unknown): rolled back, nothing recorded.
    code, _ = await failure(
        identity.partners.SuspendPartner(
            partner_pb2.SuspendPartnerRequest(request_id=request_id(), name=partner.name + "x"),
            metadata=await identity.admin(),
        )
    )
    assert code == grpc.StatusCode.NOT_FOUND
    async with identity.server.runtime.database.engine.connect() as connection:
        assert await connection.scalar(sa.select(sa.func.count()).select_from(records)) == before
