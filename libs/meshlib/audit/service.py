"""The audit trail as every service serves it: the AuditService rpcs, and the sealing and
retention job every replica runs."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import grpc
from google.protobuf import timestamp_pb2

from meshlib.audit.store import AuditFilter, AuditStore
from meshlib.pagination import decode_page_token, encode_page_token, filter_fingerprint, page_size
from meshlib.periodic import Periodic
from meshlib.server import ServiceRegistration
from meshlib.storage.database import as_utc
from openbank.common.v1 import audit_pb2, audit_pb2_grpc

AUDIT_SERVICE = "openbank.common.v1.AuditService"
# Retention runs at most this often; sealing at every tick.
PURGE_EVERY_SECONDS = 3600.0


def _timestamp(value: dt.datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(as_utc(value))
    return stamp


def record_message(row: dict[str, Any]) -> audit_pb2.AuditRecord:
    """One stored record as the rpc answers it."""
    return audit_pb2.AuditRecord(
        sequence=int(row["chain_sequence"] or 0),
        service=row["service"],
        occur_time=_timestamp(row["occurred_at"]),
        action=row["action"],
        outcome=row["outcome"],
        resource=row["resource"],
        actor=row["actor"],
        actor_kind=row["actor_kind"],
        client_id=row["client_id"] or "",
        partner=row["partner_id"] or "",
        customer=row["customer_id"] or "",
        consent=row["consent_id"] or "",
        payment=row["payment_id"] or "",
        trace_id=row["trace_id"] or "",
        interaction_id=row["interaction_id"] or "",
        details_json=row["details"],
        previous_hash=row["previous_hash"] or "",
        hash=row["record_hash"] or "",
    )


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    """ListAuditRecords and VerifyAuditChain over this service's trail (scope ``audit:read``)."""

    def __init__(self, store: AuditStore) -> None:
        self._store = store

    async def ListAuditRecords(
        self, request: audit_pb2.ListAuditRecordsRequest, context: grpc.aio.ServicerContext
    ) -> audit_pb2.ListAuditRecordsResponse:
        """Newest first, filtered, keyset-paginated."""
        filters = AuditFilter(
            partner_id=request.partner,
            consent_id=request.consent,
            payment_id=request.payment,
            actor=request.actor,
            action_prefix=request.action_prefix,
            start=request.start_time.ToDatetime(dt.UTC) if request.HasField("start_time") else None,
            end=request.end_time.ToDatetime(dt.UTC) if request.HasField("end_time") else None,
        )
        size = page_size(request.page_size)
        fingerprint = filter_fingerprint(
            listing="audit",
            **{k: v.isoformat() if isinstance(v, dt.datetime) else v for k, v in filters.__dict__.items()},
        )
        cursor = decode_page_token(request.page_token, fingerprint)
        before = int(cursor["id"]) if cursor else None
        rows = await self._store.page(filters, before_id=before, limit=size + 1)
        page, more = rows[:size], len(rows) > size
        token = encode_page_token({"id": page[-1]["id"]}, fingerprint) if more else ""
        return audit_pb2.ListAuditRecordsResponse(records=[record_message(r) for r in page], next_page_token=token)

    async def VerifyAuditChain(
        self, request: audit_pb2.VerifyAuditChainRequest, context: grpc.aio.ServicerContext
    ) -> audit_pb2.VerifyAuditChainResponse:
        """Recompute the chain of every sealed record kept."""
        anchor = (request.anchor_sequence, request.anchor_hash) if request.anchor_sequence > 0 else None
        report = await self._store.verify(anchor=anchor)
        return audit_pb2.VerifyAuditChainResponse(
            intact=report.intact,
            checked_count=report.checked,
            unsealed_count=report.unsealed,
            head_sequence=report.head_sequence,
            head_hash=report.head_hash,
            problems=report.problems,
        )


def audit_registration(store: AuditStore) -> ServiceRegistration:
    """The AuditService of a process, to add to its registrations."""
    return ServiceRegistration(AUDIT_SERVICE, AuditServicer(store), audit_pb2_grpc.add_AuditServiceServicer_to_server)


def audit_keeper(store: AuditStore, *, seal_seconds: float, retention_days: int) -> Periodic:
    """The background job: seal new records each tick; purge past retention hourly
    (``retention_days`` 0 keeps everything)."""
    last_purge = 0.0

    async def tick() -> None:
        nonlocal last_purge
        while await store.seal() > 0:
            pass
        now = time.monotonic()
        if retention_days > 0 and now - last_purge >= PURGE_EVERY_SECONDS:
            last_purge = now
            await store.purge(dt.datetime.now(dt.UTC) - dt.timedelta(days=retention_days))

    return Periodic(f"audit-keeper-{store.service}", seal_seconds, tick)
