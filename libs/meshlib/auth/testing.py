"""A throwaway ES256 token issuer for tests and local tools (never used in production).

It signs tokens the shared verifier accepts, so a service's tests can call it over real
gRPC without running the identity service.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from meshlib.auth.verifier import ALGORITHM, JwksCache, JwtVerifier, VerifierSettings, static_jwks


class TestIssuer:
    """Mints access tokens with a fresh P-256 key and serves the matching JWKS."""

    __test__ = False  # not a pytest class

    def __init__(self, issuer: str = "https://identity.test", audience: str = "openbank-mesh") -> None:
        self.issuer = issuer
        self.audience = audience
        self.private_key = ec.generate_private_key(ec.SECP256R1())
        self.kid = uuid.uuid4().hex[:16]

    @property
    def jwks(self) -> dict[str, Any]:
        """The public key set, as identity's GetJwks would serve it."""
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.private_key.public_key()))
        jwk.update({"kid": self.kid, "alg": ALGORITHM, "use": "sig"})
        return {"keys": [jwk]}

    def token(
        self,
        subject: str = "partner-1",
        *,
        scopes: list[str] | tuple[str, ...] = (),
        lifetime_seconds: int = 300,
        headers: dict[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        """A signed access token; extra keyword claims are merged in."""
        now = int(time.time())
        payload: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            "client_id": claims.pop("client_id", subject),
            "scope": " ".join(scopes),
            "iat": now,
            "nbf": now,
            "exp": now + lifetime_seconds,
            "jti": uuid.uuid4().hex,
        }
        payload.update(claims)
        return jwt.encode(
            payload,
            self.private_key,
            algorithm=ALGORITHM,
            headers={"kid": self.kid, "typ": "at+jwt", **(headers or {})},
        )

    def verifier(self, **kwargs: Any) -> JwtVerifier:
        """A verifier that trusts this issuer."""
        settings = VerifierSettings(issuer=self.issuer, audience=self.audience)
        # A fixed key set: an unknown kid need not wait for a refetch slot.
        return JwtVerifier(settings, JwksCache(static_jwks(self.jwks), refresh_interval_seconds=0), **kwargs)


class NeverRevoked:
    """A revocation check that accepts every token: for a test that runs no identity to ask
    (a process without service credentials otherwise fails closed, refusing every token)."""

    __test__ = False

    async def check(self, caller: object) -> None:
        """Accept."""
