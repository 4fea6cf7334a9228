"""TLS client certificates of partners and certificate-bound access tokens (RFC 8705).

A partner whose tokens are certificate-bound gets access tokens carrying ``cnf.x5t#S256``,
the base64url SHA-256 of its client certificate. Such a token is honoured only over a TLS
session with that certificate, checked twice:

- at the gateway, against the certificate of the partner's own TLS session
  (:func:`peer_certificate_sha256`);
- at every service, against the thumbprint the gateway forwards in
  ``x-openbank-client-certificate-sha256`` (:class:`ForwardedCertificate`).

The forwarded header is believed only from a peer that authenticated *as the gateway* on
this very connection: mTLS with the mesh CA, and a certificate whose DNS subject alternative
name is one of the configured forwarders (``gateway`` by default). From anyone else (a
partner, another service, a plaintext hop) the header is ignored and the caller's own TLS
certificate, if any, is what counts. The gateway never passes a partner's copy of the header
on (it forwards only the headers it knows and sets this one from the TLS session), so a
partner cannot name a certificate it does not hold. This needs the partner CA to be distinct
from the mesh CA, so that no partner certificate can carry the gateway's name.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
from collections.abc import Callable, Iterable
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from meshlib.auth.context import Caller
from meshlib.errors import Unauthenticated

FORWARDED_CERTIFICATE_HEADER = "x-openbank-client-certificate-sha256"
# mTLS identities (DNS SANs of mesh certificates) whose forwarded thumbprint is believed.
DEFAULT_CERTIFICATE_FORWARDERS = ("gateway",)
_SAN_KEY = "x509_subject_alternative_name"
_HEX = frozenset("0123456789abcdef")

# The lower-case hex SHA-256 of the partner's client certificate for one call, or None.
CertificateSource = Callable[[Any], str | None]


@functools.lru_cache(maxsize=4096)
def _pem_sha256(pem: bytes) -> str:
    # Parsed once per certificate: a connection's certificate is the same on every call.
    certificate = x509.load_pem_x509_certificate(pem)
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()


def peer_certificate_sha256(context: Any) -> str | None:
    """Lower-case hex SHA-256 of the DER of the TLS peer's certificate, if it presented one."""
    pems = (context.auth_context() or {}).get("x509_pem_cert") or []
    if not pems:
        return None
    return _pem_sha256(bytes(pems[0]))


def peer_san_names(context: Any) -> frozenset[str]:
    """The subject alternative names of the authenticated TLS peer (none without mTLS)."""
    names = (context.auth_context() or {}).get(_SAN_KEY) or []
    return frozenset(n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in names)


def x5t_s256(sha256_hex: str) -> str:
    """RFC 8705 ``x5t#S256``: the base64url (unpadded) form of a hex SHA-256 thumbprint."""
    return base64.urlsafe_b64encode(bytes.fromhex(sha256_hex)).decode("ascii").rstrip("=")


class ForwardedCertificate:
    """How a service behind the gateway learns the partner's certificate for one call.

    From a peer authenticated as a forwarder: the thumbprint it forwarded (None when the
    partner presented no certificate to it). From any other peer: that peer's own
    certificate; whatever header it sent is ignored.
    """

    def __init__(self, forwarders: Iterable[str] = DEFAULT_CERTIFICATE_FORWARDERS) -> None:
        self._forwarders = frozenset(name for name in forwarders if name)

    def __call__(self, context: Any) -> str | None:
        """The partner certificate's hex SHA-256 for this call, or None."""
        if not (self._forwarders and self._forwarders & peer_san_names(context)):
            return peer_certificate_sha256(context)
        values = [v for k, v in context.invocation_metadata() or () if k == FORWARDED_CERTIFICATE_HEADER]
        if len(values) != 1 or not isinstance(values[0], str):
            return None
        value = values[0].lower()
        return value if len(value) == 64 and set(value) <= _HEX else None


def require_certificate_binding(caller: Caller, certificate_sha256: str | None) -> None:
    """UNAUTHENTICATED ``TOKEN_BINDING_MISMATCH`` when a certificate-bound token comes over a
    connection without the certificate it is bound to; unbound tokens pass."""
    bound_to = caller.certificate_thumbprint
    if bound_to is None:
        return
    if certificate_sha256 is None or not hmac.compare_digest(x5t_s256(certificate_sha256).encode(), bound_to.encode()):
        raise Unauthenticated(
            "the access token is bound to another TLS client certificate", reason="TOKEN_BINDING_MISMATCH"
        )
