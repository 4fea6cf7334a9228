"""The audit log: one structured record per gateway call, never the token or the payload.

Fields: method, partner, consent, decision (allowed / denied / unknown_method) and reason,
the final gRPC status, latency, and (added by the log formatter) trace and interaction ids.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import grpc

from gateway.policy import audit_var
from meshlib.errors import MeshError
from meshlib.grpc_errors import WrappingInterceptor, wrap_handler

audit_log = logging.getLogger("openbank.audit")

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


def _emit(record: dict[str, Any], started: float) -> None:
    record["latency_ms"] = round((time.perf_counter() - started) * 1000, 3)
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # not serving (a test calling in directly)
        _write(record)
        return
    # Written on the loop's next turn, once grpc has sent the answer: formatting the record
    # (0.1-0.25 ms with the caches cold, at c1) is no longer part of the call's latency.
    # call_soon runs it in a copy of this call's context: it keeps its interaction and trace ids.
    loop.call_soon(_write, record)


def _write(record: dict[str, Any]) -> None:
    audit_log.info("gateway call", extra={"audit": True, **record})


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

    def wrap(
        self, handler: grpc.RpcMethodHandler | None, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        """Record the call's decision and status when it ends."""
        method = handler_call_details.method
        if handler is None:
            _emit({"method": method, "decision": "unknown_method", "status": "UNIMPLEMENTED"}, time.perf_counter())
            return None
        return wrap_handler(handler, lambda behavior: self._wrap(behavior, method))

    def _wrap(self, behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
        def begin() -> tuple[dict[str, Any], float]:
            record: dict[str, Any] = {"method": method, "decision": "denied"}
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
                    _emit(record, started)

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
                _emit(record, started)

        return unary
