"""TLS and mutual TLS channels of the SDK against an in-process server with a throwaway CA:
the server's certificate is checked against the given CA, and with mTLS the client presents
its certificate (a server that requires one refuses a client without it)."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import openbank_sdk as ob
import pytest
import pytest_asyncio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from openbank.identity.v1 import token_pb2, token_pb2_grpc


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _issue(
    subject: str, issuer_key: ec.EllipticCurvePrivateKey | None, issuer: str | None, *, ca: bool = False
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer or subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
    return key, builder.sign(issuer_key or key, hashes.SHA256())


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class Jwks(token_pb2_grpc.TokenServiceServicer):
    async def GetJwks(self, request, context):  # type: ignore[no-untyped-def]
        return token_pb2.GetJwksResponse(keys=[token_pb2.JsonWebKey(kid="k1", alg="ES256")])


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:  # type: ignore[no-untyped-def]
    base = tmp_path_factory.mktemp("pki")
    ca_key, ca_cert = _issue("test CA", None, None, ca=True)
    server_key, server_cert = _issue("localhost", ca_key, "test CA")
    client_key, client_cert = _issue("wallet", ca_key, "test CA")
    files = {
        "ca": ca_cert.public_bytes(serialization.Encoding.PEM),
        "server_cert": server_cert.public_bytes(serialization.Encoding.PEM),
        "server_key": _pem(server_key),
        "client_cert": client_cert.public_bytes(serialization.Encoding.PEM),
        "client_key": _pem(client_key),
    }
    paths = {}
    for name, content in files.items():
        paths[name] = base / f"{name}.pem"
        paths[name].write_bytes(content)
    return paths


async def _server(pki: dict[str, Path], require_client_auth: bool) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    token_pb2_grpc.add_TokenServiceServicer_to_server(Jwks(), server)
    credentials = grpc.ssl_server_credentials(
        [(pki["server_key"].read_bytes(), pki["server_cert"].read_bytes())],
        root_certificates=pki["ca"].read_bytes(),
        require_client_auth=require_client_auth,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    return server, port


@pytest_asyncio.fixture
async def tls_port(pki: dict[str, Path]) -> AsyncIterator[int]:
    server, port = await _server(pki, require_client_auth=False)
    yield port
    await server.stop(0)


@pytest_asyncio.fixture
async def mtls_port(pki: dict[str, Path]) -> AsyncIterator[int]:
    server, port = await _server(pki, require_client_auth=True)
    yield port
    await server.stop(0)


async def _jwks(channel: grpc.aio.Channel) -> list[str]:
    client = ob.OpenBankClient(channel, "c", "s", retry=ob.NO_RETRY, timeout=5)
    try:
        return [key.kid for key in (await client.jwks()).keys]
    finally:
        await client.close()


async def test_tls_channel_trusts_the_given_ca(pki: dict[str, Path], tls_port: int) -> None:
    channel = ob.secure_channel(f"127.0.0.1:{tls_port}", ca_file=pki["ca"], server_name_override="localhost")
    assert await _jwks(channel) == ["k1"]


async def test_tls_channel_refuses_a_server_the_ca_did_not_sign(tls_port: int, tmp_path: Path) -> None:
    _, other_ca = _issue("another CA", None, None, ca=True)
    (tmp_path / "other.pem").write_bytes(other_ca.public_bytes(serialization.Encoding.PEM))
    channel = ob.secure_channel(
        f"127.0.0.1:{tls_port}", ca_file=tmp_path / "other.pem", server_name_override="localhost"
    )
    with pytest.raises(ob.Unavailable):
        await _jwks(channel)


async def test_mutual_tls_presents_the_client_certificate(pki: dict[str, Path], mtls_port: int) -> None:
    target = f"127.0.0.1:{mtls_port}"
    channel = ob.secure_channel(
        target,
        ca_file=pki["ca"],
        client_cert_file=pki["client_cert"],
        client_key_file=pki["client_key"],
        server_name_override="localhost",
    )
    assert await _jwks(channel) == ["k1"]
    without_certificate = ob.secure_channel(target, ca_file=pki["ca"], server_name_override="localhost")
    with pytest.raises(ob.Unavailable):
        await _jwks(without_certificate)


def test_mutual_tls_needs_both_certificate_and_key(pki: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="both"):
        ob.tls_credentials(ca_file=pki["ca"], client_cert_file=pki["client_cert"])
