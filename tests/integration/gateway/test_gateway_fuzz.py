"""Fuzzing the gateway over real sockets: malformed messages, frames, headers and tokens.

Whatever arrives, the gateway answers with a proper status, never leaks internals, keeps
serving, and never lets a call without a valid token reach an upstream.
"""

from __future__ import annotations

import asyncio
import socket

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.routing import build_routes
from gateway.server import start_gateway
from gateway.settings import GatewaySettings
from meshlib.auth.testing import TestIssuer
from meshlib.auth.verifier import static_jwks
from tests.integration.gateway.upstream import start_fake_upstream

ISSUER = TestIssuer(issuer="https://identity.openbank.local", audience="openbank-mesh")
STRANGER = TestIssuer(issuer="https://identity.openbank.local", audience="openbank-mesh")  # untrusted key
PUBLIC = sorted(build_routes())
INTERNAL = [
    "/openbank.account.v1.LedgerService/CreateTransfer",
    "/openbank.settlement.v1.PositionService/ReserveObligation",
    "/openbank.identity.v1.PartnerService/RegisterPartner",
]
TOKEN_FREE = {p for p in PUBLIC if p.endswith(("/IssueToken", "/GetJwks", "/RevokeToken"))}
ALLOWED_CODES = {
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.OK,
}


class NeverAsked:
    """Consent lookup that must never be reached by a call without a valid token."""

    async def get(self, consent_id: str, *, partner_id: str):  # type: ignore[no-untyped-def]
        raise AssertionError("consent lookup reached without a valid token")


@pytest.fixture(scope="module")
def running_gateway():  # type: ignore[no-untyped-def]
    loop = asyncio.new_event_loop()

    async def start():  # type: ignore[no-untyped-def]
        upstream_server, upstream_port, upstream = await start_fake_upstream()
        target = f"127.0.0.1:{upstream_port}"
        gateway = await start_gateway(
            GatewaySettings(
                port=0,
                identity_target=target,
                account_target=target,
                payment_target=target,
                settlement_target=target,
                max_message_bytes=64 * 1024,
            ),
            jwks_fetcher=static_jwks(ISSUER.jwks),
            consents=NeverAsked(),
        )
        return gateway, upstream_server, upstream

    gateway, upstream_server, upstream = loop.run_until_complete(start())
    yield loop, gateway.port, upstream
    loop.run_until_complete(gateway.stop(0))
    loop.run_until_complete(upstream_server.stop(0))
    loop.close()


def _tampered(token: str) -> str:
    head, body, signature = token.split(".")
    return f"{head}.{body[:-2]}AA.{signature}"


authorizations = st.one_of(
    st.none(),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=300),
    st.builds(
        lambda t: f"Bearer {t}", st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=300)
    ),
    st.just(f"Bearer {_tampered(ISSUER.token('p1', scopes=['accounts:read'], partner_id='p1'))}"),
    st.just(f"Bearer {STRANGER.token('p1', scopes=['accounts:read'], partner_id='p1')}"),
    st.just(f"Bearer {ISSUER.token('p1', scopes=['accounts:read'], aud='another-audience')}"),
    st.just(f"Basic {ISSUER.token('p1')}"),
)
header_keys = st.from_regex(r"[a-z][a-z0-9_.-]{0,20}", fullmatch=True).filter(
    lambda k: (
        not k.startswith("grpc-")
        and k not in ("authorization", "te", "content-type", "user-agent")
        and not k.endswith("-bin")
    )
)
headers = st.lists(
    st.tuples(header_keys, st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=200)),
    max_size=4,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    method=st.one_of(
        st.sampled_from(PUBLIC + INTERNAL), st.from_regex(r"/[A-Za-z.]{1,30}/[A-Za-z]{1,20}", fullmatch=True)
    ),
    payload=st.binary(max_size=2048),
    authorization=authorizations,
    extra=headers,
    huge=st.booleans(),
)
def test_malformed_calls_never_crash_leak_or_reach_an_upstream(  # type: ignore[no-untyped-def]
    running_gateway, method, payload, authorization, extra, huge
) -> None:
    loop, port, upstream = running_gateway
    before = len([c for c in upstream.calls if c.method not in TOKEN_FREE])

    async def call():  # type: ignore[no-untyped-def]
        metadata = list(extra)
        if authorization is not None:
            metadata.append(("authorization", authorization))
        if huge:
            metadata.append(("x-padding", "x" * 40_000))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            try:
                await channel.unary_unary(method)(payload, metadata=tuple(metadata), timeout=5)
                return grpc.StatusCode.OK, ""
            except grpc.aio.AioRpcError as error:
                return error.code(), error.details() or ""

    code, details = loop.run_until_complete(call())
    assert code in ALLOWED_CODES, (code, details)
    for leak in ("Traceback", "Exception", 'File "', "sqlalchemy", "/work/"):
        assert leak not in details
    after = len([c for c in upstream.calls if c.method not in TOKEN_FREE])
    assert after == before, f"{method} reached an upstream without a valid token"


def test_oversized_messages_are_refused_and_garbage_on_the_socket_is_survived(running_gateway) -> None:  # type: ignore[no-untyped-def]
    loop, port, upstream = running_gateway
    calls_before = len(upstream.calls)

    async def oversized():  # type: ignore[no-untyped-def]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await channel.unary_unary(PUBLIC[0])(b"\x00" * 200_000, timeout=5)
            return raised.value.code()

    assert loop.run_until_complete(oversized()) == grpc.StatusCode.RESOURCE_EXHAUSTED
    # Raw garbage, a bare HTTP/2 preface, and a preface followed by a truncated frame.
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    for blob in (b"\x16\x03\x01garbage" * 50, preface, preface + b"\x00\x00\x10\x01\x04\x00\x00\x00\x01\x82"):
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(blob)
    assert len(upstream.calls) == calls_before

    async def healthy():  # type: ignore[no-untyped-def]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            answer = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            return answer.status

    assert loop.run_until_complete(healthy()) == health_pb2.HealthCheckResponse.SERVING
