"""A signing-key rotation refuses no valid token: two identity replicas on one database,
two gateways, tokens issued and used continuously through the rotation, and an attacker
sending tokens with made-up kids to both gateways just before it and all along.

The verifiers run with their real JWKS cache (no refresh interval forced to 0, no cache
cleared by hand). The production timings (identity's 60 s publish lead, the gateways' 30 s
JWKS max age) make the run last a little over a minute, so ``make test`` runs them scaled
down six times (10 s lead, 5 s max age; the unknown-kid refetch interval stays the real 1 s,
so the lead still exceeds max age plus one refetch interval as in production) and the
production timings run with the ``slow`` tests.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.server import start_gateway
from gateway.settings import GatewaySettings
from meshlib.grpc_errors import decode_status, error_info
from meshlib.server import MeshServer
from openbank.identity.v1 import consent_pb2, consent_pb2_grpc, signing_key_pb2, token_pb2, token_pb2_grpc
from services.identity.settings import IdentitySettings
from tests.integration.gateway.upstream import start_fake_upstream
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

# The defaults a deployment runs with, not a scaled-down copy.
PUBLISH_LEAD_SECONDS = IdentitySettings.model_fields["signing_key_publish_lead_seconds"].default
JWKS_MAX_AGE_SECONDS = GatewaySettings.model_fields["jwks_max_age_seconds"].default
LIMITS = generous_limits()


@dataclass(frozen=True)
class Timings:
    publish_lead_seconds: float
    jwks_max_age_seconds: float


PRODUCTION = Timings(PUBLISH_LEAD_SECONDS, JWKS_MAX_AGE_SECONDS)
SCALED = Timings(10.0, 5.0)


@dataclass
class Mesh:
    identities: list[Identity]
    gateways: list[MeshServer]
    channels: list[grpc.aio.Channel]
    jwks_max_age_seconds: float  # what the gateways were started with


@pytest.fixture(
    params=[pytest.param(SCALED, id="scaled"), pytest.param(PRODUCTION, id="production", marks=pytest.mark.slow)]
)
async def mesh(postgres_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Mesh]:
    timings: Timings = request.param
    identities = [
        await start_identity(
            postgres_url,
            signing_key_publish_lead_seconds=timings.publish_lead_seconds,
            jwks_max_age_seconds=timings.jwks_max_age_seconds,
        )
        for _ in range(2)
    ]
    upstream_server, upstream_port, _ = await start_fake_upstream()
    limits = tmp_path / "limits.yaml"
    limits.write_text(LIMITS)
    gateways = []
    for identity in identities:
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
            jwks_max_age_seconds=timings.jwks_max_age_seconds,
        )
        gateways.append(await start_gateway(settings))
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{g.port}") for g in gateways]
    try:
        yield Mesh(identities, gateways, channels, settings.jwks_max_age_seconds)
    finally:
        for channel in channels:
            await channel.close()
        for gateway in gateways:
            await gateway.stop(0)
        await upstream_server.stop(0)
        for identity in identities:
            await stop_identity(identity)


def _reason(error: grpc.aio.AioRpcError) -> str:
    info = error_info(decode_status(error.trailing_metadata()))
    return info.reason if info else error.code().name


def _made_up_kid_token(identity: Identity, partner: Partner) -> str:
    """A token an attacker signed with its own key under a kid nobody published."""
    now = int(time.time())
    claims = {
        "iss": identity.settings.token_issuer,
        "aud": identity.settings.token_audience,
        "sub": partner.partner_id,
        "client_id": partner.client_id,
        "partner_id": partner.partner_id,
        "scope": "consents:read",
        "iat": now,
        "exp": now + 60,
        "jti": uuid.uuid4().hex,
    }
    key = ec.generate_private_key(ec.SECP256R1())
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": f"made-up-{uuid.uuid4().hex[:12]}"})


async def test_no_token_is_refused_during_a_rotation(mesh: Mesh) -> None:
    first = mesh.identities[0]
    assert (PUBLISH_LEAD_SECONDS, JWKS_MAX_AGE_SECONDS) == (60.0, 30.0)
    lead = first.settings.signing_key_publish_lead_seconds
    assert lead / mesh.jwks_max_age_seconds == PUBLISH_LEAD_SECONDS / JWKS_MAX_AGE_SECONDS  # the production proportions
    partner = await first.register_partner()
    _, challenge = pkce_pair()
    consent = await first.create_consent(partner, challenge)
    get_consent = consent_pb2.GetConsentRequest(name=consent.name)
    token_stubs = [token_pb2_grpc.TokenServiceStub(c) for c in mesh.channels]
    consent_stubs = [consent_pb2_grpc.ConsentServiceStub(c) for c in mesh.channels]
    issue = token_pb2.IssueTokenRequest(
        grant_type=token_pb2.GRANT_TYPE_CLIENT_CREDENTIALS,
        client_id=partner.client_id,
        client_secret=partner.secret,
        scopes=["consents:read"],
    )

    async def attack(stub: consent_pb2_grpc.ConsentServiceStub) -> str:
        try:
            await stub.GetConsent(get_consent, metadata=bearer(_made_up_kid_token(first, partner)), timeout=10)
        except grpc.aio.AioRpcError as error:
            return _reason(error)
        return "OK"

    # One made-up kid per gateway just before the rotation (it used to block the refetch
    # the new key needs for 10 s), then more all along.
    assert await asyncio.gather(*(attack(s) for s in consent_stubs)) == ["SIGNING_KEY_UNKNOWN"] * 2
    rotated = await first.signing_keys.RotateSigningKey(
        signing_key_pb2.RotateSigningKeyRequest(request_id=request_id()), metadata=await first.admin()
    )
    new_kid = rotated.active_key.kid
    attacks: Counter[str] = Counter()
    stop = asyncio.Event()

    async def keep_attacking() -> None:
        while not stop.is_set():
            for reason in await asyncio.gather(*(attack(s) for s in consent_stubs)):
                attacks[reason] += 1
            await asyncio.sleep(0.5)

    attacker = asyncio.create_task(keep_attacking())
    refused: list[tuple[str, int, str]] = []
    kids: Counter[str] = Counter()
    deadline = time.monotonic() + lead + 3.0
    turn = 0
    try:
        while time.monotonic() < deadline:
            turn += 1
            token = (await token_stubs[turn % 2].IssueToken(issue, timeout=10)).access_token
            kid = jwt.get_unverified_header(token)["kid"]
            kids[kid] += 1
            for index, stub in enumerate(consent_stubs):
                try:
                    await stub.GetConsent(get_consent, metadata=bearer(token), timeout=10)
                except grpc.aio.AioRpcError as error:
                    refused.append((kid, index, _reason(error)))
            await asyncio.sleep(0.05)  # continuous, not a load test
    finally:
        stop.set()
        await attacker
    assert refused == []
    assert kids[rotated.retiring_key.kid] > 5 and kids[new_kid] > 5, kids  # both keys signed during the run
    assert set(attacks) == {"SIGNING_KEY_UNKNOWN"} and attacks.total() > 10
