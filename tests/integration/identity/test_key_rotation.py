"""Signing-key rotation without downtime: tokens signed before and after both verify; once
the old key's last token can have expired it leaves the JWKS and its tokens fail."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import jwt
import pytest

from meshlib.auth.jwks_client import identity_jwks_fetcher
from meshlib.auth.verifier import JwksCache, JwtVerifier, VerifierSettings
from meshlib.errors import Unauthenticated
from openbank.identity.v1 import signing_key_pb2, token_pb2
from tests.integration.identity.harness import (
    Identity,
    ShiftableClock,
    failure,
    request_id,
    start_identity,
    stop_identity,
)


def _verifier(identity: Identity) -> JwtVerifier:
    """A fresh verifier that fetches identity's JWKS (as any service would)."""
    return JwtVerifier(
        VerifierSettings(issuer=identity.settings.token_issuer, audience=identity.settings.token_audience),
        JwksCache(identity_jwks_fetcher(identity.channel), refresh_interval_seconds=0),
    )


PUBLISH_LEAD_SECONDS = 2.0


@pytest.fixture
async def identity(database_url: str) -> AsyncIterator[Identity]:
    """Identity with a short publish lead (verifiers' JWKS copies scaled down to match)."""
    running = await start_identity(
        database_url,
        ShiftableClock(),
        signing_key_publish_lead_seconds=PUBLISH_LEAD_SECONDS,
        jwks_max_age_seconds=0.5,
    )
    try:
        yield running
    finally:
        await stop_identity(running)


async def test_rotation_keeps_old_tokens_valid_until_the_old_key_retires(identity: Identity) -> None:
    admin = await identity.admin()
    partner = await identity.register_partner()
    before = await identity.client_token(partner)
    rotation = signing_key_pb2.RotateSigningKeyRequest(request_id=request_id())
    rotated = await identity.signing_keys.RotateSigningKey(rotation, metadata=admin)
    assert rotated.active_key.state == signing_key_pb2.SIGNING_KEY_STATE_ACTIVE
    assert rotated.retiring_key.state == signing_key_pb2.SIGNING_KEY_STATE_RETIRING
    assert await identity.signing_keys.RotateSigningKey(rotation, metadata=admin) == rotated  # replay
    identity.server.components.keys.forget_cached_jwks()
    # The new key is published at once, but the old one signs until the publish lead passed.
    jwks = await identity.tokens.GetJwks(token_pb2.GetJwksRequest())
    assert [k.kid for k in jwks.keys] == [rotated.active_key.kid, rotated.retiring_key.kid]
    assert jwt.get_unverified_header(await identity.client_token(partner))["kid"] == rotated.retiring_key.kid
    await asyncio.sleep(PUBLISH_LEAD_SECONDS + 0.2)
    identity.server.components.keys.forget_cached_jwks()
    after = await identity.client_token(partner)
    assert jwt.get_unverified_header(after)["kid"] == rotated.active_key.kid

    verifier = _verifier(identity)
    assert (await verifier.verify(before)).partner_id == partner.partner_id
    assert (await verifier.verify(after)).partner_id == partner.partner_id

    # Past the access-token lifetime plus margin the retiring key leaves the JWKS.
    identity.clock.advance(seconds=identity.settings.access_token_ttl_seconds + 60)
    identity.server.components.keys.forget_cached_jwks()
    jwks = await identity.tokens.GetJwks(token_pb2.GetJwksRequest())
    assert [k.kid for k in jwks.keys] == [rotated.active_key.kid]
    listed = await identity.signing_keys.ListSigningKeys(signing_key_pb2.ListSigningKeysRequest(), metadata=admin)
    assert [k.state for k in listed.signing_keys] == [
        signing_key_pb2.SIGNING_KEY_STATE_ACTIVE,
        signing_key_pb2.SIGNING_KEY_STATE_RETIRED,
    ]
    fresh = _verifier(identity)
    try:
        await fresh.verify(before)
        raise AssertionError("a token of a retired key must fail")
    except Unauthenticated as error:
        assert error.reason == "SIGNING_KEY_UNKNOWN"
    assert (await fresh.verify(after)).partner_id == partner.partner_id
    assert await failure(
        identity.signing_keys.RotateSigningKey(signing_key_pb2.RotateSigningKeyRequest(request_id=""), metadata=admin)
    ) == (grpc.StatusCode.INVALID_ARGUMENT, "FIELD_INVALID")
