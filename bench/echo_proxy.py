"""The floor: a bare grpc.aio proxy that forwards raw bytes to one upstream, nothing else.

``python -m bench.echo_proxy <listen port> <upstream host:port>``. Every method is
forwarded with its metadata (the caller's token included) and never decoded; upstream
errors go back with their code and details. What a Python gateway costs at the very least.

Without an upstream (``python -m bench.echo_proxy <listen port>``) it answers every call
with the request's own bytes (and health checks with SERVING): a grpc.aio server with no
application code at all, which ``bench.calibrate`` times.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import grpc

# Metadata gRPC sets itself; forwarding it would duplicate or confuse it.
HOP_BY_HOP = frozenset({"user-agent", "grpc-accept-encoding", "grpc-timeout", "te", "content-type"})


class ForwardEverything(grpc.GenericRpcHandler):
    """A unary handler for any method name, bound to one upstream channel."""

    def __init__(self, upstream: grpc.aio.Channel) -> None:
        self._upstream = upstream
        self._calls: dict[str, grpc.aio.UnaryUnaryMultiCallable] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        call = self._calls.get(method)
        if call is None:
            call = self._calls[method] = self._upstream.unary_unary(method)

        async def forward(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            metadata = tuple((k, v) for k, v in context.invocation_metadata() if k not in HOP_BY_HOP)
            try:
                return await call(request, metadata=metadata, timeout=10)
            except grpc.aio.AioRpcError as error:
                await context.abort(error.code(), error.details() or "", error.trailing_metadata())
                raise  # unreachable: abort raises

        return grpc.unary_unary_rpc_method_handler(forward)


class EchoEverything(grpc.GenericRpcHandler):
    """A unary handler for any method name that answers with the request's bytes."""

    def __init__(self) -> None:
        self._handler = grpc.unary_unary_rpc_method_handler(_echo)

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        return self._handler


async def _echo(request: bytes, _context: grpc.aio.ServicerContext) -> bytes:
    return request


async def serve(port: int, upstream_target: str | None) -> None:
    """Serve until SIGTERM or SIGINT (echo every call when there is no upstream)."""
    upstream = grpc.aio.insecure_channel(upstream_target) if upstream_target else None
    server = grpc.aio.server(options=[("grpc.max_concurrent_streams", 1024)])
    if upstream is None:
        from grpc_health.v1 import health, health_pb2_grpc

        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
        server.add_generic_rpc_handlers((EchoEverything(),))
    else:
        server.add_generic_rpc_handlers((ForwardEverything(upstream),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(0.5)
    if upstream is not None:
        await upstream.close()


if __name__ == "__main__":
    import uvloop

    # The same event loop as the gateway (meshlib.server.run_process): the floor is what the
    # gateway's own work costs on top of, not a difference of loops (uvloop: ~7% less CPU here).
    uvloop.run(serve(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else None))
