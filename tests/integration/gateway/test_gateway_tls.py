"""The gateway over TLS with client certificates (mTLS-bound partners): the handshake needs
a certificate from the partner CA, and the certificate's thumbprint (RFC 8705) reaches the
services from the TLS session, never from a header a partner could forge."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.server import start_gateway
from gateway.settings import GatewaySettings
from meshlib.auth.certificates import FORWARDED_CERTIFICATE_HEADER
from meshlib.auth.testing import TestIssuer
from meshlib.auth.verifier import static_jwks
from tests.integration.gateway.upstream import start_fake_upstream

JWKS = "/openbank.identity.v1.TokenService/GetJwks"


def _issue(subject: str, issuer_key, issuer_name, *, ca: bool, san: list[x509.GeneralName] | None = None):  # type: ignore[no-untyped-def]
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    certificate = builder.sign(issuer_key or key, hashes.SHA256())
    return key, certificate


def _pem(key, certificate) -> tuple[bytes, bytes]:  # type: ignore[no-untyped-def]
    return (
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        certificate.public_bytes(serialization.Encoding.PEM),
    )


@pytest.fixture
async def tls_gateway(tmp_path: Path):  # type: ignore[no-untyped-def]
    ca_key, ca = _issue("Test CA", None, None, ca=True)
    server_key, server = _issue(
        "gateway",
        ca_key,
        ca.subject,
        ca=False,
        san=[x509.DNSName("localhost"), x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))],
    )
    client_key, client = _issue("wallet-a", ca_key, ca.subject, ca=False)
    files = {}
    for label, (key_pem, cert_pem) in {"server": _pem(server_key, server), "client": _pem(client_key, client)}.items():
        (tmp_path / f"{label}.key").write_bytes(key_pem)
        (tmp_path / f"{label}.crt").write_bytes(cert_pem)
        files[label] = (key_pem, cert_pem)
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    (tmp_path / "ca.crt").write_bytes(ca_pem)
    upstream_server, port, upstream = await start_fake_upstream()
    target = f"127.0.0.1:{port}"
    gateway = await start_gateway(
        GatewaySettings(
            port=0,
            identity_target=target,
            account_target=target,
            payment_target=target,
            settlement_target=target,
            tls_cert_file=tmp_path / "server.crt",
            tls_key_file=tmp_path / "server.key",
            tls_client_ca_file=tmp_path / "ca.crt",
        ),
        jwks_fetcher=static_jwks(TestIssuer().jwks),
    )
    thumbprint = hashlib.sha256(client.public_bytes(serialization.Encoding.DER)).hexdigest()
    try:
        yield gateway.port, ca_pem, files["client"], thumbprint, upstream
    finally:
        await gateway.stop(0)
        await upstream_server.stop(0)


async def test_mtls_partner_thumbprint_reaches_the_upstream_from_the_tls_session(tls_gateway) -> None:  # type: ignore[no-untyped-def]
    port, ca_pem, (client_key, client_cert), thumbprint, upstream = tls_gateway
    credentials = grpc.ssl_channel_credentials(ca_pem, client_key, client_cert)
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
        forged = "0" * 64
        await channel.unary_unary(JWKS)(b"", metadata=((FORWARDED_CERTIFICATE_HEADER, forged),), timeout=10)
    seen = upstream.calls[-1].metadata
    assert seen[FORWARDED_CERTIFICATE_HEADER] == thumbprint  # the real one, not the forged header


async def test_a_partner_without_a_client_certificate_cannot_connect(tls_gateway) -> None:  # type: ignore[no-untyped-def]
    port, ca_pem, _, _, upstream = tls_gateway
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", grpc.ssl_channel_credentials(ca_pem)) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await channel.unary_unary(JWKS)(b"", timeout=5)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert upstream.calls == []
