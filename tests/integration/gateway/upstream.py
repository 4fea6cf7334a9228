"""A fake upstream for gateway tests: answers any method path with raw bytes and records
every call that reaches it (so tests can prove a refused call never got this far)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import grpc

from meshlib.errors import NotFound
from meshlib.grpc_errors import abort_with, to_rpc_status

WATCH = "/openbank.payment.v1.PaymentService/WatchPayments"
NOT_FOUND_METHOD = "/openbank.payment.v1.PaymentService/GetPayment"


@dataclass
class UpstreamCall:
    """What the upstream saw of one call."""

    method: str
    metadata: dict[str, str]
    time_remaining: float | None


@dataclass
class FakeUpstream(grpc.GenericRpcHandler):
    """Echoes unary requests; WatchPayments streams three messages and stays open."""

    calls: list[UpstreamCall] = field(default_factory=list)

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method = handler_call_details.method

        def note(context: grpc.aio.ServicerContext) -> None:
            metadata = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
            self.calls.append(UpstreamCall(method, metadata, context.time_remaining()))

        if method == WATCH:

            async def stream(request: bytes, context: grpc.aio.ServicerContext) -> Any:
                note(context)
                for index in range(3):
                    yield bytes([index])
                    await asyncio.sleep(0)
                await asyncio.Event().wait()  # stays open, like a real watch, until cancelled

            return grpc.unary_stream_rpc_method_handler(stream)

        async def unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            note(context)
            if method == NOT_FOUND_METHOD:
                # Like a real service: a rich status the gateway must pass through untouched.
                code, status = to_rpc_status(NotFound("payment not found"), "payment.openbank.dev")
                await abort_with(context, code, status)
            return request

        return grpc.unary_unary_rpc_method_handler(unary)


async def start_fake_upstream() -> tuple[grpc.aio.Server, int, FakeUpstream]:
    """A running fake upstream on a free port."""
    upstream = FakeUpstream()
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([upstream])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port, upstream
