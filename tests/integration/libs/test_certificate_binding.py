"""Certificate-bound access tokens (RFC 8705) at a service behind the gateway, over real mTLS:
the shared auth interceptor believes the forwarded certificate thumbprint only from a peer
that authenticated as the gateway, and refuses a bound token from any other certificate, or
without one, with UNAUTHENTICATED TOKEN_BINDING_MISMATCH."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.protobuf import wrappers_pb2

from meshlib.auth.certificates import FORWARDED_CERTIFICATE_HEADER, x5t_s256
from meshlib.auth.interceptor import AuthInterceptor
from meshlib.auth.testing import TestIssuer
from meshlib.config import ServerSettings
from meshlib.grpc_errors import decode_status, error_info
from meshlib.server import create_server
from tests.integration.libs.test_server import ECHO, EchoServicer, _policy, _registration
from tests.support.pki import Issued, TestCa


@dataclass
class Mesh:
    port: int
    plain_port: int
    mesh_ca: TestCa
    gateway: Issued  # the gateway's mesh certificate (DNS name "gateway")
    intruder: Issued  # a mesh certificate of another process (DNS name "payment")
    wallet: Issued  # the partner's certificate (partner CA), the one its tokens are bound to
    issuer: TestIssuer


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[Mesh]:
    mesh_ca = TestCa("mesh", tmp_path)
    partner_ca = TestCa("partners", tmp_path)
    server_cert = mesh_ca.issue("account", "account", "127.0.0.1")
    issuer = TestIssuer()
    interceptors = [AuthInterceptor(issuer.verifier(), {ECHO: _policy()})]
    tls = ServerSettings(
        service_name="account",
        port=0,
        shutdown_grace_seconds=1,
        tls_cert_file=server_cert.cert_file,
        tls_key_file=server_cert.key_file,
        tls_client_ca_file=mesh_ca.cert_file,
    )
    server, port = await create_server(tls, [_registration(EchoServicer())], interceptors=interceptors)
    plain = ServerSettings(service_name="account", port=0, shutdown_grace_seconds=1)
    plain_server, plain_port = await create_server(plain, [_registration(EchoServicer())], interceptors=interceptors)
    try:
        yield Mesh(
            port,
            plain_port,
            mesh_ca,
            mesh_ca.issue("gateway", "gateway", "gateway.openbank.svc"),
            mesh_ca.issue("payment", "payment"),
            partner_ca.issue("wallet-a"),
            issuer,
        )
    finally:
        await server.stop(0)
        await plain_server.stop(0)


async def _call(mesh: Mesh, token: str, client: Issued | None, forwarded: str | None) -> tuple[str, str]:
    """(answer or gRPC code name, ErrorInfo reason) of one Echo call from ``client``'s certificate."""
    metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {token}"),)
    if forwarded is not None:
        metadata += ((FORWARDED_CERTIFICATE_HEADER, forwarded),)
    if client is None:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{mesh.plain_port}")
    else:
        credentials = grpc.ssl_channel_credentials(mesh.mesh_ca.cert_pem, client.key_pem, client.cert_pem)
        channel = grpc.aio.secure_channel(f"127.0.0.1:{mesh.port}", credentials)
    async with channel:
        echo = channel.unary_unary(
            ECHO,
            request_serializer=wrappers_pb2.StringValue.SerializeToString,
            response_deserializer=wrappers_pb2.StringValue.FromString,
        )
        try:
            answer = await echo(wrappers_pb2.StringValue(value="whoami"), metadata=metadata, timeout=10)
        except grpc.aio.AioRpcError as error:
            info = error_info(decode_status(error.trailing_metadata()))
            return error.code().name, info.reason if info else ""
    return answer.value, ""


def _bound_token(mesh: Mesh, sha256: str) -> str:
    return mesh.issuer.token("p1", scopes=["echo:use"], partner_id="p1", cnf={"x5t#S256": x5t_s256(sha256)})


async def test_a_bound_token_passes_with_the_certificate_the_gateway_forwards(mesh: Mesh) -> None:
    token = _bound_token(mesh, mesh.wallet.sha256)
    assert await _call(mesh, token, mesh.gateway, mesh.wallet.sha256) == ("p1", "")


async def test_a_stolen_token_forwarded_with_another_certificate_is_refused(mesh: Mesh) -> None:
    token = _bound_token(mesh, mesh.wallet.sha256)
    other = "ab" * 32
    assert await _call(mesh, token, mesh.gateway, other) == ("UNAUTHENTICATED", "TOKEN_BINDING_MISMATCH")
    # The partner presented no certificate to the gateway: nothing is forwarded.
    assert await _call(mesh, token, mesh.gateway, None) == ("UNAUTHENTICATED", "TOKEN_BINDING_MISMATCH")


async def test_a_stolen_token_sent_straight_to_the_service_is_refused_whatever_header_it_carries(
    mesh: Mesh,
) -> None:
    token = _bound_token(mesh, mesh.wallet.sha256)
    refused = ("UNAUTHENTICATED", "TOKEN_BINDING_MISMATCH")
    # A mesh peer that is not the gateway cannot vouch for a certificate: its header is ignored
    # and its own certificate is not the one the token is bound to.
    assert await _call(mesh, token, mesh.intruder, mesh.wallet.sha256) == refused
    assert await _call(mesh, token, mesh.intruder, None) == refused
    # Without mTLS nobody is the gateway, so the header counts for nothing either.
    assert await _call(mesh, token, None, mesh.wallet.sha256) == refused


async def test_a_bound_token_passes_over_a_direct_session_with_its_own_certificate(mesh: Mesh) -> None:
    # A client calling a service directly over mTLS is judged by its own certificate.
    token = _bound_token(mesh, mesh.intruder.sha256)
    assert await _call(mesh, token, mesh.intruder, "ab" * 32) == ("p1", "")


async def test_unbound_tokens_are_unaffected(mesh: Mesh) -> None:
    token = mesh.issuer.token("p1", scopes=["echo:use"], partner_id="p1")
    assert await _call(mesh, token, mesh.intruder, None) == ("p1", "")
    assert await _call(mesh, token, None, None) == ("p1", "")
