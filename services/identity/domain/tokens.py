"""Access tokens, authorization codes and refresh tokens: claims and one-time-use rules.

Access tokens are ES256 JWTs (RFC 9068 profile, ``typ: at+jwt``). Authorization codes and
refresh tokens are random opaque strings; only their SHA-256 digests are stored. A refresh
token belongs to a *family* (one per authorization code): presenting a used one revokes
the whole family (OAuth 2.0 Security BCP, refresh token rotation).
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from dataclasses import dataclass, replace
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization

from meshlib.errors import InvalidArgument, Unauthenticated
from meshlib.request_text import TextKind, TextRule, string_problem
from services.identity.domain.secrets import b64url_sha256, constant_time_equal

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_ASSERTION_LIFETIME = dt.timedelta(minutes=5)
ASSERTION_JTI = TextRule(TextKind.TOKEN, 128)  # client_assertions.jti
_VERIFIER = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")


def invalid_client() -> Unauthenticated:
    """The one answer for an unknown client, a wrong secret or a bad assertion."""
    return Unauthenticated("client authentication failed", reason="INVALID_CLIENT")


def invalid_grant(message: str = "the authorization grant is invalid, expired or already used") -> InvalidArgument:
    """OAuth ``invalid_grant``."""
    return InvalidArgument.field("code", message, reason="INVALID_GRANT")


def pkce_matches(code_verifier: str, code_challenge: str) -> bool:
    """RFC 7636 S256: BASE64URL(SHA256(verifier)) == challenge, verifier well formed."""
    if not _VERIFIER.match(code_verifier):
        return False
    return constant_time_equal(b64url_sha256(code_verifier), code_challenge)


@dataclass(frozen=True)
class AccessTokenGrant:
    """Who an access token is for and what it may do (the source of its claims)."""

    subject: str
    client_id: str
    scopes: tuple[str, ...]
    partner_id: str | None = None
    consent_id: str | None = None
    customer_id: str | None = None
    tier: str | None = None
    family_id: str | None = None
    # RFC 8705 ``x5t#S256`` of the client certificate the token is bound to, if it is.
    certificate_thumbprint: str | None = None


def access_token_claims(
    grant: AccessTokenGrant, *, issuer: str, audience: str, now: dt.datetime, lifetime: dt.timedelta
) -> dict[str, Any]:
    """The JWT payload: registered claims plus the mesh's own."""
    issued = int(now.timestamp())
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "sub": grant.subject,
        "client_id": grant.client_id,
        "scope": " ".join(grant.scopes),
        "iat": issued,
        "nbf": issued,
        "exp": issued + int(lifetime.total_seconds()),
        "jti": uuid.uuid4().hex,
    }
    optional = {
        "partner_id": grant.partner_id,
        "consent_id": grant.consent_id,
        "customer_id": grant.customer_id,
        "tier": grant.tier,
    }
    claims.update({k: v for k, v in optional.items() if v})
    if grant.certificate_thumbprint:
        claims["cnf"] = {"x5t#S256": grant.certificate_thumbprint}
    return claims


@dataclass(frozen=True)
class IssuedToken:
    """A record of an issued access token (for revocation and introspection)."""

    jti: str
    client_id: str
    partner_id: str | None
    consent_id: str | None
    family_id: str | None
    issued_at: dt.datetime
    expires_at: dt.datetime
    revoked_at: dt.datetime | None = None


@dataclass(frozen=True)
class AuthorizationCode:
    """A one-time code from AuthoriseConsent, bound to partner, consent and PKCE challenge."""

    code_hash: str
    consent_id: str
    partner_id: str
    customer_id: str
    code_challenge: str
    expires_at: dt.datetime
    used_at: dt.datetime | None = None

    @property
    def family_id(self) -> str:
        """Every token that descends from this code shares this family id."""
        return self.code_hash[:32]

    def used(self, now: dt.datetime) -> AuthorizationCode:
        """Mark consumed (also when the exchange then fails: a code is tried once)."""
        return replace(self, used_at=now)


@dataclass(frozen=True)
class RefreshToken:
    """A single-use refresh token of a family."""

    token_hash: str
    family_id: str
    partner_id: str
    client_id: str
    consent_id: str
    customer_id: str
    scopes: tuple[str, ...]
    issued_at: dt.datetime
    expires_at: dt.datetime
    used_at: dt.datetime | None = None
    revoked_at: dt.datetime | None = None


def verify_client_assertion(
    assertion: str, *, client_id: str, public_key_pem: str, audiences: tuple[str, ...], now: dt.datetime
) -> dict[str, Any]:
    """Check an RFC 7523 client assertion; INVALID_CLIENT on any defect. Returns its claims."""
    try:
        header = jwt.get_unverified_header(assertion)
        algorithm = header.get("alg")
        if algorithm not in ("ES256", "RS256"):
            raise invalid_client()
        key = serialization.load_pem_public_key(public_key_pem.encode())
        claims = jwt.decode(
            assertion,
            key=key,
            algorithms=[algorithm],
            audience=list(audiences),  # type: ignore[arg-type]
            options={"require": ["iss", "sub", "aud", "exp", "jti"], "verify_exp": False},
        )
    except (jwt.PyJWTError, ValueError, TypeError):
        raise invalid_client() from None
    expires = claims["exp"]
    if claims["iss"] != client_id or claims["sub"] != client_id or not isinstance(expires, int | float):
        raise invalid_client()
    seconds_left = expires - now.timestamp()
    if seconds_left <= 0 or seconds_left > MAX_ASSERTION_LIFETIME.total_seconds():
        raise invalid_client()
    # The jti is stored (replay protection): visible ASCII only, as every stored identifier.
    if not isinstance(claims["jti"], str) or not claims["jti"] or string_problem(claims["jti"], ASSERTION_JTI):
        raise invalid_client()
    return claims
