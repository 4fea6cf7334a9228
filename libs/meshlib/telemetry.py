"""OpenTelemetry set up once per process.

No-op by default (a tracer provider with no exporter costs almost nothing); with an OTLP
endpoint configured, spans are batched to it. The gRPC aio client and server are
instrumented through interceptors so that one partner call is one trace across every hop.
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
) -> TracerProvider:
    """Install the process's tracer provider (idempotent: the first call wins)."""
    global _configured_provider
    if _configured_provider is not None:
        return _configured_provider
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


def server_interceptors() -> list[grpc.aio.ServerInterceptor]:
    """Interceptors that open a server span per call, continuing the caller's trace."""
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    return [aio_server_interceptor()]


def client_interceptors() -> list[Any]:
    """Interceptors that open a client span per outgoing call and propagate the context."""
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    return list(aio_client_interceptors())


def tracer(name: str) -> trace.Tracer:
    """A tracer for manual spans (saga steps, database work)."""
    return trace.get_tracer(name)
