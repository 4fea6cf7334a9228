"""TLS client certificates of partners (RFC 8705): their SHA-256 thumbprint, and how the
gateway hands it to the services behind it.

The gateway terminates the partner's TLS, so it computes the thumbprint and forwards it in
``x-openbank-client-certificate-sha256``; a partner can never set that header itself (the
gateway forwards only the headers it knows and sets this one from the TLS session).
"""

from __future__ import annotations

import hashlib
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

FORWARDED_CERTIFICATE_HEADER = "x-openbank-client-certificate-sha256"


def peer_certificate_sha256(context: Any) -> str | None:
    """Lower-case hex SHA-256 of the DER of the TLS peer's certificate, if it presented one."""
    pems = (context.auth_context() or {}).get("x509_pem_cert") or []
    if not pems:
        return None
    certificate = x509.load_pem_x509_certificate(pems[0])
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()


def partner_certificate_sha256(context: Any) -> str | None:
    """The partner's certificate thumbprint: forwarded by the gateway, else this hop's peer."""
    for key, value in context.invocation_metadata() or ():
        if key == FORWARDED_CERTIFICATE_HEADER and isinstance(value, str) and len(value) == 64:
            return value.lower()
    return peer_certificate_sha256(context)
