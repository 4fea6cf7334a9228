"""Internal calls ride out a peer's restart: retries wait for the channel to reconnect."""

from __future__ import annotations

import asyncio
import signal
import sys
import time

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from meshlib.clients import ChannelSettings, PeerCaller, call_with_retry, open_channel
from meshlib.errors import STORE_UNAVAILABLE, Unavailable
from meshlib.grpc_errors import abort_with, to_rpc_status
from tests.support.servers import free_port


async def _serve(port: int) -> grpc.aio.Server:
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server


async def test_a_call_made_while_the_peer_restarts_succeeds_once_it_is_back() -> None:
    port = free_port()
    server = await _serve(port)
    channel = open_channel(ChannelSettings(target=f"127.0.0.1:{port}"), tracing=False)
    stub = health_pb2_grpc.HealthStub(channel)
    try:
        await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
        await server.stop(0)
        # Down long enough for the channel's reconnect backoff to grow past the retry delays.
        for _ in range(3):
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
            await asyncio.sleep(0.4)

        async def restart_soon() -> grpc.aio.Server:
            await asyncio.sleep(0.3)
            return await _serve(port)

        restarting = asyncio.ensure_future(restart_soon())
        started = time.monotonic()
        answer = await call_with_retry(
            lambda **options: stub.Check(health_pb2.HealthCheckRequest(), timeout=2, **options),
            attempts=3,
            what="health.Check",
        )
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        assert time.monotonic() - started < 2.5
        server = await restarting
    finally:
        await channel.close()
        await server.stop(0)


async def test_a_peer_that_stays_down_still_fails_within_the_deadline() -> None:
    port = free_port()
    channel = open_channel(ChannelSettings(target=f"127.0.0.1:{port}"), tracing=False)
    stub = health_pb2_grpc.HealthStub(channel)
    started = time.monotonic()
    try:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await call_with_retry(
                lambda **options: stub.Check(health_pb2.HealthCheckRequest(), timeout=0.5, **options),
                attempts=3,
                what="health.Check",
            )
        assert failed.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        assert time.monotonic() - started < 3
    finally:
        await channel.close()


class _CountingHealth(health.aio.HealthServicer):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    async def Check(self, request, context):  # type: ignore[no-untyped-def]
        self.calls += 1
        return await super().Check(request, context)


async def test_a_target_listing_replicas_spreads_calls_over_all_of_them_and_skips_a_dead_one() -> None:
    servers, counters = [], []
    for _ in range(3):
        counter = _CountingHealth()
        server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(counter, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append((server, port))
        counters.append(counter)
    # As `up --replicas 3` gives it: the replicas' addresses, balanced round robin.
    target = ",".join(f"127.0.0.1:{port}" for _, port in servers)
    channel = open_channel(ChannelSettings(target=target), tracing=False)
    stub = health_pb2_grpc.HealthStub(channel)
    try:
        for _ in range(30):
            await stub.Check(health_pb2.HealthCheckRequest(), timeout=2, wait_for_ready=True)
        assert all(counter.calls >= 5 for counter in counters), [c.calls for c in counters]
        await servers[0][0].stop(0)
        before = [c.calls for c in counters]
        for _ in range(20):
            await call_with_retry(
                lambda **options: stub.Check(health_pb2.HealthCheckRequest(), timeout=2, **options), what="check"
            )
        assert counters[1].calls > before[1] and counters[2].calls > before[2]
    finally:
        await channel.close()
        for server, _ in servers:
            await server.stop(0)


# A replica in its own process, so that it can be SIGKILLed as the failure test does.
_REPLICA = """
import asyncio, sys, grpc
from grpc_health.v1 import health, health_pb2_grpc
async def main():
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    server.add_insecure_port("127.0.0.1:" + sys.argv[1])
    await server.start()
    print("serving", flush=True)
    await server.wait_for_termination()
asyncio.run(main())
"""


class _SheddingHealth(health.aio.HealthServicer):  # type: ignore[misc]
    """The surviving replica, answering UNAVAILABLE with RetryInfo for a moment (its own store
    or peer lost, or shedding while the other replica restarts), as the error mapping does."""

    def __init__(self) -> None:
        super().__init__()
        self.shed_until = 0.0
        self.served = 0

    async def Check(self, request, context):  # type: ignore[no-untyped-def]
        if time.monotonic() < self.shed_until:
            fault = Unavailable("store lost", reason=STORE_UNAVAILABLE, retry_after_seconds=0.3)
            await abort_with(context, *to_rpc_status(fault, "test.openbank"))
        self.served += 1
        return await super().Check(request, context)


async def test_a_peer_call_rides_out_a_killed_replica_and_the_other_ones_brief_unavailable() -> None:
    port = free_port()
    killed = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _REPLICA, str(port), stdout=asyncio.subprocess.PIPE
    )
    survivor = _SheddingHealth()
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(survivor, server)
    other = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = open_channel(ChannelSettings(target=f"127.0.0.1:{port},127.0.0.1:{other}"), tracing=False)
    stub = health_pb2_grpc.HealthStub(channel)

    async def bearer() -> str:
        return "token"

    # PeerCaller as payment's saga has it: three attempts.
    call = PeerCaller(bearer, deadline_seconds=2, attempts=3)
    try:
        assert killed.stdout is not None and await asyncio.wait_for(killed.stdout.readline(), 30)
        for _ in range(4):
            await call(stub.Check, health_pb2.HealthCheckRequest(), "health.Check")
        killed.send_signal(signal.SIGKILL)
        await killed.wait()
        # Shorter than one RetryInfo delay (0.3 s) plus the fastest backoff (25 ms): round robin may
        # spend the first attempt on the dead replica, leaving two for the survivor. Without the
        # RetryInfo delay, the retries (25-100 ms apart) would all land inside the window.
        survivor.shed_until = time.monotonic() + 0.25
        served = survivor.served
        answer = await call(stub.Check, health_pb2.HealthCheckRequest(), "health.Check")
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        assert survivor.served == served + 1
    finally:
        if killed.returncode is None:
            killed.kill()
            await killed.wait()
        await channel.close()
        await server.stop(0)
