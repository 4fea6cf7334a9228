"""The decoupled flow (CIBA poll mode) at identity over real gRPC (SQLite and PostgreSQL): the
wallet starts it for a customer it names, the bank's web app lists and decides it, the wallet
polls the token endpoint (authorization_pending with the interval, slow_down, access_denied,
expired_token) and gets consent-bound tokens once."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2

from meshlib.grpc_errors import decode_status
from openbank.identity.v1 import (
    authorization_pb2_grpc,
    consent_pb2,
    decoupled_authorization_pb2,
    token_pb2,
)
from tests.integration.identity.harness import Identity, Partner, bearer, failure, pkce_pair, request_id

APPROVE = decoupled_authorization_pb2.DECOUPLED_DECISION_APPROVE
REFUSE = decoupled_authorization_pb2.DECOUPLED_DECISION_REFUSE


def stub(identity: Identity) -> authorization_pb2_grpc.AuthorizationServiceStub:
    return authorization_pb2_grpc.AuthorizationServiceStub(identity.channel)


async def start(
    identity: Identity, partner: Partner, consent: str, login_hint: str, *, binding_message: str = "Top-up 4F2K", **kw
) -> decoupled_authorization_pb2.StartDecoupledAuthorizationResponse:
    request = decoupled_authorization_pb2.StartDecoupledAuthorizationRequest(
        request_id=kw.get("request_id") or request_id(),
        consent=consent,
        login_hint=login_hint,
        binding_message=binding_message,
    )
    return await stub(identity).StartDecoupledAuthorization(
        request, metadata=bearer(await identity.client_token(partner))
    )


async def pending(identity: Identity, customer: str) -> list[decoupled_authorization_pb2.DecoupledAuthorization]:
    answer = await stub(identity).ListDecoupledAuthorizations(
        decoupled_authorization_pb2.ListDecoupledAuthorizationsRequest(customer=customer),
        metadata=await identity.bank_app(),
    )
    return list(answer.decoupled_authorizations)


async def decide(
    identity: Identity, name: str, customer: str, decision: int, accounts: tuple[str, ...] = ("accounts/acc-1",)
) -> decoupled_authorization_pb2.DecideDecoupledAuthorizationResponse:
    return await stub(identity).DecideDecoupledAuthorization(
        decoupled_authorization_pb2.DecideDecoupledAuthorizationRequest(
            request_id=request_id(), name=name, customer=customer, decision=decision, accounts=list(accounts)
        ),
        metadata=await identity.bank_app(),
    )


async def poll(identity: Identity, partner: Partner, auth_req_id: str) -> token_pb2.IssueTokenResponse:
    return await identity.tokens.IssueToken(
        token_pb2.IssueTokenRequest(
            grant_type=token_pb2.GRANT_TYPE_CIBA,
            client_id=partner.client_id,
            client_secret=partner.secret,
            auth_req_id=auth_req_id,
        )
    )


async def refused_poll(identity: Identity, partner: Partner, auth_req_id: str) -> tuple[grpc.StatusCode, str, float]:
    """A poll that fails: its code, reason and RetryInfo delay (0 without one)."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await poll(identity, partner, auth_req_id)
    status = decode_status(caught.value.trailing_metadata())
    assert status is not None
    delay, reason = 0.0, ""
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            delay = retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
    return caught.value.code(), reason, delay


async def test_start_pending_slow_down_approve_and_tokens_once(identity: Identity) -> None:
    partner = await identity.register_partner()
    _, challenge = pkce_pair()
    consent = await identity.create_consent(partner, challenge)
    customer = await identity.create_customer()
    key = request_id()
    started = await start(identity, partner, consent.name, customer.username, request_id=key)
    assert started.auth_req_id and started.expires_in == 600 and started.interval == 5
    again = await start(identity, partner, consent.name, customer.username, request_id=key)
    assert again.auth_req_id == started.auth_req_id  # a replay answers the first answer

    (shown,) = await pending(identity, customer.name)
    assert shown.binding_message == "Top-up 4F2K" and shown.partner_display_name == "Wallet"
    assert shown.consent.name == consent.name and shown.name.startswith("decoupledAuthorizations/")

    assert await refused_poll(identity, partner, started.auth_req_id) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "AUTHORIZATION_PENDING",
        5.0,
    )
    # Too soon: slow down, and the interval grows by five seconds.
    assert await refused_poll(identity, partner, started.auth_req_id) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "SLOW_DOWN",
        10.0,
    )
    identity.clock.advance(seconds=11)
    code, reason, delay = await refused_poll(identity, partner, started.auth_req_id)
    assert (code, reason, delay) == (grpc.StatusCode.FAILED_PRECONDITION, "AUTHORIZATION_PENDING", 10.0)

    decided = await decide(identity, shown.name, customer.name, APPROVE)
    assert decided.consent.state == consent_pb2.CONSENT_STATE_AUTHORISED
    assert list(decided.consent.accounts) == ["accounts/acc-1"]
    assert await pending(identity, customer.name) == []
    tokens = await poll(identity, partner, started.auth_req_id)  # at once: a decision is told whenever polled
    assert tokens.consent == consent.name and tokens.refresh_token and tokens.access_token.count(".") == 2
    # Tokens go out once; the request is decided once.
    assert await failure(poll(identity, partner, started.auth_req_id)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_GRANT",
    )
    assert await failure(decide(identity, shown.name, customer.name, REFUSE, ())) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "INVALID_STATE_TRANSITION",
    )


async def test_refused_and_expired_requests(identity: Identity) -> None:
    partner = await identity.register_partner()
    customer = await identity.create_customer()
    _, challenge = pkce_pair()
    refused_consent = await identity.create_consent(partner, challenge)
    refused = await start(identity, partner, refused_consent.name, customer.username)
    (shown,) = await pending(identity, customer.name)
    await decide(identity, shown.name, customer.name, REFUSE, ())
    assert (await refused_poll(identity, partner, refused.auth_req_id))[:2] == (
        grpc.StatusCode.PERMISSION_DENIED,
        "ACCESS_DENIED",
    )
    consent = await identity.consents.GetConsent(
        consent_pb2.GetConsentRequest(name=refused_consent.name), metadata=bearer(await identity.client_token(partner))
    )
    assert consent.consent.state == consent_pb2.CONSENT_STATE_REJECTED

    late_consent = await identity.create_consent(partner, challenge)
    late = await start(identity, partner, late_consent.name, customer.username)
    (shown,) = await pending(identity, customer.name)
    identity.clock.advance(seconds=601)
    assert await pending(identity, customer.name) == []
    assert (await refused_poll(identity, partner, late.auth_req_id))[:2] == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "EXPIRED_TOKEN",
    )
    assert await failure(decide(identity, shown.name, customer.name, APPROVE)) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "AUTHORIZATION_REQUEST_EXPIRED",
    )


async def test_nobody_else_can_see_decide_or_poll_it(identity: Identity) -> None:
    partner, other = await identity.register_partner(), await identity.register_partner()
    alice, bob = await identity.create_customer(), await identity.create_customer()
    _, challenge = pkce_pair()
    consent = await identity.create_consent(partner, challenge)
    started = await start(identity, partner, consent.name, alice.username)
    (shown,) = await pending(identity, alice.name)
    assert await pending(identity, bob.name) == []
    assert await failure(decide(identity, shown.name, bob.name, APPROVE)) == (
        grpc.StatusCode.NOT_FOUND,
        "RESOURCE_NOT_FOUND",
    )
    # Another partner can neither poll it nor start one on this partner's consent.
    assert await failure(poll(identity, other, started.auth_req_id)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_GRANT",
    )
    assert await failure(start(identity, other, consent.name, alice.username)) == (
        grpc.StatusCode.NOT_FOUND,
        "RESOURCE_NOT_FOUND",
    )
    # An unknown customer: the same answer, and a request nobody sees.
    nobody = await start(identity, partner, consent.name, "no-such-customer")
    assert nobody.auth_req_id and nobody.interval == 5
    assert (await refused_poll(identity, partner, nobody.auth_req_id))[1] == "AUTHORIZATION_PENDING"
    # Bad input names the field.
    for hint, message in (("", "ok"), ("has space", "ok"), ("alice", ""), ("alice", "x" * 65), ("alice", "a\nb")):
        assert await failure(start(identity, partner, consent.name, hint, binding_message=message)) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "FIELD_INVALID",
        )
    # The partner revokes the consent: the poll ends with the consent's reason, nothing is listed.
    await identity.consents.RevokeConsent(
        consent_pb2.RevokeConsentRequest(request_id=request_id(), name=consent.name),
        metadata=bearer(await identity.client_token(partner)),
    )
    assert await pending(identity, alice.name) == []
    code, reason, _ = await refused_poll(identity, partner, started.auth_req_id)
    assert code == grpc.StatusCode.FAILED_PRECONDITION and reason == "CONSENT_REVOKED"
    assert await failure(start(identity, partner, consent.name, alice.username)) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "CONSENT_REVOKED",
    )
