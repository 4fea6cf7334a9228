"""RED metrics per rpc through a real in-process grpc.aio server, and the business helpers."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf import wrappers_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from meshlib import errors as e
from meshlib.config import ServerSettings
from meshlib.grpc_errors import ErrorMappingInterceptor
from meshlib.metrics import MetricsInterceptor, RpcMetrics, split_method
from meshlib.server import ServiceRegistration, create_server

SERVICE = "openbank.test.v1.EchoService"


class EchoServicer:
    """Answers according to the request value: ok, bad field, crash, abort, or a stream."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.entered = asyncio.Event()

    async def echo(
        self, request: wrappers_pb2.StringValue, context: grpc.aio.ServicerContext
    ) -> wrappers_pb2.StringValue:
        if request.value == "":
            raise e.InvalidArgument.field("value", "required")
        if request.value == "boom":
            raise RuntimeError("unexpected")
        if request.value == "deny":
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "denied")
        if request.value == "slow":
            self.entered.set()
            await self.release.wait()
        return wrappers_pb2.StringValue(value=request.value)

    async def count(self, request: wrappers_pb2.StringValue, context: grpc.aio.ServicerContext):  # type: ignore[no-untyped-def]
        for index in range(3):
            yield wrappers_pb2.StringValue(value=str(index))
        if request.value == "boom":
            raise e.FailedPrecondition("stream broke", reason="INVALID_STATE")


def _registration(servicer: EchoServicer) -> ServiceRegistration:
    def add(servicer_: EchoServicer, server: grpc.aio.Server) -> None:
        handlers = {
            "Echo": grpc.unary_unary_rpc_method_handler(
                servicer_.echo,
                request_deserializer=wrappers_pb2.StringValue.FromString,
                response_serializer=wrappers_pb2.StringValue.SerializeToString,
            ),
            "Count": grpc.unary_stream_rpc_method_handler(
                servicer_.count,
                request_deserializer=wrappers_pb2.StringValue.FromString,
                response_serializer=wrappers_pb2.StringValue.SerializeToString,
            ),
        }
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])

    return ServiceRegistration(SERVICE, servicer, add)


@pytest.fixture(params=["outside-error-mapping", "inside-error-mapping"])
async def served(request):  # type: ignore[no-untyped-def]
    """A server with a fresh metrics registry, the interceptor placed outside or inside
    the error mapping (both must record the code the caller sees)."""
    registry = CollectorRegistry()
    interceptor = MetricsInterceptor(RpcMetrics(registry), process="echo")
    servicer = EchoServicer()
    settings = ServerSettings(service_name="echo", port=0)
    if request.param == "inside-error-mapping":
        server, port = await create_server(settings, [_registration(servicer)], interceptors=[interceptor])
        stop = server.stop
    else:
        raw = grpc.aio.server(interceptors=[interceptor, ErrorMappingInterceptor("echo.openbank.dev")])
        _registration(servicer).add_to_server(servicer, raw)
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), raw)
        port = raw.add_insecure_port("127.0.0.1:0")
        await raw.start()
        stop = raw.stop
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield registry, channel, servicer
    finally:
        servicer.release.set()
        await channel.close()
        await stop(0)


def _echo(channel: grpc.aio.Channel):  # type: ignore[no-untyped-def]
    return channel.unary_unary(
        f"/{SERVICE}/Echo",
        request_serializer=wrappers_pb2.StringValue.SerializeToString,
        response_deserializer=wrappers_pb2.StringValue.FromString,
    )


def _count(channel: grpc.aio.Channel):  # type: ignore[no-untyped-def]
    return channel.unary_stream(
        f"/{SERVICE}/Count",
        request_serializer=wrappers_pb2.StringValue.SerializeToString,
        response_deserializer=wrappers_pb2.StringValue.FromString,
    )


def _requests(registry: CollectorRegistry, method: str, code: str) -> float:
    value = registry.get_sample_value(
        "openbank_rpc_requests_total", {"process": "echo", "service": SERVICE, "method": method, "code": code}
    )
    return value or 0.0


async def _recorded(registry: CollectorRegistry, method: str) -> None:
    """Wait until the server has recorded its calls of ``method``.

    The caller has the status as soon as it is on the wire; the server's interceptor records
    when its coroutine next runs, in one step (in-flight down, duration, count), so an
    in-flight gauge back at zero means every call is counted.
    """
    labels = {"process": "echo", "service": SERVICE, "method": method}
    for _ in range(400):
        if not registry.get_sample_value("openbank_rpc_in_flight", labels):
            return
        await asyncio.sleep(0.005)


async def test_ok_and_error_calls_are_counted_with_the_code_the_caller_sees(served) -> None:  # type: ignore[no-untyped-def]
    registry, channel, _ = served
    echo = _echo(channel)
    for _ in range(2):
        await echo(wrappers_pb2.StringValue(value="hi"))
    expected = {
        "": grpc.StatusCode.INVALID_ARGUMENT,
        "boom": grpc.StatusCode.INTERNAL,
        "deny": grpc.StatusCode.PERMISSION_DENIED,
    }
    for value, code in expected.items():
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await echo(wrappers_pb2.StringValue(value=value))
        assert raised.value.code() == code

    await _recorded(registry, "Echo")
    assert _requests(registry, "Echo", "OK") == 2
    for code in expected.values():
        assert _requests(registry, "Echo", code.name) == 1
    labels = {"process": "echo", "service": SERVICE, "method": "Echo"}
    assert registry.get_sample_value("openbank_rpc_duration_seconds_count", labels) == 5
    assert registry.get_sample_value("openbank_rpc_duration_seconds_bucket", {**labels, "le": "10.0"}) == 5
    assert registry.get_sample_value("openbank_rpc_in_flight", labels) == 0


async def test_server_streams_are_counted_when_they_end(served) -> None:  # type: ignore[no-untyped-def]
    registry, channel, _ = served
    count = _count(channel)
    assert [m.value async for m in count(wrappers_pb2.StringValue(value="x"))] == ["0", "1", "2"]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in count(wrappers_pb2.StringValue(value="boom")):
            pass
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    await _recorded(registry, "Count")
    assert _requests(registry, "Count", "OK") == 1
    assert _requests(registry, "Count", "FAILED_PRECONDITION") == 1


async def test_in_flight_gauge_tracks_running_calls(served) -> None:  # type: ignore[no-untyped-def]
    registry, channel, servicer = served
    labels = {"process": "echo", "service": SERVICE, "method": "Echo"}
    call = asyncio.ensure_future(_echo(channel)(wrappers_pb2.StringValue(value="slow")))
    await asyncio.wait_for(servicer.entered.wait(), 5)
    assert registry.get_sample_value("openbank_rpc_in_flight", labels) == 1
    servicer.release.set()
    await call
    assert registry.get_sample_value("openbank_rpc_in_flight", labels) == 0


async def test_health_checks_and_unknown_methods_are_not_counted(served) -> None:  # type: ignore[no-untyped-def]
    registry, channel, _ = served
    await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
    unknown = channel.unary_unary(f"/{SERVICE}/Nope")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await unknown(b"")
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
    samples = [s for family in registry.collect() for s in family.samples if s.name == "openbank_rpc_requests_total"]
    assert samples == []


def test_split_method() -> None:
    assert split_method("/openbank.payment.v1.PaymentService/CreatePayment") == (
        "openbank.payment.v1.PaymentService",
        "CreatePayment",
    )
    assert split_method("garbage") == ("unknown", "garbage")
