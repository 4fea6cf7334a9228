"""Property: any change to a token identity signed is refused by the shared verifier.

Tokens are signed by identity's KeyService (a real key in a real SQLite store) and checked
by the JwtVerifier every service uses, against identity's JWKS.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import json
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from meshlib.auth.verifier import JwksCache, JwtVerifier, VerifierSettings, static_jwks
from meshlib.errors import Unauthenticated
from meshlib.storage import Database
from meshlib.storage.migrations import upgrade_to_head
from services.identity.bootstrap import VERSIONS_DIR
from services.identity.domain.tokens import AccessTokenGrant, access_token_claims
from services.identity.keys_service import KeyService
from services.identity.unit_of_work import IdentityUnitOfWork

ISSUER, AUDIENCE = "https://identity.test", "openbank-mesh"
B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


async def _signed_token() -> tuple[str, dict[str, Any]]:
    with tempfile.TemporaryDirectory() as directory:
        database = Database(f"sqlite+aiosqlite:///{Path(directory) / 'identity.db'}")
        try:
            await upgrade_to_head(database, VERSIONS_DIR, "identity")
            keys = KeyService(partial(IdentityUnitOfWork, database), b"passphrase", dt.timedelta(minutes=5))
            await keys.ensure_active_key()
            grant = AccessTokenGrant(
                subject="p1",
                client_id="c1",
                scopes=("accounts:read",),
                partner_id="p1",
                consent_id="k1",
                customer_id="u1",
                tier="gold",
            )
            claims = access_token_claims(
                grant, issuer=ISSUER, audience=AUDIENCE, now=dt.datetime.now(dt.UTC), lifetime=dt.timedelta(minutes=5)
            )
            return await keys.sign(claims), await keys.jwks()
        finally:
            await database.dispose()


@pytest.fixture(scope="module")
def signed() -> tuple[str, dict[str, Any]]:
    """One token and the JWKS that verifies it."""
    return asyncio.run(_signed_token())


def _verify(token: str, jwks: dict[str, Any]) -> Any:
    verifier = JwtVerifier(VerifierSettings(issuer=ISSUER, audience=AUDIENCE), JwksCache(static_jwks(jwks)))
    return asyncio.run(verifier.verify(token))


def _decoded(token: str) -> list[bytes | None]:
    parts = []
    for segment in token.split("."):
        try:
            parts.append(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
        except (binascii.Error, ValueError):
            parts.append(None)
    return parts


def test_the_untouched_token_verifies(signed: tuple[str, dict[str, Any]]) -> None:
    token, jwks = signed
    assert _verify(token, jwks).consent_id == "k1"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(position=st.integers(min_value=0), replacement=st.sampled_from(B64URL + ".=+/ "))
def test_any_changed_character_is_refused(signed: tuple[str, dict[str, Any]], position: int, replacement: str) -> None:
    token, jwks = signed
    index = position % len(token)
    tampered = token[:index] + replacement + token[index + 1 :]
    # Base64url's last character carries unused bits: a change there may decode to the same bytes.
    assume(tampered != token and _decoded(tampered) != _decoded(token))
    with pytest.raises(Unauthenticated) as raised:
        _verify(tampered, jwks)
    assert raised.value.reason in ("TOKEN_INVALID", "SIGNING_KEY_UNKNOWN")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    claim=st.sampled_from(["sub", "scope", "consent_id", "partner_id", "exp", "aud", "tier"]),
    value=st.one_of(st.text(max_size=20), st.integers(min_value=0, max_value=2**40)),
)
def test_rewritten_claims_with_the_original_signature_are_refused(
    signed: tuple[str, dict[str, Any]], claim: str, value: object
) -> None:
    token, jwks = signed
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assume(claims.get(claim) != value)
    claims[claim] = value
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    with pytest.raises(Unauthenticated):
        _verify(f"{header}.{forged}.{signature}", jwks)
