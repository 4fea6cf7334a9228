"""The gateway's audit trail: one record per routed call (or call to an unknown method),
never the token or the payload. Health and reflection calls are not decisions and are not
recorded.

Fields: method, who (partner, customer, consent, client), decision (allowed / denied /
unknown_method) and reason, the final gRPC status, latency, trace and interaction ids.
Each record is a log line (``openbank.audit``) and, durably, a line of this replica's
hash-chained audit file (:class:`meshlib.audit.AuditFileWriter`: the gateway keeps no
database, and a call must not wait on one; ``openbank-mesh audit verify --dir`` checks it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import grpc
from opentelemetry import trace

from gateway.policy import audit_var
from meshlib.audit import AuditFileWriter, actor_of
from meshlib.auth.context import Caller
from meshlib.errors import MeshError
from meshlib.grpc_errors import WrappingInterceptor, wrap_handler
from meshlib.logs import interaction_id_var

audit_log = logging.getLogger("openbank.audit")

# Calls that are no decision of the gateway: probes and discovery, not partner traffic.
UNAUDITED_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")

_KIND_CODES = {
    "invalid_argument": "INVALID_ARGUMENT",
    "not_found": "NOT_FOUND",
    "already_exists": "ALREADY_EXISTS",
    "failed_precondition": "FAILED_PRECONDITION",
    "permission_denied": "PERMISSION_DENIED",
    "unauthenticated": "UNAUTHENTICATED",
    "resource_exhausted": "RESOURCE_EXHAUSTED",
    "unavailable": "UNAVAILABLE",
    "aborted": "ABORTED",
    "deadline_exceeded": "DEADLINE_EXCEEDED",
    "internal": "INTERNAL",
}


def _emit(record: dict[str, Any], started: float, journal: AuditFileWriter | None = None) -> None:
    record["latency_ms"] = round((time.perf_counter() - started) * 1000, 3)
    # Decided by the checks when they ran; a call refused before them (a bad token) or a
    # failed call without a decision is denied, one that succeeded without is allowed.
    record.setdefault("decision", "allowed" if record.get("status") == "OK" else "denied")
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # not serving (a test calling in directly)
        _write(record, journal)
        return
    # Written on the loop's next turn, once grpc has sent the answer: formatting the record
    # (0.1-0.25 ms with the caches cold, at c1) is no longer part of the call's latency.
    # call_soon runs it in a copy of this call's context: it keeps its interaction and trace ids.
    loop.call_soon(_write, record, journal)


def _write(record: dict[str, Any], journal: AuditFileWriter | None = None) -> None:
    caller: Caller | None = record.pop("caller", None)
    audit_log.info("gateway call", extra={"audit": True, **record})
    if journal is not None:
        journal.append(_chained(record, caller))


def _chained(record: dict[str, Any], caller: Caller | None) -> dict[str, Any]:
    """The record as the audit file chains it (who from the verified token, when known)."""
    actor = actor_of(caller, "gateway") if caller is not None else None
    span = trace.get_current_span().get_span_context()
    return {
        "service": "gateway",
        "action": "gateway.call",
        "outcome": record.get("status", ""),
        "resource": record.get("method", ""),
        "actor": actor.subject if actor else "anonymous",
        "actor_kind": actor.kind if actor else "anonymous",
        "client_id": actor.client_id if actor else None,
        "partner_id": actor.partner_id if actor else None,
        "customer_id": actor.customer_id if actor else None,
        "consent_id": actor.consent_id if actor else None,
        "trace_id": format(span.trace_id, "032x") if span.is_valid else None,
        "interaction_id": interaction_id_var.get(),
        "details": {key: record[key] for key in ("decision", "reason", "latency_ms") if record.get(key) is not None},
    }


def _status_of(error: BaseException, context: grpc.aio.ServicerContext) -> str:
    if isinstance(error, GeneratorExit | asyncio.CancelledError):
        return "CANCELLED"
    if isinstance(error, MeshError):
        return _KIND_CODES.get(error.kind.value, "INTERNAL")
    code = context.code() if hasattr(context, "code") else None
    if isinstance(code, grpc.StatusCode):
        return code.name
    return "UNKNOWN"


class AuditInterceptor(WrappingInterceptor):
    """Outermost of the gateway's own interceptors: sees every decision and final status."""

    def __init__(self, journal: AuditFileWriter | None = None) -> None:
        self._journal = journal

    def wrap(
        self, handler: grpc.RpcMethodHandler | None, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        """Record the call's decision and status when it ends."""
        method = handler_call_details.method
        if handler is None:
            _emit(
                {"method": method, "decision": "unknown_method", "status": "UNIMPLEMENTED"},
                time.perf_counter(),
                self._journal,
            )
            return None
        if method.startswith(UNAUDITED_PREFIXES):
            return handler
        return wrap_handler(handler, lambda behavior: self._wrap(behavior, method))

    def _wrap(self, behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
        def begin() -> tuple[dict[str, Any], float]:
            record: dict[str, Any] = {"method": method}
            audit_var.set(record)
            return record, time.perf_counter()

        def fail(record: dict[str, Any], error: BaseException, context: grpc.aio.ServicerContext) -> None:
            if isinstance(error, MeshError):
                record.setdefault("reason", error.reason)
            record["status"] = _status_of(error, context)

        if getattr(behavior, "_meshlib_streaming", False):

            async def streaming(request: Any, context: grpc.aio.ServicerContext) -> Any:
                record, started = begin()
                try:
                    async for item in behavior(request, context):
                        yield item
                    record["status"] = "OK"
                except BaseException as error:
                    fail(record, error, context)
                    raise
                finally:
                    _emit(record, started, self._journal)

            streaming._meshlib_streaming = True  # type: ignore[attr-defined]
            return streaming

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            record, started = begin()
            try:
                response = await behavior(request, context)
                record["status"] = "OK"
                return response
            except BaseException as error:
                fail(record, error, context)
                raise
            finally:
                _emit(record, started, self._journal)

        return unary
