"""TokenService over real gRPC: client authentication, client credentials, revocation,
introspection, and every way a presented token can be wrong (SQLite and PostgreSQL)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid

import grpc
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from openbank.identity.v1 import consent_pb2, partner_pb2, token_pb2
from services.identity.domain.tokens import CLIENT_ASSERTION_TYPE
from tests.integration.identity.harness import Identity, bearer, failure, request_id

CC = token_pb2.GRANT_TYPE_CLIENT_CREDENTIALS


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _hs256(claims: dict[str, object], kid: str, secret: bytes) -> str:
    """Algorithm confusion: HMAC-signed with the public key material as the secret."""
    signing_input = f"{_b64(json.dumps({'alg': 'HS256', 'kid': kid, 'typ': 'at+jwt'}).encode())}." + _b64(
        json.dumps(claims).encode()
    )
    return f"{signing_input}.{_b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())}"


def _cc(client_id: str, secret: str, scopes: list[str]) -> token_pb2.IssueTokenRequest:
    return token_pb2.IssueTokenRequest(grant_type=CC, client_id=client_id, client_secret=secret, scopes=scopes)


async def test_client_credentials_token_carries_the_documented_claims(identity: Identity) -> None:
    partner = await identity.register_partner()
    answer = await identity.tokens.IssueToken(_cc(partner.client_id, partner.secret, ["consents:write"]))
    assert answer.token_type == "Bearer" and answer.expires_in == 300 and answer.refresh_token == ""
    header = jwt.get_unverified_header(answer.access_token)
    jwks = json.loads((await identity.tokens.GetJwks(token_pb2.GetJwksRequest())).jwks_json)
    assert header["alg"] == "ES256" and header["typ"] == "at+jwt" and header["kid"] == jwks["keys"][0]["kid"]
    key = jwt.PyJWK(jwks["keys"][0])
    claims = jwt.decode(answer.access_token, key.key, algorithms=["ES256"], audience="openbank-mesh")
    assert claims["iss"] == identity.settings.token_issuer
    assert claims["sub"] == claims["partner_id"] == partner.partner_id
    assert claims["client_id"] == partner.client_id and claims["scope"] == "consents:write"
    assert claims["tier"] == "gold" and claims["exp"] - claims["iat"] == 300 and claims["nbf"] == claims["iat"]
    assert "consent_id" not in claims and len(claims["jti"]) == 32
    # The token works on identity's own public rpcs.
    created = await identity.create_consent(partner, "A" * 43)
    assert created.state == consent_pb2.CONSENT_STATE_AWAITING_AUTHORISATION


async def test_unknown_client_and_wrong_secret_get_the_same_answer(identity: Identity) -> None:
    partner = await identity.register_partner()
    errors = []
    for request in (
        _cc("obc_doesnotexist", partner.secret, ["consents:write"]),
        _cc(partner.client_id, "wrong-secret", ["consents:write"]),
    ):
        try:
            await identity.tokens.IssueToken(request)
        except grpc.aio.AioRpcError as error:
            errors.append((error.code(), error.details()))
    assert errors[0] == errors[1] and errors[0][0] == grpc.StatusCode.UNAUTHENTICATED
    assert await failure(identity.tokens.IssueToken(_cc("nobody", "x", ["consents:write"]))) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "INVALID_CLIENT",
    )


async def test_scopes_must_be_within_the_partners_allowed_scopes(identity: Identity) -> None:
    partner = await identity.register_partner(scopes=("consents:write",))
    for scopes in (["payments:write"], ["ledger:write"], ["consents:write", "identity:admin"]):
        assert await failure(identity.tokens.IssueToken(_cc(partner.client_id, partner.secret, scopes))) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_SCOPE",
        )


async def test_suspended_partner_learns_it_only_with_correct_credentials(identity: Identity) -> None:
    partner = await identity.register_partner()
    token = await identity.client_token(partner)
    await identity.partners.SuspendPartner(
        partner_pb2.SuspendPartnerRequest(request_id=request_id(), name=partner.name), metadata=await identity.admin()
    )
    assert await failure(identity.tokens.IssueToken(_cc(partner.client_id, partner.secret, ["consents:write"]))) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "PARTNER_SUSPENDED",
    )
    assert await failure(identity.tokens.IssueToken(_cc(partner.client_id, "wrong", ["consents:write"]))) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "INVALID_CLIENT",
    )
    # Its existing token is dead at once (in-process bus), and introspects inactive.
    assert await failure(
        identity.consents.GetConsent(consent_pb2.GetConsentRequest(name="consents/x"), metadata=bearer(token))
    ) == (grpc.StatusCode.PERMISSION_DENIED, "PARTNER_SUSPENDED")
    assert (await identity.introspect(token)).active is False
    # Reactivation: old tokens stay dead, new ones work.
    await identity.partners.ReactivatePartner(
        partner_pb2.ReactivatePartnerRequest(request_id=request_id(), name=partner.name),
        metadata=await identity.admin(),
    )
    assert (await identity.introspect(token)).active is False
    fresh = await identity.client_token(partner)
    assert (await identity.introspect(fresh)).active is True


async def test_bad_requests_name_the_field(identity: Identity) -> None:
    partner = await identity.register_partner()
    cases = [
        token_pb2.IssueTokenRequest(
            client_id=partner.client_id, client_secret=partner.secret, scopes=["consents:write"]
        ),
        _cc("", partner.secret, ["consents:write"]),
        _cc(partner.client_id, partner.secret, []),
        token_pb2.IssueTokenRequest(grant_type=CC, client_id=partner.client_id, scopes=["consents:write"]),
        token_pb2.IssueTokenRequest(
            grant_type=token_pb2.GRANT_TYPE_AUTHORIZATION_CODE,
            client_id=partner.client_id,
            client_secret=partner.secret,
        ),
        token_pb2.IssueTokenRequest(
            grant_type=token_pb2.GRANT_TYPE_REFRESH_TOKEN, client_id=partner.client_id, client_secret=partner.secret
        ),
    ]
    for request in cases:
        assert await failure(identity.tokens.IssueToken(request)) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "FIELD_INVALID",
        ), request
    unknown_grant = _cc(partner.client_id, partner.secret, ["consents:write"])
    unknown_grant.grant_type = 7  # type: ignore[assignment]
    assert await failure(identity.tokens.IssueToken(unknown_grant)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "UNSUPPORTED_GRANT_TYPE",
    )
    internal_code_grant = token_pb2.IssueTokenRequest(
        grant_type=token_pb2.GRANT_TYPE_AUTHORIZATION_CODE,
        client_id="gateway",
        client_secret="gateway-secret-0123456789",
        code="c",
        code_verifier="v" * 43,
    )
    assert await failure(identity.tokens.IssueToken(internal_code_grant)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "UNSUPPORTED_GRANT_TYPE",
    )


async def test_private_key_jwt_client_assertion(identity: Identity) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    registered = await identity.partners.RegisterPartner(
        partner_pb2.RegisterPartnerRequest(
            request_id=request_id(),
            display_name="JWT Wallet",
            allowed_scopes=["consents:write"],
            rate_limit_tier="gold",
            token_endpoint_auth_method=partner_pb2.TOKEN_ENDPOINT_AUTH_METHOD_PRIVATE_KEY_JWT,
            public_key_pem=pem,
        ),
        metadata=await identity.admin(),
    )
    client_id = registered.partner.client_id

    def assertion(**overrides: object) -> str:
        now = int(time.time())
        claims = {
            "iss": client_id,
            "sub": client_id,
            "aud": identity.settings.token_issuer,
            "iat": now,
            "exp": now + 120,
            "jti": uuid.uuid4().hex,
        }
        claims.update(overrides)
        return jwt.encode(claims, key, algorithm="ES256")

    def request(signed: str) -> token_pb2.IssueTokenRequest:
        return token_pb2.IssueTokenRequest(
            grant_type=CC,
            client_id=client_id,
            client_assertion=signed,
            client_assertion_type=CLIENT_ASSERTION_TYPE,
            scopes=["consents:write"],
        )

    signed = assertion()
    assert (await identity.tokens.IssueToken(request(signed))).access_token
    # A replayed assertion, a foreign key, a long-lived or mis-addressed one: all INVALID_CLIENT.
    other = ec.generate_private_key(ec.SECP256R1())
    now = int(time.time())
    bad = [
        signed,
        jwt.encode(
            {"iss": client_id, "sub": client_id, "aud": identity.settings.token_issuer, "exp": now + 60, "jti": "x1"},
            other,
            algorithm="ES256",
        ),
        assertion(exp=now + 3600),
        assertion(aud="https://elsewhere"),
        assertion(iss="someone-else"),
    ]
    for candidate in bad:
        assert await failure(identity.tokens.IssueToken(request(candidate))) == (
            grpc.StatusCode.UNAUTHENTICATED,
            "INVALID_CLIENT",
        )
    # A secret is not accepted for a private_key_jwt partner.
    assert await failure(identity.tokens.IssueToken(_cc(client_id, "guess", ["consents:write"]))) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "INVALID_CLIENT",
    )


async def test_internal_clients_get_service_tokens(identity: Identity) -> None:
    token = await identity.service_token("gateway")
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["sub"] == "service:gateway" and "partner_id" not in claims
    assert set(claims["scope"].split()) == {"tokens:introspect", "consents:read"}
    assert await failure(identity.tokens.IssueToken(_cc("gateway", "wrong", ["tokens:introspect"]))) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "INVALID_CLIENT",
    )
    assert await failure(
        identity.tokens.IssueToken(_cc("gateway", "gateway-secret-0123456789", ["identity:admin"]))
    ) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_SCOPE")


async def test_revocation_and_introspection(identity: Identity) -> None:
    partner = await identity.register_partner()
    token = await identity.client_token(partner)
    answer = await identity.introspect(token)
    assert answer.active and answer.client_id == partner.client_id and answer.partner == partner.name
    assert answer.partner_status == partner_pb2.PARTNER_STATUS_ACTIVE and answer.consent == ""
    assert set(answer.scopes) == {"consents:write", "consents:read"}
    # Another client cannot revoke it (silently), its owner can.
    other = await identity.register_partner()
    revoke = token_pb2.RevokeTokenRequest(client_id=other.client_id, client_secret=other.secret, token=token)
    await identity.tokens.RevokeToken(revoke)
    assert (await identity.introspect(token)).active
    revoke = token_pb2.RevokeTokenRequest(client_id=partner.client_id, client_secret=partner.secret, token=token)
    await identity.tokens.RevokeToken(revoke)
    await identity.tokens.RevokeToken(revoke)  # idempotent
    assert await identity.introspect(token) == token_pb2.IntrospectTokenResponse(active=False)
    assert await failure(
        identity.consents.GetConsent(consent_pb2.GetConsentRequest(name="consents/x"), metadata=bearer(token))
    ) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REVOKED")
    # Unknown tokens revoke fine; a wrong secret does not.
    await identity.tokens.RevokeToken(
        token_pb2.RevokeTokenRequest(client_id=partner.client_id, client_secret=partner.secret, token="garbage")
    )
    assert await failure(
        identity.tokens.RevokeToken(
            token_pb2.RevokeTokenRequest(client_id=partner.client_id, client_secret="nope", token=token)
        )
    ) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_CLIENT")
    assert await failure(
        identity.tokens.RevokeToken(
            token_pb2.RevokeTokenRequest(client_id=partner.client_id, client_secret=partner.secret)
        )
    ) == (grpc.StatusCode.INVALID_ARGUMENT, "FIELD_INVALID")
    assert (await identity.introspect("not-a-token")).active is False
    assert await failure(identity.introspect("")) == (grpc.StatusCode.INVALID_ARGUMENT, "FIELD_INVALID")
    partner_token = await identity.client_token(partner)
    assert await failure(
        identity.tokens.IntrospectToken(
            token_pb2.IntrospectTokenRequest(token=partner_token), metadata=bearer(partner_token)
        )
    ) == (grpc.StatusCode.PERMISSION_DENIED, "INSUFFICIENT_SCOPE")


async def test_every_bad_token_is_refused_with_its_reason(identity: Identity) -> None:
    partner = await identity.register_partner()
    good = await identity.client_token(partner)
    keys = identity.server.components.keys
    claims = jwt.decode(good, options={"verify_signature": False})
    now = int(time.time())
    expired = await keys.sign({**claims, "iat": now - 900, "nbf": now - 900, "exp": now - 600})
    wrong_audience = await keys.sign({**claims, "aud": "someone-else"})
    wrong_issuer = await keys.sign({**claims, "iss": "https://evil.example"})
    header, _payload, signature = good.split(".")
    forged_payload = base64.urlsafe_b64encode(json.dumps({**claims, "scope": "identity:admin"}).encode()).decode()
    tampered = f"{header}.{forged_payload.rstrip('=')}.{signature}"
    unsigned = jwt.encode(claims, None, algorithm="none")  # type: ignore[arg-type]
    jwk = (await identity.tokens.GetJwks(token_pb2.GetJwksRequest())).jwks_json
    confused = _hs256(claims, jwt.get_unverified_header(good)["kid"], jwk.encode())
    foreign_key = ec.generate_private_key(ec.SECP256R1())
    foreign = jwt.encode(claims, foreign_key, algorithm="ES256", headers={"kid": "unknown-kid"})
    cases = {
        expired: "TOKEN_EXPIRED",
        wrong_audience: "TOKEN_INVALID",
        wrong_issuer: "TOKEN_INVALID",
        tampered: "TOKEN_INVALID",
        unsigned: "TOKEN_INVALID",
        confused: "TOKEN_INVALID",
        foreign: "SIGNING_KEY_UNKNOWN",
        "garbage": "TOKEN_INVALID",
    }
    for token, reason in cases.items():
        got = await failure(
            identity.consents.GetConsent(consent_pb2.GetConsentRequest(name="consents/x"), metadata=bearer(token))
        )
        assert got == (grpc.StatusCode.UNAUTHENTICATED, reason), token
        assert (await identity.introspect(token)).active is False


async def test_a_certificate_bound_partner_needs_its_certificate(identity: Identity) -> None:
    partner = await identity.register_partner(tls_client_certificate_sha256="ab" * 32)
    # This test connection carries no client certificate at all.
    assert await failure(identity.tokens.IssueToken(_cc(partner.client_id, partner.secret, ["consents:write"]))) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "CLIENT_CERTIFICATE_MISMATCH",
    )
    assert await failure(identity.tokens.IssueToken(_cc(partner.client_id, "wrong", ["consents:write"]))) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "INVALID_CLIENT",
    )


async def test_taking_a_scope_away_stops_tokens_that_carry_it(identity: Identity) -> None:
    partner = await identity.register_partner(scopes=("consents:write", "consents:read"))
    token = await identity.client_token(partner, scopes=("consents:write", "consents:read"))
    narrow = await identity.client_token(partner, scopes=("consents:write",))
    await identity.partners.UpdatePartner(
        partner_pb2.UpdatePartnerRequest(
            request_id=request_id(), name=partner.name, allowed_scopes=partner_pb2.ScopeSet(scopes=["consents:write"])
        ),
        metadata=await identity.admin(),
    )
    assert (await identity.introspect(token)).active is False
    assert (await identity.introspect(narrow)).active is True
