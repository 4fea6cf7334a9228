"""Revocation latency: how long from RevokeToken's answer to the refusal, for a unary call and
for an open WatchPayments stream, through the gateway of a real mesh (five processes), on the
embedded default (no Redis: each process re-checks with identity) and with Redis (the
invalidation bus). Prints p50/p99 per case; nothing is asserted (goal: p99 < 100 ms with
Redis, < 1 s embedded).

    python -m bench.revocation                       # both deployments, 30 rounds each
    python -m bench.revocation --rounds 100 --deployments redis
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

from bench.mesh import running_mesh
from bench.stats import percentile
from openbank.identity.v1 import token_pb2, token_pb2_grpc
from openbank.payment.v1 import payment_pb2, payment_pb2_grpc
from openbank.settlement.v1 import settlement_pb2, settlement_pb2_grpc

POLL_SECONDS = 0.002  # how often the unary probe asks again after the revocation
GIVE_UP_SECONDS = 5.0


async def _token(tokens: Any, partner: dict[str, Any], scopes: list[str]) -> str:
    answer = await tokens.IssueToken(
        token_pb2.IssueTokenRequest(
            grant_type=token_pb2.GRANT_TYPE_CLIENT_CREDENTIALS,
            client_id=partner["client_id"],
            client_secret=partner["client_secret"],
            scopes=scopes,
        ),
        timeout=10,
    )
    return str(answer.access_token)


async def _revoke(tokens: Any, partner: dict[str, Any], token: str) -> float:
    await tokens.RevokeToken(
        token_pb2.RevokeTokenRequest(
            client_id=partner["client_id"], client_secret=partner["client_secret"], token=token
        ),
        timeout=10,
    )
    return time.monotonic()


async def _served(settlement: Any, metadata: tuple[tuple[str, str], ...]) -> bool:
    """ListSettlementWindows (routed to settlement, another process than identity, which
    learns of the revocation at once): True while the token is accepted."""
    try:
        await settlement.ListSettlementWindows(
            settlement_pb2.ListSettlementWindowsRequest(page_size=1), metadata=metadata, timeout=5
        )
    except grpc.aio.AioRpcError as error:
        if error.code() == grpc.StatusCode.UNAUTHENTICATED:
            return False
        raise
    return True


async def unary_latency(gateway: grpc.aio.Channel, partner: dict[str, Any]) -> float:
    """Seconds from the revocation's answer to the first refused call."""
    tokens = token_pb2_grpc.TokenServiceStub(gateway)
    settlement = settlement_pb2_grpc.SettlementServiceStub(gateway)
    token = await _token(tokens, partner, ["settlement:read"])
    metadata = (("authorization", f"Bearer {token}"),)
    assert await _served(settlement, metadata)  # every cache warm
    revoked_at = await _revoke(tokens, partner, token)
    while time.monotonic() - revoked_at < GIVE_UP_SECONDS:
        if not await _served(settlement, metadata):
            return time.monotonic() - revoked_at
        await asyncio.sleep(POLL_SECONDS)
    return float("inf")


async def stream_latency(gateway: grpc.aio.Channel, partner: dict[str, Any]) -> float:
    """Seconds from the revocation's answer to the end of an open WatchPayments."""
    tokens = token_pb2_grpc.TokenServiceStub(gateway)
    token = await _token(tokens, partner, ["payments:read"])
    stream = payment_pb2_grpc.PaymentServiceStub(gateway).WatchPayments(
        payment_pb2.WatchPaymentsRequest(), metadata=(("authorization", f"Bearer {token}"),)
    )
    await stream.wait_for_connection()
    await asyncio.sleep(0.05)  # open at the gateway and at the payment service
    revoked_at = await _revoke(tokens, partner, token)
    try:
        await asyncio.wait_for(stream.read(), GIVE_UP_SECONDS)
    except grpc.aio.AioRpcError:
        return time.monotonic() - revoked_at
    except TimeoutError:
        return float("inf")
    finally:
        stream.cancel()
    return float("inf")


def summary(samples: list[float]) -> dict[str, float]:
    """p50 / p99 / max in milliseconds."""
    millis = sorted(sample * 1000 for sample in samples)
    return {
        "p50_ms": round(percentile(millis, 0.5), 1),
        "p99_ms": round(percentile(millis, 0.99), 1),
        "max_ms": round(millis[-1], 1),
    }


async def run(deployments: list[str], rounds: int) -> dict[str, dict[str, dict[str, float]]]:
    """Measure every deployment; the results by deployment and case."""
    from tests.support.servers import redis_server

    results: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-revocation-") as work, contextlib.ExitStack() as stack:
        for deployment in deployments:
            redis_url = stack.enter_context(redis_server()).url if deployment == "redis" else None
            limiter = "redis" if redis_url else "memory"
            async with running_mesh(Path(work), store="sqlite", limiter=limiter, redis_url=redis_url) as mesh:
                partner = mesh.demo["partners"]["acme"]
                async with grpc.aio.insecure_channel(f"127.0.0.1:{mesh.ports['gateway']}") as gateway:
                    unary = [await unary_latency(gateway, partner) for _ in range(rounds)]
                    stream = [await stream_latency(gateway, partner) for _ in range(rounds)]
            results[deployment] = {"unary": summary(unary), "stream": summary(stream)}
            print(f"{deployment:9} unary {results[deployment]['unary']}  stream {results[deployment]['stream']}")
    return results


def main() -> None:
    """``python -m bench.revocation``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--deployments", default="embedded,redis", help="embedded, redis or both")
    parser.add_argument("--json", type=Path, help="also write the results here")
    options = parser.parse_args()
    deployments = [part.strip() for part in options.deployments.split(",") if part.strip()]
    results = asyncio.run(run(deployments, options.rounds))
    if options.json:
        options.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
