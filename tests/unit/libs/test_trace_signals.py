"""What a trace says: server spans follow the OpenTelemetry gRPC conventions (only server
failures are errors, refusals carry no stack trace), carry the call's partner, consent and
interaction ids; polls start no trace; the console log line names the trace."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

import grpc
import pytest
from google.protobuf import wrappers_pb2
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased
from opentelemetry.trace import SpanKind, StatusCode

from meshlib import errors as e
from meshlib import telemetry
from meshlib.auth.context import Caller, reset_caller, set_caller
from meshlib.grpc_errors import ErrorMappingInterceptor, InterceptorPipeline
from meshlib.logs import ConsoleFormatter, interaction_id_var
from meshlib.server import CallContextInterceptor
from meshlib.telemetry import (
    CONSENT_ID_ATTRIBUTE,
    INTERACTION_ID_ATTRIBUTE,
    PARTNER_ID_ATTRIBUTE,
    CallsAndWorkSampler,
    TracingInterceptor,
    internal_span,
)

SERVICE = "openbank.test.v1.TraceService"
FAILURES = {
    "bad": lambda: e.InvalidArgument.field("value", "bad"),
    "missing": lambda: e.NotFound("no such thing"),
    "refused": lambda: e.FailedPrecondition("not now", reason="NOT_NOW"),
    "denied": lambda: e.PermissionDenied("not yours", reason="NOT_YOURS"),
    "down": lambda: e.Unavailable("store lost", retry_after_seconds=1.0),
    "boom": lambda: RuntimeError("a bug"),
}


async def _echo(request: wrappers_pb2.StringValue, context: grpc.aio.ServicerContext) -> wrappers_pb2.StringValue:
    token = set_caller(
        Caller(
            subject="p-1",
            client_id="c-1",
            scopes=frozenset(),
            token_id="t-1",
            expires_at=dt.datetime.now(dt.UTC),
            partner_id="p-1",
            consent_id="consent-1",
        )
    )
    try:
        if request.value in FAILURES:
            raise FAILURES[request.value]()
        return request
    finally:
        reset_caller(token)


@pytest.fixture
def provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(root=CallsAndWorkSampler()))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


@pytest.fixture
async def echo(provider, monkeypatch):  # type: ignore[no-untyped-def]
    tracer_provider, exporter = provider
    monkeypatch.setattr(telemetry, "_configured_provider", tracer_provider)  # tracing on, as configured
    pipeline = InterceptorPipeline(
        [
            TracingInterceptor(tracer_provider=tracer_provider),
            CallContextInterceptor(),
            ErrorMappingInterceptor("trace.openbank.dev"),
        ]
    )
    server = grpc.aio.server(interceptors=[pipeline])
    handler = grpc.unary_unary_rpc_method_handler(
        _echo,
        request_deserializer=wrappers_pb2.StringValue.FromString,
        response_serializer=wrappers_pb2.StringValue.SerializeToString,
    )
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, {"Echo": handler})])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    call = channel.unary_unary(
        f"/{SERVICE}/Echo",
        request_serializer=wrappers_pb2.StringValue.SerializeToString,
        response_deserializer=wrappers_pb2.StringValue.FromString,
    )

    async def send(value: str) -> None:
        try:
            await call(wrappers_pb2.StringValue(value=value), metadata=(("x-fapi-interaction-id", f"iid-{value}"),))
        except grpc.aio.AioRpcError:
            pass
        # The server ends its span once the handler returns, which may be after the status
        # reached this client: wait for it (a span never ended still fails the test).
        for _ in range(500):  # 5 s at most
            if exporter.get_finished_spans():
                break
            await asyncio.sleep(0.01)

    yield send, exporter
    await channel.close()
    await server.stop(0)


@pytest.mark.parametrize(
    ("value", "code", "error"),
    [
        ("ok", grpc.StatusCode.OK, False),
        ("bad", grpc.StatusCode.INVALID_ARGUMENT, False),
        ("missing", grpc.StatusCode.NOT_FOUND, False),
        ("refused", grpc.StatusCode.FAILED_PRECONDITION, False),
        ("denied", grpc.StatusCode.PERMISSION_DENIED, False),
        ("down", grpc.StatusCode.UNAVAILABLE, True),
        ("boom", grpc.StatusCode.INTERNAL, True),
    ],
)
async def test_a_server_span_is_an_error_only_when_the_server_failed(echo, value, code, error) -> None:  # type: ignore[no-untyped-def]
    send, exporter = echo
    await send(value)
    (span,) = exporter.get_finished_spans()
    assert span.kind is SpanKind.SERVER and span.name == f"/{SERVICE}/Echo"
    assert span.attributes["rpc.grpc.status_code"] == code.value[0]
    assert (span.status.status_code is StatusCode.ERROR) == error
    # Only a bug leaves its stack trace; a refusal or a fault is the status alone.
    exceptions = [event for event in span.events if event.name == "exception"]
    if value == "boom":
        assert len(exceptions) == 1 and "RuntimeError" in exceptions[0].attributes["exception.type"]
    else:
        assert exceptions == []
    assert span.attributes[PARTNER_ID_ATTRIBUTE] == "p-1"
    assert span.attributes[CONSENT_ID_ATTRIBUTE] == "consent-1"
    assert span.attributes[INTERACTION_ID_ATTRIBUTE] == f"iid-{value}"


def test_polls_start_no_trace_but_calls_and_named_work_do(provider) -> None:  # type: ignore[no-untyped-def]
    tracer_provider, exporter = provider
    tracer = tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("db.transaction"):  # an idle loop's poll
        pass
    with tracer.start_as_current_span("/openbank.identity.v1.TokenService/IssueToken", kind=SpanKind.CLIENT):
        with tracer.start_as_current_span("db.transaction"):
            pass
    assert exporter.get_finished_spans() == ()
    with tracer.start_as_current_span("payment.saga"):  # a recovered saga: work worth a trace
        with tracer.start_as_current_span("db.transaction"):
            pass
        with tracer.start_as_current_span("/openbank.account.v1.LedgerService/PostTransfer", kind=SpanKind.CLIENT):
            pass
    with tracer.start_as_current_span("/openbank.payment.v1.PaymentService/CreatePayment", kind=SpanKind.SERVER):
        pass
    assert sorted(span.name for span in exporter.get_finished_spans()) == [
        "/openbank.account.v1.LedgerService/PostTransfer",
        "/openbank.payment.v1.PaymentService/CreatePayment",
        "db.transaction",
        "payment.saga",
    ]


def test_the_console_log_line_names_the_trace_and_interaction(provider) -> None:  # type: ignore[no-untyped-def]
    tracer_provider, _ = provider
    formatter = ConsoleFormatter("payment")
    record = logging.LogRecord("x", logging.INFO, "", 0, "payment accepted", (), None)
    assert "trace_id=" not in formatter.format(record)
    token = interaction_id_var.set("iid-42")
    try:
        with tracer_provider.get_tracer("test").start_as_current_span("/x.v1.S/M", kind=SpanKind.SERVER) as span:
            line = formatter.format(record)
    finally:
        interaction_id_var.reset(token)
    assert f"trace_id={span.get_span_context().trace_id:032x}" in line
    assert "interaction_id=iid-42" in line
    assert trace.get_current_span().get_span_context().is_valid is False


def test_a_unit_of_work_records_refusals_faults_and_bugs_as_a_server_span_does(provider) -> None:  # type: ignore[no-untyped-def]
    tracer_provider, exporter = provider
    outcomes = {}
    for name, failure in (("refused", FAILURES["refused"]), ("down", FAILURES["down"]), ("boom", FAILURES["boom"])):
        error = failure()
        with pytest.raises(type(error)), internal_span("test", name, tracer_provider=tracer_provider):
            raise error
        (span,) = exporter.get_finished_spans()
        exporter.clear()
        outcomes[name] = (span.status.status_code, [event.name for event in span.events])
    assert outcomes == {
        "refused": (StatusCode.UNSET, []),
        "down": (StatusCode.ERROR, []),
        "boom": (StatusCode.ERROR, ["exception"]),
    }
