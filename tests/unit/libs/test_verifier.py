"""The shared token verifier: every way a token can be wrong answers a stable reason."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshlib.auth.testing import TestIssuer
from meshlib.auth.verifier import JwksCache, JwtVerifier, VerifierSettings, static_jwks
from meshlib.errors import PermissionDenied, Unauthenticated

ISSUER = TestIssuer()
VERIFIER = ISSUER.verifier()


async def _reason(token: str) -> str:
    with pytest.raises(Unauthenticated) as raised:
        await VERIFIER.verify(token)
    return raised.value.reason


async def test_valid_token_becomes_a_caller() -> None:
    token = ISSUER.token("p1", scopes=["accounts:read"], consent_id="c1", partner_id="p1", tier="gold")
    caller = await VERIFIER.verify(token)
    assert (caller.subject, caller.partner_id, caller.consent_id, caller.rate_limit_tier) == ("p1", "p1", "c1", "gold")
    assert caller.scopes == frozenset({"accounts:read"})
    caller.require_scopes(["accounts:read"])
    with pytest.raises(PermissionDenied) as raised:
        caller.require_scopes(["payments:write"])
    assert raised.value.reason == "INSUFFICIENT_SCOPE"


async def test_expired_wrong_audience_wrong_issuer_and_future_tokens_fail() -> None:
    now = int(time.time())
    assert await _reason(ISSUER.token(exp=now - 60, iat=now - 120)) == "TOKEN_EXPIRED"
    assert await _reason(ISSUER.token(aud="someone-else")) == "TOKEN_INVALID"
    assert await _reason(ISSUER.token(iss="https://evil")) == "TOKEN_INVALID"
    assert await _reason(ISSUER.token(nbf=now + 600)) == "TOKEN_INVALID"
    assert await _reason(ISSUER.token(lifetime_seconds=86_400)) == "TOKEN_INVALID"


async def test_algorithm_confusion_none_and_hs256_are_refused() -> None:
    claims = jwt.decode(ISSUER.token(), options={"verify_signature": False})
    unsigned = jwt.encode(claims, key=None, algorithm="none", headers={"kid": ISSUER.kid})
    assert await _reason(unsigned) == "TOKEN_INVALID"
    # HS256 keyed with the public key's JSON: the classic confusion attack.
    public_jwk = json.dumps(ISSUER.jwks["keys"][0]).encode()
    confused = _hs256(claims, public_jwk, ISSUER.kid)
    assert await _reason(confused) == "TOKEN_INVALID"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _hs256(claims: dict, key: bytes, kid: str) -> str:
    signing_input = (
        _b64(json.dumps({"alg": "HS256", "kid": kid, "typ": "at+jwt"}).encode())
        + "."
        + _b64(json.dumps(claims).encode())
    )
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


async def test_token_signed_by_another_key_with_same_kid_fails() -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    claims = jwt.decode(ISSUER.token(), options={"verify_signature": False})
    forged = jwt.encode(claims, other, algorithm="ES256", headers={"kid": ISSUER.kid})
    assert await _reason(forged) == "TOKEN_INVALID"


async def test_unknown_kid_refetches_jwks_at_most_once_per_interval() -> None:
    calls = 0
    inner = static_jwks(ISSUER.jwks)

    async def counting_fetch():  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        return await inner()

    verifier = JwtVerifier(
        VerifierSettings(issuer=ISSUER.issuer, audience=ISSUER.audience),
        JwksCache(counting_fetch, refresh_interval_seconds=0.3),
    )
    await verifier.verify(ISSUER.token())
    assert calls == 1

    async def made_up_kid() -> str:
        with pytest.raises(Unauthenticated) as raised:
            await verifier.verify(ISSUER.token(headers={"kid": "nope"}))
        return raised.value.reason

    # Twenty at once share one refetch (bounded: no refetch storm).
    assert await asyncio.gather(*(made_up_kid() for _ in range(20))) == ["SIGNING_KEY_UNKNOWN"] * 20
    assert calls == 2


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(position=st.integers(min_value=0, max_value=10_000), flip=st.integers(min_value=1, max_value=255))
async def test_any_single_byte_tampering_is_rejected(position: int, flip: int) -> None:
    token = ISSUER.token("p1", scopes=["accounts:read"])
    raw = bytearray(token.encode())
    index = position % len(raw)
    raw[index] = (raw[index] ^ flip) & 0x7F or 0x41
    tampered = raw.decode("ascii", errors="replace")
    if _same_bytes(tampered, token):
        return  # base64's spare bits: the same token spelled differently
    with pytest.raises(Unauthenticated):
        await VERIFIER.verify(tampered)


def _same_bytes(a: str, b: str) -> bool:
    def decode(token: str) -> list[bytes] | None:
        try:
            return [base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)) for part in token.split(".")]
        except ValueError:
            return None

    decoded = decode(a)
    return decoded is not None and decoded == decode(b)


@given(garbage=st.text(max_size=300))
async def test_garbage_is_unauthenticated_never_a_crash(garbage: str) -> None:
    with pytest.raises(Unauthenticated):
        await VERIFIER.verify(garbage)


async def test_payload_tampering_with_valid_header_and_signature_fails() -> None:
    header, payload, signature = ISSUER.token("p1", scopes=["accounts:read"]).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["scope"] = "accounts:read payments:write"
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    assert await _reason(f"{header}.{forged_payload}.{signature}") == "TOKEN_INVALID"


async def test_a_verified_token_is_cached_until_it_expires_and_then_refused() -> None:
    now = [time.time()]
    verifier = JwtVerifier(
        VerifierSettings(issuer=ISSUER.issuer, audience=ISSUER.audience),
        JwksCache(static_jwks(ISSUER.jwks)),
        clock=lambda: now[0],
    )
    token = ISSUER.token("p1", lifetime_seconds=60)
    first = await verifier.verify(token)
    calls = 0
    original = verifier.verify_signature_and_claims

    async def counting(raw: str):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        return await original(raw)

    verifier.verify_signature_and_claims = counting  # type: ignore[method-assign]
    assert await verifier.verify(token) is first
    assert calls == 0  # served from the cache
    now[0] += 3600  # long after expiry: verified again, and refused
    with pytest.raises(Unauthenticated) as raised:
        await verifier.verify(token)
    assert raised.value.reason == "TOKEN_EXPIRED" and calls == 1
