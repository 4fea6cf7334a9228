"""The one mapping from domain errors to gRPC: ``google.rpc.Status`` with ``ErrorInfo``.

Servers install :class:`ErrorMappingInterceptor`; anything unexpected becomes INTERNAL with
reason ``INTERNAL_ERROR`` and no exception text, logged with the trace id. Clients turn an
``AioRpcError`` back into a :class:`~meshlib.errors.MeshError` with :func:`decode_rpc_error`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from opentelemetry import trace

from meshlib import errors as e
from meshlib.faults import as_unavailable
from meshlib.logs import interaction_id_var

log = logging.getLogger("meshlib.errors")

STATUS_DETAILS_KEY = "grpc-status-details-bin"
DEFAULT_UNAVAILABLE_RETRY_SECONDS = 0.5

_CODES: dict[e.ErrorKind, grpc.StatusCode] = {
    e.ErrorKind.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    e.ErrorKind.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    e.ErrorKind.ALREADY_EXISTS: grpc.StatusCode.ALREADY_EXISTS,
    e.ErrorKind.FAILED_PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
    e.ErrorKind.OUT_OF_RANGE: grpc.StatusCode.OUT_OF_RANGE,
    e.ErrorKind.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    e.ErrorKind.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    e.ErrorKind.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    e.ErrorKind.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    e.ErrorKind.ABORTED: grpc.StatusCode.ABORTED,
    e.ErrorKind.DEADLINE_EXCEEDED: grpc.StatusCode.DEADLINE_EXCEEDED,
    e.ErrorKind.INTERNAL: grpc.StatusCode.INTERNAL,
}
_KINDS = {code: kind for kind, code in _CODES.items()}
_ERROR_CLASSES: dict[e.ErrorKind, type[e.MeshError]] = {
    e.ErrorKind.INVALID_ARGUMENT: e.InvalidArgument,
    e.ErrorKind.NOT_FOUND: e.NotFound,
    e.ErrorKind.ALREADY_EXISTS: e.AlreadyExists,
    e.ErrorKind.FAILED_PRECONDITION: e.FailedPrecondition,
    e.ErrorKind.OUT_OF_RANGE: e.OutOfRange,
    e.ErrorKind.PERMISSION_DENIED: e.PermissionDenied,
    e.ErrorKind.UNAUTHENTICATED: e.Unauthenticated,
    e.ErrorKind.RESOURCE_EXHAUSTED: e.ResourceExhausted,
    e.ErrorKind.UNAVAILABLE: e.Unavailable,
    e.ErrorKind.ABORTED: e.Aborted,
    e.ErrorKind.INTERNAL: e.MeshError,
}


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _duration(seconds: float) -> duration_pb2.Duration:
    whole = int(seconds)
    return duration_pb2.Duration(seconds=whole, nanos=int((seconds - whole) * 1e9))


def to_rpc_status(error: e.MeshError, domain: str) -> tuple[grpc.StatusCode, status_pb2.Status]:
    """Build the ``google.rpc.Status`` (with ErrorInfo and fitting details) for a domain error."""
    code = _CODES[error.kind]
    status = status_pb2.Status(code=code.value[0], message=error.message)
    status.details.append(
        _pack(error_details_pb2.ErrorInfo(reason=error.reason, domain=domain, metadata=error.metadata))
    )
    if isinstance(error, e.InvalidArgument):
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                for v in error.violations
            ]
        )
        status.details.append(_pack(bad_request))
    if isinstance(error, e.ResourceExhausted) and error.violations:
        quota = error_details_pb2.QuotaFailure(
            violations=[
                error_details_pb2.QuotaFailure.Violation(subject=v.subject, description=v.description)
                for v in error.violations
            ]
        )
        status.details.append(_pack(quota))
    retry_after = getattr(error, "retry_after_seconds", None)
    if retry_after is None and error.kind is e.ErrorKind.UNAVAILABLE:
        retry_after = DEFAULT_UNAVAILABLE_RETRY_SECONDS  # every UNAVAILABLE says when to retry
    if retry_after is not None:
        status.details.append(_pack(error_details_pb2.RetryInfo(retry_delay=_duration(retry_after))))
    return code, status


def internal_status(domain: str) -> tuple[grpc.StatusCode, status_pb2.Status]:
    """The one answer for an unexpected failure: no exception text, just a stable reason."""
    return to_rpc_status(e.MeshError("internal error", reason="INTERNAL_ERROR"), domain)


def status_trailers(status: status_pb2.Status) -> tuple[tuple[str, bytes], ...]:
    """Trailing metadata that carries a packed ``google.rpc.Status``."""
    return ((STATUS_DETAILS_KEY, status.SerializeToString()),)


async def abort_with(
    context: grpc.aio.ServicerContext,
    code: grpc.StatusCode,
    status: status_pb2.Status,
    extra_trailers: tuple[tuple[str, str], ...] = (),
) -> None:
    """Abort the call with a rich status (raises)."""
    await context.abort(code, status.message, status_trailers(status) + tuple(extra_trailers))


def decode_status(trailing_metadata: Any) -> status_pb2.Status | None:
    """Extract the packed ``google.rpc.Status`` from trailing metadata, if any."""
    for key, value in trailing_metadata or ():
        if key == STATUS_DETAILS_KEY:
            status = status_pb2.Status()
            status.ParseFromString(value)
            return status
    return None


def error_info(status: status_pb2.Status | None) -> error_details_pb2.ErrorInfo | None:
    """The ErrorInfo detail of a status, if present."""
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None


def decode_rpc_error(error: grpc.aio.AioRpcError) -> e.MeshError:
    """Turn a failed call from another service back into a domain error (reason preserved)."""
    status = decode_status(error.trailing_metadata())
    info = error_info(status)
    kind = _KINDS.get(
        error.code(), e.ErrorKind.UNAVAILABLE if error.code() == grpc.StatusCode.CANCELLED else e.ErrorKind.INTERNAL
    )
    reason = info.reason if info else ("SERVICE_UNAVAILABLE" if kind is e.ErrorKind.UNAVAILABLE else "INTERNAL_ERROR")
    metadata = dict(info.metadata) if info else {}
    message = error.details() or reason
    if kind is e.ErrorKind.INVALID_ARGUMENT:
        violations = []
        if status is not None:
            for detail in status.details:
                if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                    bad = error_details_pb2.BadRequest()
                    detail.Unpack(bad)
                    violations = [e.FieldViolation(v.field, v.description) for v in bad.field_violations]
        return e.InvalidArgument(violations or [e.FieldViolation(metadata.get("field", ""), message)], reason=reason)
    if kind is e.ErrorKind.DEADLINE_EXCEEDED:
        return e.Unavailable(message, reason="DEADLINE_EXCEEDED", metadata=metadata)
    error_class = _ERROR_CLASSES.get(kind, e.MeshError)
    decoded = error_class(message, reason=reason, metadata=metadata)
    decoded.kind = kind
    return decoded


def encode_item_reason(reason: str | None) -> int:
    """The ``error_reason`` of one batch item: UNSPECIFIED (success) only when there is no reason.

    A refusal whose reason the contract lacks becomes INTERNAL_ERROR, never UNSPECIFIED, which a
    batch caller would read as success.
    """
    from openbank.common.v1 import error_reason_pb2

    if not reason:
        return error_reason_pb2.ERROR_REASON_UNSPECIFIED
    try:
        return error_reason_pb2.ErrorReason.Value(f"ERROR_REASON_{reason}")
    except ValueError:
        return error_reason_pb2.ERROR_REASON_INTERNAL_ERROR


def decode_item_error(reason_value: int, message: str) -> e.MeshError:
    """The domain error of one failed item of a batch rpc (its ``error_reason`` and message).

    An item's result carries only its reason; what a caller branches on follows from it: retry
    later (the outcome is unknown, as for a reason this build does not know), not there, or
    refused by a rule.
    """
    from openbank.common.v1 import error_reason_pb2

    known = reason_value in error_reason_pb2.ErrorReason.values()
    reason = error_reason_pb2.ErrorReason.Name(reason_value).removeprefix("ERROR_REASON_") if known else ""
    text = message or reason or "unknown item failure"
    if reason in e.FAULT_REASONS:
        return e.Unavailable(text, reason=reason)
    if reason in ("INTERNAL_ERROR", "", "UNSPECIFIED"):
        return e.MeshError(text, reason="INTERNAL_ERROR")
    if reason == "RESOURCE_NOT_FOUND":
        return e.NotFound(text, reason=reason)
    if reason == "FIELD_INVALID":
        return e.InvalidArgument([e.FieldViolation("", text)], reason=reason)
    return e.FailedPrecondition(text, reason=reason)


Handler = Callable[..., Any]


class WrappingInterceptor(grpc.aio.ServerInterceptor):
    """A server interceptor that only wraps the handler it is given (no awaits of its own).

    Subclasses implement :meth:`wrap`. Used alone it is an ordinary interceptor; several run
    as one :class:`InterceptorPipeline`, which saves grpc's per-interceptor continuation
    round (a coroutine and a lookup per layer per call) and builds each method's wrapped
    handler once. So :meth:`wrap` may depend on the method and the handler only: anything
    of the call itself (its metadata, its peer) is read from the ``context`` the wrapped
    behaviour is given.
    """

    def wrap(
        self, handler: grpc.RpcMethodHandler | None, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        """The handler to run for calls of this method (``handler`` is None for an unknown method)."""
        raise NotImplementedError

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        return self.wrap(await continuation(handler_call_details), handler_call_details)


class InterceptorPipeline(grpc.aio.ServerInterceptor):
    """Several wrapping interceptors as one: the first listed is the outermost.

    A method's wrapped handler is built on its first call and reused while the server
    resolves the method to the same handler (registered and generic handlers are built once);
    an unknown method is never cached, so every stage hears of each one.
    """

    def __init__(self, stages: Iterable[WrappingInterceptor]) -> None:
        self._inner_first = list(stages)[::-1]
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler | None]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is not None:
            cached = self._wrapped.get(handler_call_details.method)
            if cached is not None and cached[0] is handler:
                return cached[1]
        wrapped = handler
        for stage in self._inner_first:
            wrapped = stage.wrap(wrapped, handler_call_details)
        if handler is not None:
            self._wrapped[handler_call_details.method] = (handler, wrapped)
        return wrapped


class ErrorMappingInterceptor(WrappingInterceptor):
    """Server interceptor: domain errors -> rich status; anything else -> opaque INTERNAL."""

    def __init__(self, domain: str) -> None:
        self._domain = domain

    def wrap(
        self, handler: grpc.RpcMethodHandler | None, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        """Map whatever the handler raises to the call's status."""
        if handler is None:
            return handler
        method = handler_call_details.method
        return wrap_handler(
            handler,
            lambda behavior: self._wrap(behavior, method),
            wrap_deserializer=_lenient_deserializer,
        )

    async def _fail(self, context: grpc.aio.ServicerContext, method: str, exc: BaseException) -> None:
        extra: tuple[tuple[str, str], ...] = ()
        if isinstance(exc, e.MeshError):
            code, status = to_rpc_status(exc, self._domain)
            extra = exc.trailers
            if exc.kind is e.ErrorKind.INTERNAL:
                log.error("internal error in %s: %s", method, exc.reason)
        elif (fault := as_unavailable(exc)) is not None:
            # A lost store or peer is a fault to retry, not a bug: UNAVAILABLE with RetryInfo.
            log.warning(
                "%s in %s: %s",
                fault.reason,
                method,
                type(exc).__name__,
                extra={"interaction_id": interaction_id_var.get()},
            )
            code, status = to_rpc_status(fault, self._domain)
        else:
            log.error(
                "unexpected error in %s",
                method,
                exc_info=exc,
                extra={"interaction_id": interaction_id_var.get()},
            )
            # Only a bug's stack trace goes on the span; refusals and faults are its status.
            span = trace.get_current_span()
            if span.is_recording():
                span.record_exception(exc)
            code, status = internal_status(self._domain)
        await abort_with(context, code, status, extra)

    def _wrap(self, behavior: Handler, method: str) -> Handler:
        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                _reject_malformed(request)
                return await behavior(request, context)
            except grpc.aio.AbortError:
                raise
            except Exception as exc:  # the one place that turns failures into statuses
                await self._fail(context, method, exc)

        async def streaming(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            try:
                _reject_malformed(request)
                async for item in behavior(request, context):
                    yield item
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await self._fail(context, method, exc)

        return streaming if getattr(behavior, "_meshlib_streaming", False) else unary


class MalformedRequest:
    """Stands in for a request whose bytes did not decode, so the handler can say so."""

    def __init__(self, message_type: str) -> None:
        self.message_type = message_type


def _lenient_deserializer(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None

    def decode(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception:
            return MalformedRequest(getattr(deserialize, "__qualname__", "request"))

    return decode


def _reject_malformed(request: Any) -> None:
    if isinstance(request, MalformedRequest):
        raise e.InvalidArgument.field("request", "the message could not be decoded; check the protobuf type")


def wrap_handler(
    handler: grpc.RpcMethodHandler,
    wrap: Callable[[Handler], Handler],
    *,
    wrap_deserializer: Callable[[Any], Any] | None = None,
) -> grpc.RpcMethodHandler:
    """Return a copy of ``handler`` whose behaviour is wrapped (all four call shapes)."""
    deserializer = handler.request_deserializer
    if wrap_deserializer is not None and (handler.unary_unary or handler.unary_stream):
        deserializer = wrap_deserializer(deserializer)
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(wrap(handler.unary_unary), deserializer, handler.response_serializer)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            wrap(_mark_streaming(handler.unary_stream)), deserializer, handler.response_serializer
        )
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(
            wrap(handler.stream_unary), handler.request_deserializer, handler.response_serializer
        )
    if handler.stream_stream:
        return grpc.stream_stream_rpc_method_handler(
            wrap(_mark_streaming(handler.stream_stream)), handler.request_deserializer, handler.response_serializer
        )
    return handler


def _mark_streaming(behavior: Handler) -> Handler:
    """Tag a behaviour as response-streaming so wrappers yield instead of return."""

    def marked(request: Any, context: grpc.aio.ServicerContext) -> Any:
        return behavior(request, context)

    marked._meshlib_streaming = True  # type: ignore[attr-defined]
    return marked
