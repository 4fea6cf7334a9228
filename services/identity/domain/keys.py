"""Signing keys: plain domain rules, no database, no gRPC.

A key is ACTIVE (signs new tokens), RETIRING (no longer signs, still published so tokens
it signed keep verifying until they expire) or RETIRED (gone from the JWKS).
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import uuid
from dataclasses import dataclass, replace
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

ALGORITHM = "ES256"


class KeyState(enum.Enum):
    """Where a key is in its life."""

    ACTIVE = "ACTIVE"
    RETIRING = "RETIRING"
    RETIRED = "RETIRED"


@dataclass(frozen=True)
class SigningKey:
    """One ES256 key pair; the private half is kept encrypted at rest."""

    kid: str
    state: KeyState
    public_jwk: dict[str, Any]
    encrypted_private_pem: bytes
    created_at: dt.datetime
    retire_after: dt.datetime | None = None

    @property
    def published(self) -> bool:
        """In the JWKS: active keys and retiring ones whose tokens may still be alive."""
        return self.state in (KeyState.ACTIVE, KeyState.RETIRING)

    def retiring(self, now: dt.datetime, token_lifetime: dt.timedelta) -> SigningKey:
        """Stop signing with this key; keep publishing it until its last token expired."""
        return replace(self, state=KeyState.RETIRING, retire_after=now + token_lifetime + dt.timedelta(seconds=30))

    def due_for_retirement(self, now: dt.datetime) -> bool:
        """True once no token it signed can still be valid."""
        return self.state is KeyState.RETIRING and self.retire_after is not None and now >= self.retire_after

    def private_key(self, passphrase: bytes) -> ec.EllipticCurvePrivateKey:
        """Decrypt the private key (only identity ever does this)."""
        key = serialization.load_pem_private_key(self.encrypted_private_pem, password=passphrase)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise TypeError("signing key is not an EC key")
        return key


def generate_key(passphrase: bytes, now: dt.datetime) -> SigningKey:
    """A fresh P-256 key, encrypted with ``passphrase``."""
    private = ec.generate_private_key(ec.SECP256R1())
    kid = uuid.uuid4().hex[:20]
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key()))
    jwk.update({"kid": kid, "alg": ALGORITHM, "use": "sig"})
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase),
    )
    return SigningKey(kid=kid, state=KeyState.ACTIVE, public_jwk=jwk, encrypted_private_pem=pem, created_at=now)


def jwks(keys: list[SigningKey]) -> dict[str, Any]:
    """The JSON Web Key Set of the published keys, newest first."""
    published = sorted((k for k in keys if k.published), key=lambda k: k.created_at, reverse=True)
    return {"keys": [dict(k.public_jwk) for k in published]}
