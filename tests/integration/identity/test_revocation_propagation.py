"""Revocation reaches every verifier within a second, across processes, over real Redis.

Two independent verifiers (as in two gateway replicas) each hold their own cache, fed by
their own Redis subscription and by IntrospectToken over gRPC with a service token. Their
cache TTL is a minute, so only the bus can explain a refusal within the second.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from meshlib.auth.jwks_client import identity_jwks_fetcher
from meshlib.auth.revocation import identity_revocation_check
from meshlib.auth.service_tokens import ServiceTokenSource
from meshlib.auth.verifier import JwksCache, JwtVerifier, VerifierSettings
from meshlib.errors import MeshError
from meshlib.events import RedisBus
from openbank.identity.v1 import consent_pb2, partner_pb2, token_pb2
from tests.integration.identity.harness import SECRETS, Identity, bearer, request_id, start_identity, stop_identity


@pytest.fixture
async def identity_on_redis(sqlite_url: str, redis_url: str, key_prefix: str) -> AsyncIterator[Identity]:
    """Identity publishing its invalidations on a test-private Redis channel."""
    running = await start_identity(sqlite_url, redis_url=redis_url, invalidation_channel=f"{key_prefix}invalidations")
    try:
        yield running
    finally:
        await stop_identity(running)


async def _replica(identity: Identity, redis_url: str, channel: str) -> tuple[JwtVerifier, RedisBus]:
    tokens = ServiceTokenSource(identity.channel, "gateway", SECRETS["gateway"], ["tokens:introspect"])
    bus = RedisBus(redis_url, channel)
    check = identity_revocation_check(identity.channel, tokens.token, bus, ttl_seconds=60)
    await bus.start()
    verifier = JwtVerifier(
        VerifierSettings(issuer=identity.settings.token_issuer, audience=identity.settings.token_audience),
        JwksCache(identity_jwks_fetcher(identity.channel)),
        revocation=check,
    )
    return verifier, bus


async def _refused_within(verifier: JwtVerifier, token: str, seconds: float) -> tuple[str, float]:
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        try:
            await verifier.verify(token)
        except MeshError as error:
            return error.reason, time.monotonic() - started
        await asyncio.sleep(0.01)
    raise AssertionError(f"still accepted after {seconds}s")


async def test_consent_revocation_and_partner_suspension_reach_both_replicas_within_a_second(
    identity_on_redis: Identity, redis_url: str, key_prefix: str
) -> None:
    identity = identity_on_redis
    replicas = [await _replica(identity, redis_url, f"{key_prefix}invalidations") for _ in range(2)]
    try:
        partner = await identity.register_partner()
        bound, consent_name = await identity.consent_bound_token(partner)
        for verifier, _ in replicas:
            assert (await verifier.verify(bound.access_token)).consent_id == consent_name.split("/")[1]
        await identity.consents.RevokeConsent(
            consent_pb2.RevokeConsentRequest(request_id=request_id(), name=consent_name),
            metadata=bearer(await identity.client_token(partner)),
        )
        for verifier, _ in replicas:
            reason, elapsed = await _refused_within(verifier, bound.access_token, 1.0)
            assert reason == "CONSENT_REVOKED" and elapsed < 1.0

        own = await identity.client_token(partner)
        for verifier, _ in replicas:
            await verifier.verify(own)
        await identity.tokens.RevokeToken(
            token_pb2.RevokeTokenRequest(client_id=partner.client_id, client_secret=partner.secret, token=own)
        )
        for verifier, _ in replicas:
            assert (await _refused_within(verifier, own, 1.0))[0] == "TOKEN_REVOKED"

        wide = await identity.client_token(partner)
        for verifier, _ in replicas:
            await verifier.verify(wide)
        await identity.partners.SuspendPartner(
            partner_pb2.SuspendPartnerRequest(request_id=request_id(), name=partner.name),
            metadata=await identity.admin(),
        )
        for verifier, _ in replicas:
            reason, elapsed = await _refused_within(verifier, wide, 1.0)
            assert reason == "PARTNER_SUSPENDED" and elapsed < 1.0
    finally:
        for _, bus in replicas:
            await bus.close()
