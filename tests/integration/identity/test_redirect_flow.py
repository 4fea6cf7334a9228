"""The redirect flow's identity side over real gRPC (SQLite and PostgreSQL): registered redirect
URIs, PAR, the bank web app's one-time open and decision, and the code exchange."""

from __future__ import annotations

import grpc

from openbank.identity.v1 import authorization_pb2, authorization_pb2_grpc, consent_pb2, partner_pb2
from tests.integration.identity.harness import Identity, Partner, bearer, failure, pkce_pair, request_id

WALLET = "https://wallet.example/callback"
APPROVE = authorization_pb2.AUTHORIZATION_DECISION_APPROVE
REFUSE = authorization_pb2.AUTHORIZATION_DECISION_REFUSE


def stub(identity: Identity) -> authorization_pb2_grpc.AuthorizationServiceStub:
    return authorization_pb2_grpc.AuthorizationServiceStub(identity.channel)


async def push(
    identity: Identity, partner: Partner, consent: str, challenge: str, *, redirect_uri: str = WALLET, **fields: str
) -> authorization_pb2.PushAuthorizationRequestResponse:
    request = authorization_pb2.PushAuthorizationRequestRequest(
        request_id=request_id(),
        consent=consent,
        redirect_uri=redirect_uri,
        code_challenge=challenge,
        code_challenge_method="S256",
        state=fields.get("state", "wallet-state-123"),
    )
    return await stub(identity).PushAuthorizationRequest(request, metadata=bearer(await identity.client_token(partner)))


async def open_request(identity: Identity, client_id: str, request_uri: str) -> authorization_pb2.AuthorizationRequest:
    answer = await stub(identity).OpenAuthorizationRequest(
        authorization_pb2.OpenAuthorizationRequestRequest(
            request_id=request_id(), client_id=client_id, request_uri=request_uri
        ),
        metadata=await identity.bank_app(),
    )
    return answer.authorization_request


async def decide(
    identity: Identity, name: str, customer: str, decision: int, accounts: tuple[str, ...] = ("accounts/acc-1",)
) -> authorization_pb2.DecideAuthorizationRequestResponse:
    return await stub(identity).DecideAuthorizationRequest(
        authorization_pb2.DecideAuthorizationRequestRequest(
            request_id=request_id(), name=name, customer=customer, decision=decision, accounts=list(accounts)
        ),
        metadata=await identity.bank_app(),
    )


async def test_par_open_approve_and_exchange_end_to_end(identity: Identity) -> None:
    partner = await identity.register_partner(redirect_uris=[WALLET, "http://127.0.0.1:8765/cb"])
    verifier, challenge = pkce_pair()
    consent = await identity.create_consent(partner, challenge)
    pushed = await push(identity, partner, consent.name, challenge)
    assert pushed.request_uri.startswith("urn:ietf:params:oauth:request_uri:") and pushed.expires_in == 90

    opened = await open_request(identity, partner.client_id, pushed.request_uri)
    assert opened.redirect_uri == WALLET and opened.state == "wallet-state-123"
    assert opened.issuer == identity.settings.token_issuer and opened.partner_display_name == "Wallet"
    assert opened.consent.name == consent.name
    customer = await identity.create_customer()
    decided = await decide(identity, opened.name, customer.name, APPROVE)
    assert decided.code and not decided.error and decided.state == "wallet-state-123"
    assert decided.redirect_uri == WALLET and decided.issuer == identity.settings.token_issuer
    assert decided.consent.state == consent_pb2.CONSENT_STATE_AUTHORISED

    tokens = await identity.exchange(partner, decided.code, verifier)
    assert tokens.consent == consent.name
    # The code works once.
    assert await failure(identity.exchange(partner, decided.code, verifier)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_GRANT",
    )
    # The request is decided once.
    assert await failure(decide(identity, opened.name, customer.name, APPROVE)) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "INVALID_STATE_TRANSITION",
    )


async def test_a_refusal_rejects_the_consent_and_answers_access_denied(identity: Identity) -> None:
    partner = await identity.register_partner(redirect_uris=[WALLET])
    _, challenge = pkce_pair()
    consent = await identity.create_consent(partner, challenge)
    pushed = await push(identity, partner, consent.name, challenge)
    opened = await open_request(identity, partner.client_id, pushed.request_uri)
    customer = await identity.create_customer()
    decided = await decide(identity, opened.name, customer.name, REFUSE, accounts=())
    assert decided.error == "access_denied" and not decided.code
    assert decided.consent.state == consent_pb2.CONSENT_STATE_REJECTED


async def test_only_an_exactly_registered_redirect_uri_is_accepted(identity: Identity) -> None:
    partner = await identity.register_partner(redirect_uris=[WALLET])
    _, challenge = pkce_pair()
    consent = await identity.create_consent(partner, challenge)
    for wrong in (
        "https://evil.example/callback",
        WALLET + "/",
        WALLET + "?next=https://evil.example",
        "https://wallet.example/Callback",
        "https://wallet.example.evil.example/callback",
    ):
        assert await failure(push(identity, partner, consent.name, challenge, redirect_uri=wrong)) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "REDIRECT_URI_NOT_REGISTERED",
        ), wrong
    # Another partner's registration does not count.
    other = await identity.register_partner(redirect_uris=["https://other.example/cb"])
    assert await failure(push(identity, partner, consent.name, challenge, redirect_uri="https://other.example/cb")) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "REDIRECT_URI_NOT_REGISTERED",
    )
    # Nor can a partner push for another partner's consent.
    assert await failure(push(identity, other, consent.name, challenge, redirect_uri="https://other.example/cb")) == (
        grpc.StatusCode.NOT_FOUND,
        "RESOURCE_NOT_FOUND",
    )
    # A challenge that is not the consent's, a bad state, a bad method.
    _, another_challenge = pkce_pair()
    assert await failure(push(identity, partner, consent.name, another_challenge)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "FIELD_INVALID",
    )
    assert await failure(push(identity, partner, consent.name, challenge, state="")) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "FIELD_INVALID",
    )


async def test_registration_refuses_unsafe_redirect_uris_and_update_replaces_them(identity: Identity) -> None:
    for bad in (
        "http://wallet.example/cb",  # http off loopback
        "https://wallet.example/cb#frag",
        "https://user@wallet.example/cb",
        "javascript:alert(1)",
        "/relative",
        "https://wallet.example/cb with space",
    ):
        assert await failure(identity.register_partner(redirect_uris=[bad])) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "FIELD_INVALID",
        ), bad
    partner = await identity.register_partner(redirect_uris=[WALLET])
    updated = await identity.partners.UpdatePartner(
        partner_pb2.UpdatePartnerRequest(
            request_id=request_id(),
            name=partner.name,
            redirect_uris=partner_pb2.RedirectUriSet(redirect_uris=["https://wallet.example/new"]),
        ),
        metadata=await identity.admin(),
    )
    assert list(updated.partner.redirect_uris) == ["https://wallet.example/new"]
    got = await identity.partners.GetPartner(
        partner_pb2.GetPartnerRequest(name=partner.name), metadata=await identity.admin()
    )
    assert list(got.partner.redirect_uris) == ["https://wallet.example/new"]
    _, challenge = pkce_pair()
    consent = await identity.create_consent(partner, challenge)
    assert await failure(push(identity, partner, consent.name, challenge)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "REDIRECT_URI_NOT_REGISTERED",
    )


async def test_a_request_uri_opens_once_for_its_own_client_and_expires(identity: Identity) -> None:
    partner = await identity.register_partner(redirect_uris=[WALLET])
    _, challenge = pkce_pair()
    consent = await identity.create_consent(partner, challenge)
    pushed = await push(identity, partner, consent.name, challenge)
    invalid = (grpc.StatusCode.INVALID_ARGUMENT, "REQUEST_URI_INVALID")
    other = await identity.register_partner(redirect_uris=[WALLET])
    assert await failure(open_request(identity, other.client_id, pushed.request_uri)) == invalid
    assert await failure(open_request(identity, partner.client_id, pushed.request_uri + "x")) == invalid
    await open_request(identity, partner.client_id, pushed.request_uri)
    assert await failure(open_request(identity, partner.client_id, pushed.request_uri)) == invalid

    late = await push(identity, partner, consent.name, challenge)
    identity.clock.advance(seconds=91)
    assert await failure(open_request(identity, partner.client_id, late.request_uri)) == invalid


async def test_a_decision_after_the_window_is_refused(identity: Identity) -> None:
    partner = await identity.register_partner(redirect_uris=[WALLET])
    _, challenge = pkce_pair()
    consent = await identity.create_consent(partner, challenge)
    pushed = await push(identity, partner, consent.name, challenge)
    opened = await open_request(identity, partner.client_id, pushed.request_uri)
    customer = await identity.create_customer()
    identity.clock.advance(minutes=11)
    assert await failure(decide(identity, opened.name, customer.name, APPROVE)) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "AUTHORIZATION_REQUEST_EXPIRED",
    )


async def test_partners_cannot_open_or_decide(identity: Identity) -> None:
    partner = await identity.register_partner(redirect_uris=[WALLET])
    _, challenge = pkce_pair()
    consent = await identity.create_consent(partner, challenge)
    pushed = await push(identity, partner, consent.name, challenge)
    token = bearer(await identity.client_token(partner))
    code, reason = await failure(
        stub(identity).OpenAuthorizationRequest(
            authorization_pb2.OpenAuthorizationRequestRequest(
                request_id=request_id(), client_id=partner.client_id, request_uri=pushed.request_uri
            ),
            metadata=token,
        )
    )
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "INSUFFICIENT_SCOPE")
