"""OpenTelemetry set up once per process.

Off unless something consumes spans: with an OTLP endpoint configured (or span processors
given, as the tests do), spans are batched to it and the gRPC aio client and server are
instrumented through interceptors so that one partner call is one trace across every hop.
Without one, no tracer provider and no tracing interceptors are installed: recording spans
nobody exports cost about a sixth of the gateway's CPU per call (docs/benchmarks.md).
"""

from __future__ import annotations

import logging
from typing import Any

import grpc
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

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
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
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
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    return [aio_server_interceptor()]


def client_interceptors() -> list[Any]:
    """Interceptors that open a client span per outgoing call and propagate the context (none when off)."""
    if not tracing_enabled():
        return []
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    return list(aio_client_interceptors())


def tracer(name: str) -> trace.Tracer:
    """A tracer for manual spans (saga steps, database work)."""
    return trace.get_tracer(name)
