"""CheckTokenStatuses: the statuses of many tokens in one call, each as IntrospectToken
answers it (the batched re-check of the mesh's open streams), on both stores."""

from __future__ import annotations

import datetime as dt

import grpc

from meshlib.auth.context import Caller
from meshlib.auth.revocation import grpc_batch_introspector, token_status_of
from openbank.identity.v1 import consent_pb2, token_pb2
from tests.integration.identity.harness import Identity, bearer, failure, request_id


async def _statuses(identity: Identity, tokens: list[str]) -> list[token_pb2.IntrospectTokenResponse]:
    answer = await identity.tokens.CheckTokenStatuses(
        token_pb2.CheckTokenStatusesRequest(tokens=tokens), metadata=bearer(await identity.service_token("gateway"))
    )
    return list(answer.statuses)


async def test_each_token_is_answered_in_order_as_introspection_answers_it(identity: Identity) -> None:
    partner = await identity.register_partner()
    plain, revoked = await identity.client_token(partner), await identity.client_token(partner)
    bound, consent_name = await identity.consent_bound_token(partner)
    await identity.tokens.RevokeToken(
        token_pb2.RevokeTokenRequest(client_id=partner.client_id, client_secret=partner.secret, token=revoked)
    )
    tokens = [plain, revoked, bound.access_token, "not-a-token", plain]
    assert await _statuses(identity, tokens) == [await identity.introspect(token) for token in tokens]
    active, inactive = await _statuses(identity, [plain, revoked])
    assert active.active and not inactive.active

    # A change after the first check is seen (the state is read each time, the signature once).
    await identity.consents.RevokeConsent(
        consent_pb2.RevokeConsentRequest(request_id=request_id(), name=consent_name),
        metadata=bearer(await identity.client_token(partner)),
    )
    (ended,) = await _statuses(identity, [bound.access_token])
    assert not ended.active and ended.consent_state == consent_pb2.CONSENT_STATE_REVOKED
    assert ended == await identity.introspect(bound.access_token)

    # The mesh's batch introspector reads the same answers.
    batch = grpc_batch_introspector(identity.channel, lambda: identity.service_token("gateway"))
    callers = [_caller(token) for token in (plain, revoked, bound.access_token)]
    assert list(await batch(callers)) == [token_status_of(await identity.introspect(c.raw_token)) for c in callers]


async def test_the_batch_is_bounded_and_internal(identity: Identity) -> None:
    service = bearer(await identity.service_token("gateway"))
    for tokens in ([], ["x"] * 1001, ["x", ""]):
        assert await failure(
            identity.tokens.CheckTokenStatuses(token_pb2.CheckTokenStatusesRequest(tokens=tokens), metadata=service)
        ) == (grpc.StatusCode.INVALID_ARGUMENT, "FIELD_INVALID")
    partner_token = await identity.client_token(await identity.register_partner())
    assert await failure(
        identity.tokens.CheckTokenStatuses(
            token_pb2.CheckTokenStatusesRequest(tokens=[partner_token]), metadata=bearer(partner_token)
        )
    ) == (grpc.StatusCode.PERMISSION_DENIED, "INSUFFICIENT_SCOPE")


def _caller(token: str) -> Caller:
    return Caller(
        subject="",
        client_id="",
        scopes=frozenset(),
        token_id=token[-16:],
        expires_at=dt.datetime.now(dt.UTC),
        raw_token=token,
    )
