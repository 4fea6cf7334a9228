"""The token endpoint holds against a flood in one client's name from several addresses
(eight source addresses, through relays): each address stays within its own limit, the
per-client limit refuses the flood before it reaches identity, and another partner gets its
tokens at normal latency meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from gateway.server import start_gateway
from gateway.settings import GatewaySettings
from meshlib.grpc_errors import decode_status, error_info
from openbank.identity.v1 import token_pb2, token_pb2_grpc
from tests.integration.gateway.upstream import start_fake_upstream
from tests.integration.identity.harness import SECRETS, Identity, Partner, start_identity, stop_identity
from tests.support.relays import relays

# Generous per address (so only the per-client limit can stop the flood), tight per client.
LIMITS = """
default_tier: gold
tiers:
  gold:
    token: {rate: 100, per: second, burst: 100}
    token_per_client: {rate: 5, per: second, burst: 10}
    consents: {rate: 1000, per: second, burst: 1000}
    reads: {rate: 1000, per: second, burst: 1000}
    payments: {rate: 1000, per: second, burst: 1000}
    streams: {rate: 1000, per: second, burst: 1000}
    settlement: {rate: 1000, per: second, burst: 1000}
"""
# One token call per address and second, nothing else: to show the relays' addresses are distinct.
ONE_PER_ADDRESS = LIMITS.replace(
    "token: {rate: 100, per: second, burst: 100}", "token: {rate: 1, per: second, burst: 1}"
)
FLOOD_SECONDS = 2.0
# The flood comes from eight source addresses (127.0.0.2-9, through relays), the bystander
# from 127.0.0.1.
FLOOD_ADDRESSES = 8


@contextlib.asynccontextmanager
async def _gateway(sqlite_url: str, tmp_path: Path, limits_text: str) -> AsyncIterator[tuple[Identity, int]]:
    identity = await start_identity(sqlite_url)
    upstream_server, upstream_port, _ = await start_fake_upstream()
    limits = tmp_path / "limits.yaml"
    limits.write_text(limits_text)
    settings = GatewaySettings(
        port=0,
        identity_target=f"127.0.0.1:{identity.server.port}",
        account_target=f"127.0.0.1:{upstream_port}",
        payment_target=f"127.0.0.1:{upstream_port}",
        settlement_target=f"127.0.0.1:{upstream_port}",
        token_issuer=identity.settings.token_issuer,
        token_audience=identity.settings.token_audience,
        service_client_id="gateway",
        service_client_secret=SECRETS["gateway"],
        ratelimit_config_file=limits,
    )
    server = await start_gateway(settings)
    try:
        yield identity, server.port
    finally:
        await server.stop(0)
        await upstream_server.stop(0)
        await stop_identity(identity)


def _request(partner: Partner, secret: str) -> token_pb2.IssueTokenRequest:
    return token_pb2.IssueTokenRequest(
        grant_type=token_pb2.GRANT_TYPE_CLIENT_CREDENTIALS,
        client_id=partner.client_id,
        client_secret=secret,
        scopes=["consents:read"],
    )


def _outcome(error: grpc.aio.AioRpcError) -> str:
    info = error_info(decode_status(error.trailing_metadata()))
    if info is None:
        return error.code().name
    return f"{info.reason}/{info.metadata.get('rate_limit_class', 'identity')}"


async def test_the_relays_reach_the_gateway_from_distinct_addresses(sqlite_url: str, tmp_path: Path) -> None:
    """What makes the flood below one from eight addresses: with one token call per address
    allowed, each relay's first call passes and its second is refused per address."""
    async with _gateway(sqlite_url, tmp_path, ONE_PER_ADDRESS) as (identity, port):
        partner = await identity.register_partner()
        async with relays(port, FLOOD_ADDRESSES) as sources:
            channels = [grpc.aio.insecure_channel(f"127.0.0.1:{relay.port}") for relay in sources]
            try:
                stubs = [token_pb2_grpc.TokenServiceStub(channel) for channel in channels]
                for stub in stubs:
                    assert (await stub.IssueToken(_request(partner, partner.secret), timeout=10)).access_token
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stubs[0].IssueToken(_request(partner, partner.secret), timeout=10)
                assert _outcome(refused.value) == "RATE_LIMIT_EXCEEDED/token"
            finally:
                for channel in channels:
                    await channel.close()


async def test_a_flood_for_one_client_is_refused_per_client_while_another_partner_is_served(
    sqlite_url: str, tmp_path: Path
) -> None:
    async with _gateway(sqlite_url, tmp_path, LIMITS) as (identity, port):
        victim, bystander = await identity.register_partner(), await identity.register_partner()
        async with relays(port, FLOOD_ADDRESSES) as sources:
            channels = [grpc.aio.insecure_channel(f"127.0.0.1:{relay.port}") for relay in sources]
            direct = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
            try:
                baseline, during, outcomes = await _flood(
                    [token_pb2_grpc.TokenServiceStub(c) for c in channels],
                    token_pb2_grpc.TokenServiceStub(direct),
                    victim,
                    bystander,
                )
            finally:
                for channel in [*channels, direct]:
                    await channel.close()

    refused_per_client = outcomes["RATE_LIMIT_EXCEEDED/token_per_client"]
    reached_identity = outcomes.total() - refused_per_client
    assert outcomes["OK"] == 0 and not any(k.endswith("/token") for k in outcomes), outcomes  # per address: fine
    # Within the client's budget (burst 10 + 5 a second) only; the rest never left the gateway.
    assert reached_identity <= 10 + 5 * (FLOOD_SECONDS + 1), outcomes
    assert refused_per_client > 2 * reached_identity, outcomes
    assert len(during) >= 6  # every bystander call answered OK
    assert statistics.median(during) < statistics.median(baseline) * 3 + 0.02, (baseline, during)
    assert max(during) < 0.5, during


async def _flood(
    flood_stubs: list[token_pb2_grpc.TokenServiceStub],
    bystander_stub: token_pb2_grpc.TokenServiceStub,
    victim: Partner,
    bystander: Partner,
) -> tuple[list[float], list[float], Counter[str]]:
    """Flood in the victim's name from every flood stub while the bystander asks for tokens;
    the bystander's latencies before and during, and the flood's outcomes."""

    async def bystander_token() -> float:
        started = time.monotonic()
        await bystander_stub.IssueToken(_request(bystander, bystander.secret), timeout=10)
        return time.monotonic() - started

    baseline = [await bystander_token() for _ in range(5)]
    outcomes: Counter[str] = Counter()
    stop = asyncio.Event()

    async def flood(stub: token_pb2_grpc.TokenServiceStub) -> None:
        # 10 calls a second from each address, in the victim's name, guessing secrets.
        while not stop.is_set():
            try:
                await stub.IssueToken(_request(victim, "guessed-secret"), timeout=10)
                outcomes["OK"] += 1
            except grpc.aio.AioRpcError as error:
                outcomes[_outcome(error)] += 1
            await asyncio.sleep(0.1)

    flooders = [asyncio.create_task(flood(stub)) for stub in flood_stubs]
    during: list[float] = []
    deadline = time.monotonic() + FLOOD_SECONDS
    while time.monotonic() < deadline:
        during.append(await bystander_token())
        await asyncio.sleep(0.25)  # within its own per-client budget (5 a second)
    stop.set()
    await asyncio.gather(*flooders)
    return baseline, during, outcomes
