"""The shared server bootstrap over real sockets: health, reflection, rich errors, auth,
graceful shutdown."""

from __future__ import annotations

import asyncio
import gc

import grpc
import pytest
from google.protobuf import wrappers_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from meshlib import errors as e
from meshlib.auth.context import require_caller
from meshlib.auth.interceptor import AuthInterceptor
from meshlib.auth.testing import TestIssuer
from meshlib.config import ServerSettings
from meshlib.grpc_errors import decode_rpc_error, decode_status, error_info
from meshlib.policy import MethodPolicy
from meshlib.server import ServiceRegistration, create_server

SERVICE = "openbank.test.v1.EchoService"
ECHO = f"/{SERVICE}/Echo"


class EchoServicer:
    """A tiny servicer whose behaviour the tests steer through the request value."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def echo(
        self, request: wrappers_pb2.StringValue, context: grpc.aio.ServicerContext
    ) -> wrappers_pb2.StringValue:
        if request.value == "":
            raise e.InvalidArgument.field("value", "required")
        if request.value == "boom":
            raise RuntimeError("database password is hunter2")  # internals that must never leak
        if request.value == "slow":
            await self.release.wait()
        if request.value == "whoami":
            return wrappers_pb2.StringValue(value=require_caller().subject)
        return wrappers_pb2.StringValue(value=request.value)


def _registration(servicer: EchoServicer) -> ServiceRegistration:
    def add(servicer_: EchoServicer, server: grpc.aio.Server) -> None:
        handler = grpc.unary_unary_rpc_method_handler(
            servicer_.echo,
            request_deserializer=wrappers_pb2.StringValue.FromString,
            response_serializer=wrappers_pb2.StringValue.SerializeToString,
        )
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, {"Echo": handler})])

    return ServiceRegistration(SERVICE, servicer, add)


def _policy(requires_token: bool = True) -> MethodPolicy:
    return MethodPolicy(
        full_method=ECHO,
        service=SERVICE,
        method="Echo",
        visibility="INTERNAL",
        requires_token=requires_token,
        scopes=frozenset({"echo:use"}),
        consent_permission=None,
        rate_limit_class="internal",
        idempotency="READ_ONLY",
        client_streaming=False,
        server_streaming=False,
        input_type="google.protobuf.StringValue",
        output_type="google.protobuf.StringValue",
    )


@pytest.fixture
async def echo_server():  # type: ignore[no-untyped-def]
    issuer = TestIssuer()
    servicer = EchoServicer()
    settings = ServerSettings(service_name="echo", port=0, shutdown_grace_seconds=5)
    server, port = await create_server(
        settings, [_registration(servicer)], interceptors=[AuthInterceptor(issuer.verifier(), {ECHO: _policy()})]
    )
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    echo = channel.unary_unary(
        ECHO,
        request_serializer=wrappers_pb2.StringValue.SerializeToString,
        response_deserializer=wrappers_pb2.StringValue.FromString,
    )
    good = (("authorization", f"Bearer {issuer.token('svc', scopes=['echo:use'])}"),)
    try:
        yield server, port, channel, echo, good, servicer, issuer
    finally:
        servicer.release.set()
        await channel.close()
        await server.stop(0)


async def test_health_reports_serving_per_service_and_reflection_lists_it(echo_server) -> None:  # type: ignore[no-untyped-def]
    _, _, channel, *_ = echo_server
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", SERVICE):
        answer = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = [s.name async for r in responses for s in r.list_services_response.service]
    assert SERVICE in names and "grpc.health.v1.Health" in names


async def test_bad_field_is_invalid_argument_with_error_info(echo_server) -> None:  # type: ignore[no-untyped-def]
    *_, echo, good, _, _ = echo_server[2:]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await echo(wrappers_pb2.StringValue(value=""), metadata=good)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = error_info(decode_status(raised.value.trailing_metadata()))
    assert info is not None and info.reason == "FIELD_INVALID" and info.metadata["field"] == "value"
    assert info.domain == "echo.openbank.dev"


async def test_undecodable_bytes_are_invalid_argument_not_a_crash(echo_server) -> None:  # type: ignore[no-untyped-def]
    _, _, channel, _, good, _, _ = echo_server
    raw = channel.unary_unary(ECHO)  # no serializers: send raw bytes
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await raw(b"\xff\xff\xff\x0f garbage", metadata=good)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert decode_rpc_error(raised.value).violations[0].field == "request"
    # and the server keeps serving
    assert (await echo_server[3](wrappers_pb2.StringValue(value="hi"), metadata=good)).value == "hi"


async def test_unexpected_exception_is_internal_without_its_text(echo_server, caplog) -> None:  # type: ignore[no-untyped-def]
    _, _, _, echo, good, _, _ = echo_server
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await echo(wrappers_pb2.StringValue(value="boom"), metadata=good)
    assert raised.value.code() == grpc.StatusCode.INTERNAL
    assert "hunter2" not in (raised.value.details() or "")
    assert "RuntimeError" not in (raised.value.details() or "")
    status = decode_status(raised.value.trailing_metadata())
    assert b"hunter2" not in status.SerializeToString()
    assert error_info(status).reason == "INTERNAL_ERROR"


async def test_missing_wrong_scope_and_valid_tokens(echo_server) -> None:  # type: ignore[no-untyped-def]
    _, _, _, echo, good, _, issuer = echo_server
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await echo(wrappers_pb2.StringValue(value="x"))
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert decode_rpc_error(raised.value).reason == "TOKEN_MISSING"
    weak = (("authorization", f"Bearer {issuer.token('svc', scopes=['other'])}"),)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await echo(wrappers_pb2.StringValue(value="x"), metadata=weak)
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert decode_rpc_error(raised.value).reason == "INSUFFICIENT_SCOPE"
    assert (await echo(wrappers_pb2.StringValue(value="whoami"), metadata=good)).value == "svc"


async def test_graceful_shutdown_drains_in_flight_and_goes_not_serving(echo_server) -> None:  # type: ignore[no-untyped-def]
    server, port, channel, echo, good, servicer, _ = echo_server
    in_flight = asyncio.ensure_future(echo(wrappers_pb2.StringValue(value="slow"), metadata=good))
    await asyncio.sleep(0.2)
    stopping = asyncio.ensure_future(server.stop(5))
    await asyncio.sleep(0.2)
    health = health_pb2_grpc.HealthStub(channel)
    # The listener is closed for new connections; the existing one sees NOT_SERVING or refusal.
    with pytest.raises(grpc.aio.AioRpcError):
        fresh = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        try:
            await health_pb2_grpc.HealthStub(fresh).Check(health_pb2.HealthCheckRequest(), timeout=1)
        finally:
            await fresh.close()
    del health
    servicer.release.set()
    assert (await in_flight).value == "slow"  # drained, not cut off
    await asyncio.wait_for(stopping, 10)
    assert server.health is not None


async def test_a_serving_process_freezes_its_start_up_heap_out_of_the_collector(echo_server) -> None:  # type: ignore[no-untyped-def]
    server = echo_server[0]
    gc.unfreeze()
    serving = asyncio.ensure_future(server.serve_until_stopped())
    try:
        await asyncio.sleep(0.05)
        # Full collections would walk every start-up object again (tens of ms under load).
        assert gc.get_freeze_count() > 1000
    finally:
        await server.stop(0)
        await asyncio.wait_for(serving, 5)
        gc.unfreeze()  # this test process goes on to start other servers
