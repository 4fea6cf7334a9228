"""Identity over real gRPC: it migrates, serves its JWKS, and the shared verifier uses it."""

from __future__ import annotations

import json

import grpc
import jwt

from meshlib.app import start_service
from meshlib.auth.jwks_client import identity_jwks_fetcher
from meshlib.auth.verifier import JwksCache, JwtVerifier, VerifierSettings
from openbank.identity.v1 import token_pb2, token_pb2_grpc
from services.identity.bootstrap import SPEC
from services.identity.settings import IdentitySettings


async def test_identity_serves_a_persistent_jwks_that_verifies_its_tokens(database_url: str) -> None:
    settings = IdentitySettings(
        port=0,
        database_url=database_url,
        service_name="identity",
        signing_key_passphrase="a-deployment-secret-of-some-length",
    )
    server = await start_service(SPEC, settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            answer = await token_pb2_grpc.TokenServiceStub(channel).GetJwks(token_pb2.GetJwksRequest(), timeout=5)
            assert len(answer.keys) == 1 and answer.keys[0].alg == "ES256"
            kid = answer.keys[0].kid
            # The key survives a restart (it is persisted, encrypted).
            keys = server.components.keys
            active = await keys.ensure_active_key()
            assert active.kid == kid
            token = jwt.encode(
                {
                    "iss": settings.token_issuer,
                    "aud": settings.token_audience,
                    "sub": "p1",
                    "jti": "j1",
                    "iat": 2_000_000_000 - 10,
                    "exp": 2_000_000_000 + 60,
                    "scope": "accounts:read",
                },
                active.private_key(settings.passphrase()),
                algorithm="ES256",
                headers={"kid": kid},
            )
            verifier = JwtVerifier(
                VerifierSettings(issuer=settings.token_issuer, audience=settings.token_audience),
                JwksCache(identity_jwks_fetcher(channel)),
                clock=lambda: 2_000_000_000,
            )
            assert json.loads(answer.jwks_json)["keys"][0]["kid"] == kid
            assert jwt.get_unverified_header(token)["kid"] == kid
            assert verifier.keys is not None
            assert (await verifier.keys.key(kid)) is not None
    finally:
        await server.stop(0)
