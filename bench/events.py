"""Partner events at scale, through the gateway of a real mesh (five processes, embedded
default: SQLite, in-process bus; ``--redis``: the bus and limiter on a Redis, as deployed):

1. N open StreamEvents streams (default 1,000) with the mesh idle: the CPU the gateway and
   identity use per second of wall time while holding them (goal: under 5% of a core);
2. event latency under load: wallet top-ups at a fixed rate (default 100/s) with one open
   stream, p50/p99 from each event's ``event_time`` (stamped by the service that committed the
   change) to its arrival at the partner.

Prints the figures; nothing is asserted.

    python -m bench.events                               # 1,000 streams, 100 payments/s for 20 s
    python -m bench.events --streams 200 --rate 50 --seconds 10
    python -m bench.events --redis --profile .bench/events   # py-spy while idle, top frames printed
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import grpc

from bench.mesh import RunningMesh, running_mesh
from bench.procstat import cpu_seconds
from bench.stats import percentile
from openbank.common.v1 import money_pb2
from openbank.events.v1 import events_pb2, events_pb2_grpc
from openbank.identity.v1 import token_pb2, token_pb2_grpc
from openbank.payment.v1 import payment_pb2, payment_pb2_grpc


async def _events_token(gateway: grpc.aio.Channel, partner: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    answer = await token_pb2_grpc.TokenServiceStub(gateway).IssueToken(
        token_pb2.IssueTokenRequest(
            grant_type=token_pb2.GRANT_TYPE_CLIENT_CREDENTIALS,
            client_id=partner["client_id"],
            client_secret=partner["client_secret"],
            scopes=["events:read"],
        ),
        timeout=10,
    )
    return (("authorization", f"Bearer {answer.access_token}"),)


# Streams per HTTP/2 connection: below the servers' max_concurrent_streams (256), beyond which
# the gateway refuses a stream (RST_STREAM REFUSED_STREAM). Partners' backends hold their
# streams over several connections too.
STREAMS_PER_CONNECTION = 100


async def _py_spy(pid: int, seconds: float, output: Path) -> asyncio.subprocess.Process:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return await asyncio.create_subprocess_exec(
        py_spy,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(max(1, int(seconds))),
        "--rate",
        "200",
        "--nonblocking",
        "--format",
        "raw",
        "--output",
        str(output),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def idle_streams(
    mesh: RunningMesh,
    gateway: grpc.aio.Channel,
    streams: int,
    seconds: float,
    profile: Path | None = None,
    tokens: int = 1,
) -> dict[str, float]:
    """CPU share of a core used by the gateway and identity while ``streams`` streams idle,
    opened with ``tokens`` tokens of the partner taking turns (as that many backends of it; each
    token's status is checked on its own) (with ``profile``: py-spy records both meanwhile,
    collapsed stacks written there)."""
    partner = mesh.demo["partners"]["acme"]
    keys = [await _events_token(gateway, partner) for _ in range(max(1, min(tokens, streams)))]
    target = f"127.0.0.1:{mesh.ports['gateway']}"
    # A local subchannel pool each: its own connection, not the process-wide shared one.
    channels = [
        grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(-(-streams // STREAMS_PER_CONNECTION))
    ]
    calls: list[Any] = []
    try:
        for start in range(0, streams, 50):  # 50 at a time, as partners' backends reconnect
            size = min(50, streams - start)
            stub = events_pb2_grpc.EventServiceStub(channels[start // STREAMS_PER_CONNECTION])
            batch = [
                stub.StreamEvents(events_pb2.StreamEventsRequest(), metadata=keys[(start + i) % len(keys)])
                for i in range(size)
            ]
            calls += batch
            await asyncio.gather(*(call.wait_for_connection() for call in batch))
        await asyncio.sleep(3)  # the streams settle (identity's first reads, the slots)
        pids = mesh.mesh.pids()
        spies = []
        if profile is not None:
            spies = [
                await _py_spy(pids[name], seconds, profile / f"idle-{name}.txt") for name in ("gateway", "identity")
            ]
        before = {name: cpu_seconds(pids[name]) for name in ("gateway", "identity")}
        began = time.monotonic()
        await asyncio.sleep(seconds)
        elapsed = time.monotonic() - began
        for spy in spies:
            await spy.wait()
        still_open = sum(1 for call in calls if not call.done())
        if still_open != streams:
            raise RuntimeError(f"only {still_open} of {streams} streams stayed open while idle")
        return {name: (cpu_seconds(pids[name]) - used) / elapsed for name, used in before.items()}
    finally:
        for call in calls:
            call.cancel()
        for channel in channels:
            await channel.close()


async def event_latency(mesh: RunningMesh, gateway: grpc.aio.Channel, rate: float, seconds: float) -> dict[str, float]:
    """p50/p99 seconds from each payment event's commit to its arrival on an open stream."""
    metadata = await _events_token(gateway, mesh.demo["partners"]["acme"])
    stream = events_pb2_grpc.EventServiceStub(gateway).StreamEvents(
        events_pb2.StreamEventsRequest(types=[events_pb2.EVENT_TYPE_PAYMENT_STATE_CHANGED]), metadata=metadata
    )
    await stream.wait_for_connection()
    latencies: list[float] = []

    async def receive() -> None:
        async for message in stream:
            latencies.append(time.time() - message.event.event_time.ToDatetime().timestamp())

    receiving = asyncio.create_task(receive())
    payments = payment_pb2_grpc.PaymentServiceStub(gateway)
    sent: list[asyncio.Future[Any]] = []
    began = time.monotonic()
    count = int(rate * seconds)
    for index in range(count):
        payer = mesh.payers[index % len(mesh.payers)]
        request = payment_pb2.CreatePaymentRequest(
            request_id=uuid.uuid4().hex,
            debtor_account=payer.account,
            creditor_wallet=mesh.creditor_wallet,
            amount=money_pb2.Money(currency_code="EUR", minor_units=1),
            type=payment_pb2.PAYMENT_TYPE_WALLET_TOP_UP,
        )
        sent.append(asyncio.ensure_future(payments.CreatePayment(request, metadata=payer.metadata, timeout=30)))
        await asyncio.sleep(max(0.0, began + (index + 1) / rate - time.monotonic()))
    results = await asyncio.gather(*sent, return_exceptions=True)
    failed = sum(1 for r in results if isinstance(r, BaseException))
    await asyncio.sleep(5)  # the last events arrive
    receiving.cancel()
    stream.cancel()
    with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
        await receiving
    ordered = sorted(latencies)
    return {
        "payments": count,
        "failed": failed,
        "events": len(ordered),
        "p50_ms": round(percentile(ordered, 0.50) * 1000, 1),
        "p99_ms": round(percentile(ordered, 0.99) * 1000, 1),
    }


def _print_profile(profile: Path) -> None:
    from bench.profile import summarise_collapsed

    for name in ("gateway", "identity"):
        path = profile / f"idle-{name}.txt"
        if not path.exists():
            continue
        summary = summarise_collapsed(path.read_text(), top=12)
        print(f"\n== {name} while idle ({path}): most samples, inclusive")
        for function, share in summary["inclusive"][:20]:
            print(f"  {share:6.1%}  {function}")


async def run(
    streams: int,
    idle_seconds: float,
    rate: float,
    seconds: float,
    profile: Path | None = None,
    redis: bool = False,
    tokens: int = 1,
) -> dict[str, Any]:
    """Both measurements on one mesh: embedded (SQLite, in-process bus), or with ``redis``
    its bus and limiter on a Redis as deployed (the bus lets streams re-check their caller's
    rights every 5 s instead of every 0.25 s)."""
    from tests.support.servers import redis_server

    with tempfile.TemporaryDirectory(prefix="bench-events-") as work, contextlib.ExitStack() as stack:
        redis_url = stack.enter_context(redis_server()).url if redis else None
        limiter = "redis" if redis else "memory"
        async with running_mesh(Path(work), store="sqlite", limiter=limiter, redis_url=redis_url) as mesh:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{mesh.ports['gateway']}") as gateway:
                idle = await idle_streams(mesh, gateway, streams, idle_seconds, profile, tokens)
                print(f"{streams} idle streams: " + ", ".join(f"{k} {v:.1%} of a core" for k, v in idle.items()))
                if profile is not None:
                    _print_profile(profile)
                latency = await event_latency(mesh, gateway, rate, seconds)
                print(f"payments at {rate:g}/s: {latency}")
    return {"idle_streams": streams, "tokens": tokens, "redis": redis, "idle_cpu_share": idle, "latency": latency}


def main() -> None:
    """``python -m bench.events``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--profile", type=Path, help="py-spy the gateway and identity while idle; stacks go here")
    parser.add_argument("--redis", action="store_true", help="the bus and the limiter on a Redis (as deployed)")
    parser.add_argument("--tokens", type=int, default=1, help="the streams take turns over this many tokens")
    options = parser.parse_args()
    if options.profile:
        options.profile.mkdir(parents=True, exist_ok=True)
    results = asyncio.run(
        run(
            options.streams,
            options.idle_seconds,
            options.rate,
            options.seconds,
            options.profile,
            options.redis,
            options.tokens,
        )
    )
    if options.json:
        options.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
