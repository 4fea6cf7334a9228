"""ServiceTokenSource: one fetch shared by concurrent callers, refreshed before expiry."""

from __future__ import annotations

import asyncio

import grpc

from meshlib.auth.service_tokens import ServiceTokenSource
from openbank.identity.v1 import token_pb2


class FakeStub:
    """Issues numbered tokens of a fixed lifetime."""

    def __init__(self) -> None:
        self.requests: list[token_pb2.IssueTokenRequest] = []

    async def IssueToken(
        self, request: token_pb2.IssueTokenRequest, timeout: float, wait_for_ready: bool = False
    ) -> token_pb2.IssueTokenResponse:
        self.requests.append(request)
        await asyncio.sleep(0.01)
        return token_pb2.IssueTokenResponse(access_token=f"token-{len(self.requests)}", expires_in=300)


async def test_fetches_once_and_refreshes_before_expiry() -> None:
    now = [0.0]
    channel = grpc.aio.insecure_channel("127.0.0.1:1")
    source = ServiceTokenSource(channel, "svc", "secret", ["ledger:write"], clock=lambda: now[0])
    stub = FakeStub()
    source._stub = stub  # type: ignore[assignment]  # the transport is not under test here
    tokens = await asyncio.gather(*(source.token() for _ in range(5)))
    assert set(tokens) == {"token-1"} and len(stub.requests) == 1
    request = stub.requests[0]
    assert (request.client_id, request.client_secret, list(request.scopes)) == ("svc", "secret", ["ledger:write"])
    assert request.grant_type == token_pb2.GRANT_TYPE_CLIENT_CREDENTIALS
    now[0] = 269.0
    assert await source.token() == "token-1"
    now[0] = 271.0  # 30 s before expiry
    assert await source.token() == "token-2"
    assert await source.metadata() == (("authorization", "Bearer token-2"),)
    source.invalidate()
    assert await source.token() == "token-3"
    assert "secret" not in repr(source)
    await channel.close()
