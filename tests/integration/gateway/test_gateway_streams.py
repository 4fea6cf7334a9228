"""Open WatchPayments streams through the gateway follow the caller's rights, on the embedded
default (no shared bus: each process re-checks with identity) and with Redis (two gateway
replicas on one bus): a revoked token, a revoked or paused consent, a suspended partner end
every open stream within a second with the reason a new call gets; an expiring token ends it
at expiry; the per-partner stream cap holds across replicas."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from gateway.server import start_gateway
from gateway.settings import GatewaySettings
from gateway.streams import RedisStreamSlots
from meshlib.grpc_errors import decode_status, error_info
from meshlib.server import MeshServer
from openbank.common.v1 import consent_permission_pb2
from openbank.identity.v1 import consent_pb2, partner_pb2, token_pb2
from openbank.payment.v1 import payment_pb2
from tests.integration.gateway.upstream import WATCH, FakeUpstream, start_fake_upstream
from tests.integration.identity.harness import (
    SECRETS,
    Identity,
    Partner,
    bearer,
    pkce_pair,
    request_id,
    start_identity,
    stop_identity,
)
from tests.support.ratelimits import generous_limits

LIMITS = generous_limits(unattended_reads_per_day=100, max_streams_per_partner=3)


@dataclass
class StreamMesh:
    identity: Identity
    channels: list[grpc.aio.Channel]  # one per gateway replica
    upstream: FakeUpstream
    deployment: str


@pytest.fixture(params=["embedded", "redis"])
async def streams_mesh(request, sqlite_url: str, tmp_path: Path, key_prefix: str) -> AsyncIterator[StreamMesh]:  # type: ignore[no-untyped-def]
    deployment = request.param
    redis_url = request.getfixturevalue("redis_url") if deployment == "redis" else None
    channel_name = f"{key_prefix}invalidations"
    identity = await start_identity(sqlite_url, redis_url=redis_url, invalidation_channel=channel_name)
    upstream_server, upstream_port, upstream = await start_fake_upstream()
    limits = tmp_path / "limits.yaml"
    limits.write_text(LIMITS)
    gateways: list[MeshServer] = []
    channels: list[grpc.aio.Channel] = []
    try:
        for replica in range(2 if redis_url else 1):
            settings = GatewaySettings(
                port=0,
                data_dir=tmp_path / f"gateway-{replica}",  # each replica's own files
                identity_target=f"127.0.0.1:{identity.server.port}",
                account_target=f"127.0.0.1:{upstream_port}",
                payment_target=f"127.0.0.1:{upstream_port}",
                settlement_target=f"127.0.0.1:{upstream_port}",
                token_issuer=identity.settings.token_issuer,
                token_audience=identity.settings.token_audience,
                service_client_id="gateway",
                service_client_secret=SECRETS["gateway"],
                redis_url=redis_url,
                ratelimit_config_file=limits,
                ratelimit_key_prefix=f"{key_prefix}rl:",
                invalidation_channel=channel_name,
            )
            gateways.append(await start_gateway(settings))
            channels.append(grpc.aio.insecure_channel(f"127.0.0.1:{gateways[-1].port}"))
        yield StreamMesh(identity, channels, upstream, deployment)
    finally:
        for channel in channels:
            await channel.close()
        for gateway in gateways:
            await gateway.stop(0)
        await upstream_server.stop(0)
        await stop_identity(identity)


def _reason(error: grpc.aio.AioRpcError) -> str:
    info = error_info(decode_status(error.trailing_metadata()))
    return info.reason if info else ""


def _watch(channel: grpc.aio.Channel, token: str) -> grpc.aio.UnaryStreamCall:
    return channel.unary_stream(WATCH)(payment_pb2.WatchPaymentsRequest().SerializeToString(), metadata=bearer(token))


async def _opened(call: grpc.aio.UnaryStreamCall) -> grpc.aio.UnaryStreamCall:
    assert [await call.read() for _ in range(3)] == [b"\x00", b"\x01", b"\x02"]  # the upstream's messages
    return call


async def _ended(call: grpc.aio.UnaryStreamCall, within: float) -> tuple[grpc.StatusCode, str, float]:
    """Wait for the stream to end; its status, reason and how long that took."""
    started = time.monotonic()
    try:
        message = await asyncio.wait_for(call.read(), within)
    except TimeoutError:
        raise AssertionError(f"the stream was still open {within}s after the change") from None
    except grpc.aio.AioRpcError as error:
        return error.code(), _reason(error), time.monotonic() - started
    raise AssertionError(f"the stream went on delivering: {message!r}")


async def _payments_token(
    identity: Identity, partner: Partner, expires_in: dt.timedelta = dt.timedelta(days=30)
) -> tuple[str, str, str]:
    """A consent-bound token with payments:read: (token, consent name, customer name)."""
    verifier, challenge = pkce_pair()
    consent = await identity.create_consent(
        partner,
        challenge,
        expires_in=expires_in,
        permissions=(
            consent_permission_pb2.CONSENT_PERMISSION_READ_ACCOUNTS,
            consent_permission_pb2.CONSENT_PERMISSION_INITIATE_PAYMENTS,
        ),
    )
    customer = await identity.create_customer()
    authorised = await identity.authorise(consent.name, customer)
    tokens = await identity.exchange(partner, authorised.authorization_code, verifier)
    assert "payments:read" in tokens.scopes
    return tokens.access_token, consent.name, customer.name


async def _new_call_reason(channel: grpc.aio.Channel, token: str) -> tuple[grpc.StatusCode, str]:
    call = _watch(channel, token)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call.read()
    return raised.value.code(), _reason(raised.value)


CHANGES = {
    "token revoked": (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REVOKED"),
    "consent revoked": (grpc.StatusCode.PERMISSION_DENIED, "CONSENT_REVOKED"),
    "consent paused": (grpc.StatusCode.PERMISSION_DENIED, "CONSENT_PAUSED"),
    "partner suspended": (grpc.StatusCode.PERMISSION_DENIED, "PARTNER_SUSPENDED"),
}


@pytest.mark.parametrize("change", list(CHANGES))
async def test_every_open_stream_ends_within_a_second_of_a_revocation(streams_mesh: StreamMesh, change: str) -> None:
    identity = streams_mesh.identity
    partner = await identity.register_partner()
    token, consent_name, customer = await _payments_token(identity, partner)
    # One stream per replica (two with Redis), plus a stream of another partner that stays.
    streams = [await _opened(_watch(channel, token)) for channel in streams_mesh.channels]
    bystander_partner = await identity.register_partner()
    bystander = await _opened(
        _watch(streams_mesh.channels[0], await identity.client_token(bystander_partner, ("payments:read",)))
    )

    if change == "token revoked":
        await identity.tokens.RevokeToken(
            token_pb2.RevokeTokenRequest(client_id=partner.client_id, client_secret=partner.secret, token=token)
        )
    elif change == "consent revoked":
        await identity.consents.RevokeConsent(
            consent_pb2.RevokeConsentRequest(request_id=request_id(), name=consent_name),
            metadata=bearer(await identity.client_token(partner)),
        )
    elif change == "consent paused":
        await identity.consents.PauseConsent(
            consent_pb2.PauseConsentRequest(request_id=request_id(), name=consent_name, customer=customer),
            metadata=await identity.bank_app(),
        )
    else:
        await identity.partners.SuspendPartner(
            partner_pb2.SuspendPartnerRequest(request_id=request_id(), name=partner.name),
            metadata=await identity.admin(),
        )

    expected = CHANGES[change]
    for stream in streams:
        code, reason, elapsed = await _ended(stream, within=1.0)
        assert (code, reason) == expected, streams_mesh.deployment
        assert elapsed < 1.0
    # A new call gets the same answer, on every replica; the other partner's stream stays open.
    for channel in streams_mesh.channels:
        assert await _new_call_reason(channel, token) == expected
    assert bystander.done() is False
    bystander.cancel()


async def test_a_stream_ends_when_its_token_expires(streams_mesh: StreamMesh) -> None:
    identity = streams_mesh.identity
    partner = await identity.register_partner()
    lifetime = identity.settings.access_token_ttl_seconds
    identity.clock.advance(seconds=-(lifetime - 2))  # issued "earlier": about 2 s left
    try:
        token = await identity.client_token(partner, ("payments:read",))
    finally:
        identity.clock.advance(seconds=lifetime - 2)
    stream = await _opened(_watch(streams_mesh.channels[0], token))
    code, reason, elapsed = await _ended(stream, within=4.0)
    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_EXPIRED")
    assert 0.5 < elapsed < 3.0


async def test_a_stream_ends_when_its_consent_expires(streams_mesh: StreamMesh) -> None:
    identity = streams_mesh.identity
    partner = await identity.register_partner()
    token, _, _ = await _payments_token(identity, partner, expires_in=dt.timedelta(seconds=3))
    streams = [await _opened(_watch(channel, token)) for channel in streams_mesh.channels]
    for stream in streams:
        code, reason, _ = await _ended(stream, within=4.0)
        assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "CONSENT_EXPIRED"), streams_mesh.deployment
    for channel in streams_mesh.channels:
        assert await _new_call_reason(channel, token) == (grpc.StatusCode.PERMISSION_DENIED, "CONSENT_EXPIRED")


async def test_the_stream_cap_holds_across_replicas(streams_mesh: StreamMesh) -> None:
    if streams_mesh.deployment != "redis":
        pytest.skip("the embedded default runs one gateway: its cap is per process")
    identity = streams_mesh.identity
    partner = await identity.register_partner()
    token = await identity.client_token(partner, ("payments:read",))
    first, second = streams_mesh.channels
    opened = [await _opened(_watch(first, token)), await _opened(_watch(second, token))]
    opened.append(await _opened(_watch(first, token)))  # three of three, over two replicas
    for channel in (first, second):
        assert await _new_call_reason(channel, token) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_STREAMS")
    opened.pop().cancel()
    deadline = time.monotonic() + 2
    while True:  # the slot goes back as the stream closes
        try:
            await _opened(_watch(second, token))
            break
        except grpc.aio.AioRpcError:
            assert time.monotonic() < deadline, "a closed stream kept its slot"
            await asyncio.sleep(0.05)
    for call in opened:
        call.cancel()


async def test_a_crashed_replicas_slots_lapse_with_their_lease(redis_url: str, key_prefix: str) -> None:
    crashed = RedisStreamSlots(redis_url, prefix=f"{key_prefix}streams:", lease_seconds=0.5)
    alive = RedisStreamSlots(redis_url, prefix=f"{key_prefix}streams:", lease_seconds=0.5)
    await crashed.start()
    await alive.start()
    try:
        assert await crashed.acquire("p1", 2) is not None
        held = await alive.acquire("p1", 2)
        assert held is not None and await alive.acquire("p1", 2) is None
        await crashed.close(release=False)  # no release, no renewal: as a killed process
        await asyncio.sleep(1.2)  # the live replica renews its own slot meanwhile
        assert await alive.acquire("p1", 2) is not None  # the crashed slot lapsed, the live one held
        assert await alive.acquire("p1", 2) is None
    finally:
        await alive.close()
