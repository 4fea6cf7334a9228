"""Client secrets over real gRPC: stored as keyed hashes, Argon2id ones from before still
work (and are re-hashed on success), and a client_id that keeps failing has its further
failures refused for a while, never its right credentials, without touching any other client."""

from __future__ import annotations

import asyncio

import grpc

from openbank.identity.v1 import token_pb2
from services.identity.domain.secrets import SecretHasher
from services.identity.unit_of_work import IdentityUnitOfWork
from tests.integration.identity.harness import Identity, Partner, failure


async def _stored_hash(identity: Identity, partner: Partner) -> str | None:
    async with IdentityUnitOfWork(identity.server.runtime.database, read_only=True) as uow:
        stored = await uow.partners.get(partner.partner_id)
    assert stored is not None
    return stored.client_secret_hash


def _issue(identity: Identity, partner: Partner, secret: str | None = None) -> grpc.aio.UnaryUnaryCall:
    return identity.tokens.IssueToken(
        token_pb2.IssueTokenRequest(
            grant_type=token_pb2.GRANT_TYPE_CLIENT_CREDENTIALS,
            client_id=partner.client_id,
            client_secret=partner.secret if secret is None else secret,
            scopes=["consents:read"],
        )
    )


async def test_secrets_are_keyed_hashes_and_argon2_ones_from_before_are_upgraded(identity: Identity) -> None:
    partner = await identity.register_partner()
    stored = await _stored_hash(identity, partner)
    assert stored is not None and stored.startswith("hmac-sha256$") and partner.secret not in stored
    assert (await _issue(identity, partner)).access_token

    # A partner registered before keyed hashes: its secret is stored as Argon2id.
    legacy = SecretHasher(time_cost=1, memory_cost_kib=1024, parallelism=1).hash(partner.secret)
    async with IdentityUnitOfWork(identity.server.runtime.database) as uow:
        assert await uow.partners.replace_secret_hash(partner.partner_id, stored, legacy)
        await uow.commit()
    assert await failure(_issue(identity, partner, "not-the-secret")) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "INVALID_CLIENT",
    )
    assert await _stored_hash(identity, partner) == legacy  # a wrong secret upgrades nothing
    assert (await _issue(identity, partner)).access_token
    upgraded = await _stored_hash(identity, partner)
    assert upgraded is not None and upgraded.startswith("hmac-sha256$")
    assert (await _issue(identity, partner)).access_token


async def test_a_client_failing_too_often_has_its_failures_refused_but_not_its_right_secret(
    identity: Identity,
) -> None:
    target, bystander = await identity.register_partner(), await identity.register_partner()
    max_failures = identity.settings.client_auth_max_failures
    for _ in range(max_failures):
        assert (await failure(_issue(identity, target, "guess")))[1] == "INVALID_CLIENT"
    # Locked: a further guess is refused at once, with the time to wait ...
    assert await failure(_issue(identity, target, "guess")) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "RATE_LIMIT_EXCEEDED",
    )
    # ... but whoever guessed in the partner's name cannot lock the partner out of its tokens.
    assert (await _issue(identity, target)).access_token
    assert (await _issue(identity, bystander)).access_token
    # The success cleared the count: the next guess is an ordinary failure again.
    assert (await failure(_issue(identity, target, "guess")))[1] == "INVALID_CLIENT"


async def test_a_legacy_argon2_secret_is_not_verified_while_its_client_is_locked(identity: Identity) -> None:
    partner = await identity.register_partner()
    stored = await _stored_hash(identity, partner)
    legacy = SecretHasher(time_cost=1, memory_cost_kib=1024, parallelism=1).hash(partner.secret)
    async with IdentityUnitOfWork(identity.server.runtime.database) as uow:
        assert await uow.partners.replace_secret_hash(partner.partner_id, stored, legacy)
        await uow.commit()
    for _ in range(identity.settings.client_auth_max_failures):
        await failure(_issue(identity, partner, "guess"))
    assert (await failure(_issue(identity, partner)))[1] == "RATE_LIMIT_EXCEEDED"
    assert await _stored_hash(identity, partner) == legacy
    await asyncio.sleep(1.1)  # the first lock lasts a second
    assert (await _issue(identity, partner)).access_token
