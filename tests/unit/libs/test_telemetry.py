"""Tracing is paid for only when spans have somewhere to go."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from meshlib import telemetry


@pytest.fixture
def unconfigured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(telemetry, "_configured_provider", None)
    monkeypatch.setattr(telemetry.trace, "set_tracer_provider", lambda provider: None)  # keep the global clean


def test_without_an_exporter_nothing_is_installed(unconfigured: None) -> None:
    assert telemetry.configure_tracing("svc", otlp_endpoint=None) is None
    assert not telemetry.tracing_enabled()
    assert telemetry.server_interceptors() == []
    assert telemetry.client_interceptors() == []


def test_with_a_span_processor_servers_and_channels_are_instrumented(unconfigured: None) -> None:
    processor = SimpleSpanProcessor(InMemorySpanExporter())
    assert telemetry.configure_tracing("svc", extra_processors=[processor]) is not None
    assert telemetry.tracing_enabled()
    assert len(telemetry.server_interceptors()) == 1
    assert telemetry.client_interceptors()
