"""Signing keys: plain domain rules, no database, no gRPC.

A key is ACTIVE (the newest key; signs new tokens from ``activates_at``), RETIRING (no
longer the newest, still published so tokens it signed keep verifying until they expire)
or RETIRED (gone from the JWKS). A rotated-in key is published ``publish lead`` before it
signs, so every verifier's cached JWKS knows it before the first token it signs arrives;
until then the previous key, already RETIRING, keeps signing.
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
RETIREMENT_MARGIN = dt.timedelta(seconds=30)


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
    # When it starts signing (None: at creation, as every key made before pre-publication).
    activates_at: dt.datetime | None = None

    @property
    def signs_from(self) -> dt.datetime:
        """The first instant this key may sign."""
        return self.activates_at or self.created_at

    @property
    def published(self) -> bool:
        """In the JWKS: active keys and retiring ones whose tokens may still be alive."""
        return self.state in (KeyState.ACTIVE, KeyState.RETIRING)

    def retiring(self, successor_signs_from: dt.datetime, token_lifetime: dt.timedelta) -> SigningKey:
        """Superseded: it signs until its successor does, and stays published until the last
        token it can have signed expired (plus a margin for clock skew and verifier leeway)."""
        retire_after = successor_signs_from + token_lifetime + RETIREMENT_MARGIN
        return replace(self, state=KeyState.RETIRING, retire_after=retire_after)

    def due_for_retirement(self, now: dt.datetime) -> bool:
        """True once no token it signed can still be valid."""
        return self.state is KeyState.RETIRING and self.retire_after is not None and now >= self.retire_after

    def private_key(self, passphrase: bytes) -> ec.EllipticCurvePrivateKey:
        """Decrypt the private key (only identity ever does this)."""
        key = serialization.load_pem_private_key(self.encrypted_private_pem, password=passphrase)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise TypeError("signing key is not an EC key")
        return key


def generate_key(passphrase: bytes, now: dt.datetime, activates_at: dt.datetime | None = None) -> SigningKey:
    """A fresh P-256 key, encrypted with ``passphrase``; it signs from ``activates_at`` (default now)."""
    private = ec.generate_private_key(ec.SECP256R1())
    kid = uuid.uuid4().hex[:20]
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key()))
    jwk.update({"kid": kid, "alg": ALGORITHM, "use": "sig"})
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase),
    )
    return SigningKey(
        kid=kid,
        state=KeyState.ACTIVE,
        public_jwk=jwk,
        encrypted_private_pem=pem,
        created_at=now,
        activates_at=activates_at,
    )


def signing_key(keys: list[SigningKey], now: dt.datetime) -> SigningKey | None:
    """The key that signs at ``now``: of the published keys whose time has come, the one
    that started signing last (a just-rotated key waits for its publish lead to pass)."""
    ready = [k for k in keys if k.published and not k.due_for_retirement(now) and k.signs_from <= now]
    return max(ready, key=lambda k: k.signs_from, default=None)


def jwks(keys: list[SigningKey]) -> dict[str, Any]:
    """The JSON Web Key Set of the published keys, newest first."""
    published = sorted((k for k in keys if k.published), key=lambda k: k.created_at, reverse=True)
    return {"keys": [dict(k.public_jwk) for k in published]}
