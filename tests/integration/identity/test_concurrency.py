"""Races that must stay safe on both stores: twin requests, a code exchanged twice at once."""

from __future__ import annotations

import asyncio

import grpc

from openbank.identity.v1 import partner_pb2
from tests.integration.identity.harness import Identity, failure, pkce_pair, request_id


async def test_twin_registrations_create_one_partner(identity: Identity) -> None:
    admin = await identity.admin()
    request = partner_pb2.RegisterPartnerRequest(
        request_id=request_id(),
        display_name="Twin",
        allowed_scopes=["consents:write"],
        rate_limit_tier="gold",
        token_endpoint_auth_method=partner_pb2.TOKEN_ENDPOINT_AUTH_METHOD_CLIENT_SECRET_POST,
    )
    answers = await asyncio.gather(*(identity.partners.RegisterPartner(request, metadata=admin) for _ in range(4)))
    assert len({a.partner.name for a in answers}) == 1
    assert sum(1 for a in answers if a.client_secret) == 1  # the secret is shown exactly once
    listed = await identity.partners.ListPartners(partner_pb2.ListPartnersRequest(), metadata=admin)
    assert [p.name for p in listed.partners] == [answers[0].partner.name]


async def test_a_code_exchanged_twice_at_once_yields_no_live_token(identity: Identity) -> None:
    partner = await identity.register_partner()
    verifier, challenge = pkce_pair()
    consent = await identity.create_consent(partner, challenge)
    authorised = await identity.authorise(consent.name, await identity.create_customer())
    results = await asyncio.gather(
        *(identity.exchange(partner, authorised.authorization_code, verifier) for _ in range(3)),
        return_exceptions=True,
    )
    winners = [r for r in results if not isinstance(r, BaseException)]
    losers = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(winners) <= 1 and len(winners) + len(losers) == 3
    for loser in losers:
        assert loser.code() == grpc.StatusCode.INVALID_ARGUMENT
    # The replay revoked what the winner got: a stolen code can never yield a usable token.
    for winner in winners:
        assert (await identity.introspect(winner.access_token)).active is False
        assert await failure(identity.refresh(partner, winner.refresh_token)) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_GRANT",
        )
