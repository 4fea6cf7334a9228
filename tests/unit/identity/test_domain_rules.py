"""Identity's rules without gRPC or a database: partners, customers, consents, PKCE, claims."""

from __future__ import annotations

import datetime as dt
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from meshlib.errors import FailedPrecondition, InvalidArgument, PermissionDenied, Unauthenticated
from services.identity.domain import consents, customers, partners
from services.identity.domain.consents import ConsentNarrowing, ConsentRequest, ConsentState
from services.identity.domain.partners import AuthMethod, PartnerChanges, PartnerRegistration, PartnerStatus
from services.identity.domain.secrets import SecretBox, SecretHasher, b64url_sha256
from services.identity.domain.tokens import (
    AccessTokenGrant,
    access_token_claims,
    pkce_matches,
    verify_client_assertion,
)

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
TIERS = frozenset({"bronze", "gold"})
CHALLENGE = b64url_sha256("v" * 43)


def _registration(**fields: object) -> PartnerRegistration:
    values: dict[str, object] = {
        "display_name": "Wallet",
        "allowed_scopes": ("consents:write",),
        "rate_limit_tier": "gold",
        "per_payment_limit": None,
        "daily_limit": None,
        "auth_method": AuthMethod.CLIENT_SECRET_POST,
        "public_key_pem": "",
        "tls_client_certificate_sha256": "",
    }
    values.update(fields)
    return PartnerRegistration(**values)  # type: ignore[arg-type]


def _fields(error: InvalidArgument) -> set[str]:
    return {v.field for v in error.violations}


def test_partner_registration_collects_every_bad_field() -> None:
    with pytest.raises(InvalidArgument) as raised:
        partners.register(
            _registration(
                display_name="",
                allowed_scopes=("ledger:write",),
                rate_limit_tier="x",
                per_payment_limit=("EUR", 0),
                daily_limit=("GBP", 5),
                auth_method=None,
            ),
            TIERS,
            NOW,
            None,
        )
    assert _fields(raised.value) == {
        "display_name",
        "allowed_scopes",
        "rate_limit_tier",
        "per_payment_limit.minor_units",
        "token_endpoint_auth_method",
    }


def test_partner_public_keys_must_be_p256_or_strong_rsa() -> None:
    def pem(key: object) -> str:
        return (
            key.public_key()
            .public_bytes(  # type: ignore[attr-defined]
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )

    jwt_method = AuthMethod.PRIVATE_KEY_JWT
    ok = partners.register(
        _registration(auth_method=jwt_method, public_key_pem=pem(ec.generate_private_key(ec.SECP256R1()))),
        TIERS,
        NOW,
        None,
    )
    assert ok.client_secret_hash is None and ok.public_key_pem
    for weak in (ec.generate_private_key(ec.SECP384R1()), rsa.generate_private_key(65537, 1024)):
        with pytest.raises(InvalidArgument):
            partners.register(_registration(auth_method=jwt_method, public_key_pem=pem(weak)), TIERS, NOW, None)


def test_partner_lifecycle_and_updates() -> None:
    partner = partners.register(_registration(per_payment_limit=("EUR", 100)), TIERS, NOW, "hash")
    suspended = partner.suspend(NOW)
    assert suspended.status is PartnerStatus.SUSPENDED and suspended.tokens_valid_after == NOW
    with pytest.raises(FailedPrecondition):
        suspended.suspend(NOW)
    assert suspended.reactivate(NOW).tokens_valid_after == NOW
    with pytest.raises(FailedPrecondition):
        partner.reactivate(NOW)
    updated = partners.apply_changes(partner, PartnerChanges(per_payment_limit=("EUR", 0)), TIERS, NOW)
    assert updated.per_payment_limit is None
    with pytest.raises(InvalidArgument):
        partners.apply_changes(partner, PartnerChanges(allowed_scopes=("tokens:introspect",)), TIERS, NOW)


def _customer() -> customers.Customer:
    return customers.Customer("c1", "ada", "Ada", customers.CustomerStatus.ACTIVE, "h", b"", 0, None, NOW, NOW)


def test_customer_locks_on_the_fifth_failure_and_success_resets() -> None:
    customer = _customer()
    for _ in range(4):
        customer = customer.failed(NOW)
    customer.require_unlocked()
    assert customer.succeeded(10, NOW).failed_attempts == 0
    locked = customer.failed(NOW)
    with pytest.raises(PermissionDenied) as raised:
        locked.require_unlocked()
    assert raised.value.reason == "CUSTOMER_LOCKED"
    assert locked.unlock(NOW).failed_attempts == 0
    with pytest.raises(FailedPrecondition):
        _customer().unlock(NOW)


def _consent(**fields: object) -> consents.Consent:
    values: dict[str, object] = {
        "permissions": ("READ_ACCOUNTS", "INITIATE_PAYMENTS"),
        "expires_at": NOW + dt.timedelta(days=30),
        "per_payment_limit": ("EUR", 1000),
        "period_limit": ("EUR", 5000),
        "period": "MONTH",
        "reads_per_day": 10,
        "code_challenge": CHALLENGE,
        "code_challenge_method": "S256",
    }
    values.update(fields)
    return consents.create(ConsentRequest(**values), "p1", NOW)  # type: ignore[arg-type]


def test_consent_creation_validation() -> None:
    with pytest.raises(InvalidArgument) as raised:
        _consent(
            permissions=("NONE",),
            expires_at=NOW + dt.timedelta(days=400),
            period=None,
            reads_per_day=-1,
            code_challenge="short",
            code_challenge_method="plain",
        )
    assert _fields(raised.value) == {
        "permissions",
        "expire_time",
        "period",
        "reads_per_day",
        "code_challenge",
        "code_challenge_method",
    }


def test_consent_state_machine() -> None:
    consent = _consent()
    assert consent.state is ConsentState.AWAITING_AUTHORISATION
    authorised = consent.authorise("cust", ("a1", "a2"), NOW)
    with pytest.raises(FailedPrecondition):
        authorised.authorise("cust", ("a1",), NOW)
    paused = authorised.pause(NOW)
    assert paused.resume(NOW).paused is False
    revoked = paused.revoke(NOW)
    assert revoked.state is ConsentState.REVOKED and revoked.revoke(NOW) is revoked
    with pytest.raises(FailedPrecondition) as raised:
        revoked.resume(NOW)
    assert raised.value.reason == "CONSENT_REVOKED"
    rejected = _consent().reject("cust", NOW)
    with pytest.raises(FailedPrecondition):
        rejected.revoke(NOW)
    expired = _consent().current(NOW + dt.timedelta(days=31))
    assert expired.state is ConsentState.EXPIRED
    with pytest.raises(FailedPrecondition) as raised:
        expired.authorise("cust", ("a1",), NOW)
    assert raised.value.reason == "CONSENT_EXPIRED"
    with pytest.raises(FailedPrecondition) as raised:
        _consent().pause(NOW)
    assert raised.value.reason == "CONSENT_NOT_AUTHORISED"


def test_consent_can_only_be_narrowed() -> None:
    consent = _consent().authorise("cust", ("a1", "a2"), NOW)
    narrowed = consent.narrow(
        ConsentNarrowing(
            per_payment_limit=("EUR", 500),
            period_limit=("EUR", 100),
            reads_per_day=5,
            permissions=("READ_ACCOUNTS",),
            account_ids=("a2",),
            expires_at=NOW + dt.timedelta(days=1),
        ),
        NOW,
    )
    assert narrowed.per_payment_limit.minor_units == 500 and narrowed.account_ids == ("a2",)  # type: ignore[union-attr]
    assert narrowed.scopes_needed() == {"accounts:read"}
    for widening in (
        ConsentNarrowing(per_payment_limit=("EUR", 2000)),
        ConsentNarrowing(reads_per_day=11),
        ConsentNarrowing(permissions=("CONFIRM_FUNDS",)),
        ConsentNarrowing(account_ids=("a3",)),
        ConsentNarrowing(expires_at=NOW + dt.timedelta(days=60)),
    ):
        with pytest.raises(InvalidArgument) as raised:
            consent.narrow(widening, NOW)
        assert raised.value.reason == "CONSENT_WIDENING_NOT_ALLOWED"
    with pytest.raises(InvalidArgument) as raised:
        consent.narrow(ConsentNarrowing(per_payment_limit=("GBP", 10)), NOW)
    assert raised.value.reason == "FIELD_INVALID"


def test_pkce_s256_rfc_7636_appendix_b() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert pkce_matches(verifier, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM")
    assert not pkce_matches(verifier[:-1] + "Y", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM")
    assert not pkce_matches("too-short", b64url_sha256("too-short"))


def test_access_token_claims() -> None:
    grant = AccessTokenGrant(
        subject="p1",
        client_id="c1",
        scopes=("accounts:read",),
        partner_id="p1",
        consent_id="k1",
        customer_id="u1",
        tier="gold",
    )
    claims = access_token_claims(grant, issuer="iss", audience="aud", now=NOW, lifetime=dt.timedelta(seconds=300))
    assert {
        k: claims[k]
        for k in ("iss", "aud", "sub", "client_id", "scope", "consent_id", "customer_id", "partner_id", "tier")
    } == {
        "iss": "iss",
        "aud": "aud",
        "sub": "p1",
        "client_id": "c1",
        "scope": "accounts:read",
        "consent_id": "k1",
        "customer_id": "u1",
        "partner_id": "p1",
        "tier": "gold",
    }
    assert claims["exp"] - claims["iat"] == 300 and claims["nbf"] == claims["iat"]
    bare = access_token_claims(
        AccessTokenGrant("service:x", "x", ("ledger:read",)),
        issuer="i",
        audience="a",
        now=NOW,
        lifetime=dt.timedelta(seconds=60),
    )
    assert "partner_id" not in bare and "consent_id" not in bare


def test_client_assertion_rules() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    now = dt.datetime.now(dt.UTC)
    base = {"iss": "c1", "sub": "c1", "aud": "iss", "exp": int(time.time()) + 60, "jti": "j1"}
    assert (
        verify_client_assertion(
            jwt.encode(base, key, algorithm="ES256"), client_id="c1", public_key_pem=pem, audiences=("iss",), now=now
        )["jti"]
        == "j1"
    )
    for bad in (
        {**base, "exp": int(time.time()) + 3600},
        {**base, "sub": "c2"},
        {**base, "aud": "x"},
        {k: v for k, v in base.items() if k != "jti"},
        {**base, "jti": "j\x00"},  # stored: never a character a store cannot hold
        {**base, "jti": "x" * 129},
    ):
        with pytest.raises(Unauthenticated):
            verify_client_assertion(
                jwt.encode(bad, key, algorithm="ES256"), client_id="c1", public_key_pem=pem, audiences=("iss",), now=now
            )
    with pytest.raises(Unauthenticated):
        # HS256 with a shared secret is never accepted, whatever the secret.
        hs256 = jwt.encode(base, "a-shared-secret-that-is-32-bytes-long!", algorithm="HS256")
        verify_client_assertion(hs256, client_id="c1", public_key_pem=pem, audiences=("iss",), now=now)


def test_secrets_at_rest() -> None:
    hasher = SecretHasher(time_cost=1, memory_cost_kib=1024, parallelism=1)
    stored = hasher.hash("s3cret")
    assert stored.startswith("$argon2id$") and "s3cret" not in stored
    assert hasher.verify(stored, "s3cret") and not hasher.verify(stored, "other") and not hasher.verify(None, "x")
    box = SecretBox(b"passphrase")
    sealed = box.seal(b"seed", context=b"c1")
    assert box.open(sealed, context=b"c1") == b"seed"
    with pytest.raises(Exception):  # noqa: B017 - any decryption failure: a swapped row must not open
        box.open(sealed, context=b"c2")
