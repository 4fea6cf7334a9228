"""Certificate-bound tokens (RFC 8705) in identity's rules: which partners get them, what
registration and updates may say, and the ``cnf`` claim of their access tokens."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib

import pytest

from meshlib.auth.certificates import require_certificate_binding, x5t_s256
from meshlib.auth.verifier import caller_from_claims
from meshlib.errors import InvalidArgument, Unauthenticated
from services.identity.domain import partners
from services.identity.domain.partners import AuthMethod, PartnerChanges, PartnerRegistration
from services.identity.domain.tokens import AccessTokenGrant, access_token_claims

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
TIERS = frozenset({"gold"})
CERT = hashlib.sha256(b"a certificate's DER").hexdigest()
BOUND = "tls_client_certificate_bound_access_tokens"


def _register(**fields: object) -> partners.Partner:
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
    return partners.register(PartnerRegistration(**values), TIERS, NOW, "hash")  # type: ignore[arg-type]


def _violations(error: InvalidArgument) -> set[str]:
    return {v.field for v in error.violations}


def test_a_partner_registered_with_a_certificate_gets_bound_tokens_unless_registration_says_otherwise() -> None:
    assert _register(tls_client_certificate_sha256=CERT).certificate_bound_tokens is True
    assert _register().certificate_bound_tokens is False
    opted_out = _register(tls_client_certificate_sha256=CERT, certificate_bound_tokens=False)
    assert opted_out.certificate_bound_tokens is False and opted_out.tls_client_certificate_sha256 == CERT
    with pytest.raises(InvalidArgument) as raised:
        _register(certificate_bound_tokens=True)
    assert _violations(raised.value) == {BOUND}


def test_updates_keep_binding_and_certificate_consistent() -> None:
    bearer = _register()
    with pytest.raises(InvalidArgument) as raised:
        partners.apply_changes(bearer, PartnerChanges(certificate_bound_tokens=True), TIERS, NOW)
    assert _violations(raised.value) == {BOUND}
    bound = partners.apply_changes(
        bearer, PartnerChanges(tls_client_certificate_sha256=CERT, certificate_bound_tokens=True), TIERS, NOW
    )
    assert bound.certificate_bound_tokens and bound.tls_client_certificate_sha256 == CERT
    # Removing the certificate of a bound partner needs the binding switched off with it.
    with pytest.raises(InvalidArgument) as raised:
        partners.apply_changes(bound, PartnerChanges(tls_client_certificate_sha256=""), TIERS, NOW)
    assert _violations(raised.value) == {"tls_client_certificate_sha256"}
    unbound = partners.apply_changes(
        bound, PartnerChanges(tls_client_certificate_sha256="", certificate_bound_tokens=False), TIERS, NOW
    )
    assert not unbound.certificate_bound_tokens and unbound.tls_client_certificate_sha256 is None
    # A change of certificate keeps the binding, now to the new certificate.
    other = hashlib.sha256(b"the next certificate").hexdigest()
    moved = partners.apply_changes(bound, PartnerChanges(tls_client_certificate_sha256=other), TIERS, NOW)
    assert moved.certificate_bound_tokens and moved.tls_client_certificate_sha256 == other


def test_a_bound_access_token_carries_cnf_x5t_s256_and_the_verifier_reads_it() -> None:
    thumbprint = x5t_s256(CERT)
    assert thumbprint == base64.urlsafe_b64encode(bytes.fromhex(CERT)).decode().rstrip("=")
    assert len(thumbprint) == 43 and "=" not in thumbprint
    grant = AccessTokenGrant("p1", "c1", ("consents:read",), partner_id="p1", certificate_thumbprint=thumbprint)
    claims = access_token_claims(grant, issuer="i", audience="a", now=NOW, lifetime=dt.timedelta(seconds=60))
    assert claims["cnf"] == {"x5t#S256": thumbprint}
    caller = caller_from_claims(claims, "token")
    assert caller.certificate_thumbprint == thumbprint
    require_certificate_binding(caller, CERT)  # the certificate it is bound to
    for presented in (None, hashlib.sha256(b"another").hexdigest()):
        with pytest.raises(Unauthenticated) as refused:
            require_certificate_binding(caller, presented)
        assert refused.value.reason == "TOKEN_BINDING_MISMATCH"
    unbound = access_token_claims(
        AccessTokenGrant("p1", "c1", ("consents:read",)), issuer="i", audience="a", now=NOW, lifetime=dt.timedelta(1)
    )
    assert "cnf" not in unbound
    require_certificate_binding(caller_from_claims(unbound, "token"), None)
