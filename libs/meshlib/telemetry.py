"""OpenTelemetry set up once per process.

Off unless something consumes spans: with an OTLP endpoint configured (or span processors
given, as the tests do), spans are batched to it and the gRPC aio client and server are
instrumented through interceptors so that one partner call is one trace across every hop.
Without one, no tracer provider and no tracing interceptors are installed: recording spans
nobody exports cost about a sixth of the gateway's CPU per call (docs/benchmarks.md).

What a trace says, and what it leaves out:

* A trace starts at an incoming call or at a named unit of work (a recovered saga step).
  An idle background loop's bare database transaction or outgoing call starts none
  (:class:`CallsAndWorkSampler`): polling would otherwise be most of the traces.
* A server span's status follows the OpenTelemetry gRPC conventions: only the codes that
  mean the server failed (UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE,
  DATA_LOSS) are errors; a partner's INVALID_ARGUMENT or NOT_FOUND is not. A refusal is the
  span's status code, never an exception event; only an unexpected failure records its
  stack trace (the one error mapping does that).
* The partner, consent and interaction ids of the call are span attributes
  (:func:`annotate_call`), so a backend finds one partner's calls.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import grpc
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.util.types import Attributes

from meshlib import errors as e
from meshlib.grpc_errors import WrappingInterceptor, to_rpc_status, wrap_handler
from meshlib.metrics import code_of, final_code, split_method

log = logging.getLogger("meshlib.telemetry")

_configured_provider: TracerProvider | None = None


def configure_tracing(
    service_name: str,
    otlp_endpoint: str | None = None,
    extra_processors: list[SpanProcessor] | None = None,
) -> TracerProvider | None:
    """Install the process's tracer provider when spans have somewhere to go (the first call wins).

    Call it before building servers and channels: they are instrumented only when tracing is on.
    """
    global _configured_provider
    if _configured_provider is not None:
        return _configured_provider
    if not otlp_endpoint and not extra_processors:
        return None
    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name}), sampler=ParentBased(root=CallsAndWorkSampler())
    )
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint)))
        log.info("tracing to OTLP endpoint", extra={"otlp_endpoint": otlp_endpoint})
    for processor in extra_processors or []:
        provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    _configured_provider = provider
    return provider


def tracing_enabled() -> bool:
    """Whether this process exports spans (configure_tracing installed a provider)."""
    return _configured_provider is not None


def server_interceptors() -> list[grpc.aio.ServerInterceptor]:
    """Interceptors that open a server span per call, continuing the caller's trace (none when off)."""
    if not tracing_enabled():
        return []
    return [TracingInterceptor()]


def client_interceptors() -> list[Any]:
    """Interceptors that open a client span per outgoing call and propagate the context (none when off)."""
    if not tracing_enabled():
        return []
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    return list(aio_client_interceptors())


def tracer(name: str) -> trace.Tracer:
    """A tracer for manual spans (saga steps, database work)."""
    return trace.get_tracer(name)


# --- What starts a trace ------------------------------------------------------------------

# The span a unit of work opens around one database transaction (meshlib.storage.uow): as a
# root it is a background loop polling its store, mostly finding nothing.
DATABASE_TRANSACTION_SPAN = "db.transaction"


class CallsAndWorkSampler(Sampler):
    """The root sampler: incoming calls and named units of work start traces; polls do not.

    Used under ``ParentBased``: a child follows its parent, so a dropped poll's outgoing
    call is dropped at the peer too (the propagated context says "not sampled").
    """

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        """Drop a root outgoing call or a root bare database transaction; keep every other root."""
        if kind is SpanKind.CLIENT or name == DATABASE_TRANSACTION_SPAN:
            return SamplingResult(Decision.DROP)
        return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)

    def get_description(self) -> str:
        """The sampler's name in the SDK's own reports."""
        return "CallsAndWorkSampler"


# --- Server spans ---------------------------------------------------------------------------

# The codes for which the OpenTelemetry gRPC semantic conventions mark a server span as an
# error: the server failed. Every other code is the caller's problem (bad input, not found,
# refused) and leaves the status unset.
SERVER_ERROR_CODES = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
# Probes and tooling: their spans would be most of a quiet mesh's traces and tell nothing.
UNTRACED_SERVICES = frozenset({"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"})

PARTNER_ID_ATTRIBUTE = "openbank.partner.id"
CONSENT_ID_ATTRIBUTE = "openbank.consent.id"
INTERACTION_ID_ATTRIBUTE = "openbank.interaction.id"


def annotate_call(
    *, partner_id: str | None = None, consent_id: str | None = None, interaction_id: str | None = None
) -> None:
    """Put the call's partner, consent and interaction ids on the current span (when recording)."""
    if _configured_provider is None:  # tracing off: nothing records, skip the lookup on every call
        return
    span = trace.get_current_span()
    if not span.is_recording():
        return
    for key, value in (
        (PARTNER_ID_ATTRIBUTE, partner_id),
        (CONSENT_ID_ATTRIBUTE, consent_id),
        (INTERACTION_ID_ATTRIBUTE, interaction_id),
    ):
        if value:
            span.set_attribute(key, value)


@contextlib.contextmanager
def internal_span(
    tracer_name: str,
    name: str,
    attributes: Attributes = None,
    *,
    tracer_provider: trace.TracerProvider | None = None,
) -> Iterator[trace.Span]:
    """A span around a unit of work (a saga run) that records failures as a server span does:
    a refusal (a domain error a caller gets) is no error and leaves no stack trace; a fault
    is an error; a bug is an error with its stack trace."""
    with trace.get_tracer(tracer_name, tracer_provider=tracer_provider).start_as_current_span(
        name, attributes=attributes, record_exception=False, set_status_on_exception=False
    ) as span:
        try:
            yield span
        except e.MeshError as error:
            code = to_rpc_status(error, "")[0]
            if code in SERVER_ERROR_CODES:
                span.set_status(Status(StatusCode.ERROR, code.name))
            raise
        except Exception as error:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
            raise


def _incoming_context(context: grpc.aio.ServicerContext) -> Context:
    """The caller's trace context from the call's metadata (W3C traceparent)."""
    carrier: Mapping[str, Any] = {key: value for key, value in context.invocation_metadata() or ()}
    return propagate.extract(carrier)


def _finish(span: trace.Span, code: grpc.StatusCode) -> None:
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code in SERVER_ERROR_CODES:
        span.set_status(Status(StatusCode.ERROR, code.name))


class TracingInterceptor(WrappingInterceptor):
    """A server span per call, continuing the caller's trace; status by the gRPC conventions."""

    def __init__(
        self,
        untraced_services: Iterable[str] = UNTRACED_SERVICES,
        *,
        tracer_provider: trace.TracerProvider | None = None,
    ) -> None:
        self._tracer = trace.get_tracer("meshlib.server", tracer_provider=tracer_provider)
        self._untraced = frozenset(untraced_services)

    def wrap(
        self, handler: grpc.RpcMethodHandler | None, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        """Trace the calls of this method."""
        if handler is None:
            return handler
        full_method = handler_call_details.method
        service, method = split_method(full_method)
        if service in self._untraced:
            return handler
        attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}
        return wrap_handler(handler, lambda behavior: self._wrap(behavior, full_method, attributes))

    def _wrap(self, behavior: Callable[..., Any], name: str, attributes: dict[str, str]) -> Callable[..., Any]:
        tracer = self._tracer

        def start(context: grpc.aio.ServicerContext) -> Any:
            # No exception events and no automatic status: a refusal is a status code, set below.
            return tracer.start_as_current_span(
                name,
                context=_incoming_context(context),
                kind=SpanKind.SERVER,
                attributes=attributes,
                record_exception=False,
                set_status_on_exception=False,
            )

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            with start(context) as span:
                try:
                    response = await behavior(request, context)
                except BaseException as exc:
                    _finish(span, code_of(exc, context))
                    raise
                _finish(span, final_code(context))
                return response

        async def streaming(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            with start(context) as span:
                try:
                    async for item in behavior(request, context):
                        yield item
                except BaseException as exc:
                    _finish(span, code_of(exc, context))
                    raise
                _finish(span, final_code(context))

        if getattr(behavior, "_meshlib_streaming", False):
            streaming._meshlib_streaming = True  # type: ignore[attr-defined]
            return streaming
        return unary
