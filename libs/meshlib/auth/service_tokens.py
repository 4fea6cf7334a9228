"""Access tokens for the mesh's own services (client_credentials at identity).

``ServiceTokenSource`` fetches a token with the service's internal client credentials and
refreshes it shortly before it expires; concurrent callers share one fetch.

    tokens = ServiceTokenSource(runtime.channel(settings.identity_target),
                                settings.service_client_id, settings.service_client_secret,
                                ["ledger:write"])
    await stub.CreateTransfer(request, metadata=await tokens.metadata())
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

import grpc

from meshlib.clients import call_with_retry
from meshlib.grpc_errors import decode_rpc_error

log = logging.getLogger("meshlib.auth")

ISSUE_TIMEOUT_SECONDS = 5.0


class ServiceTokenSource:
    """A cached, self-refreshing service access token."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        client_id: str,
        client_secret: str,
        scopes: Sequence[str],
        *,
        refresh_margin_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        from openbank.identity.v1 import token_pb2_grpc

        self._stub = token_pb2_grpc.TokenServiceStub(channel)
        self._client_id = client_id
        self._client_secret = client_secret
        self._scopes = list(scopes)
        self._margin = refresh_margin_seconds
        self._clock = clock
        self._token: str | None = None
        self._refresh_at = float("-inf")
        self._lock = asyncio.Lock()
        self._warming: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        # Never show the secret or the token.
        return f"ServiceTokenSource(client_id={self._client_id!r}, scopes={self._scopes!r})"

    async def token(self) -> str:
        """A valid access token, fetched or refreshed when needed."""
        if self._token is not None and self._clock() < self._refresh_at:
            return self._token
        async with self._lock:
            if self._token is None or self._clock() >= self._refresh_at:
                await self._fetch()
        assert self._token is not None
        return self._token

    def warm_up(self) -> None:
        """Fetch the first token now, in the background, so that the first call needing it does
        not wait for identity (a process's first payment otherwise paid for it). A failure
        (identity not up yet) is only logged: that first call fetches again."""
        if self._warming is None:
            self._warming = asyncio.get_running_loop().create_task(self._warm(), name="service-token-warm-up")

    async def _warm(self) -> None:
        try:
            await self.token()
        except Exception as error:  # any failure: the first real call fetches again
            log.warning("service token not fetched at start-up", extra={"error": type(error).__name__})

    async def metadata(self) -> tuple[tuple[str, str], ...]:
        """Call metadata carrying the token."""
        return (("authorization", f"Bearer {await self.token()}"),)

    def invalidate(self) -> None:
        """Forget the token (e.g. after an UNAUTHENTICATED answer), so the next call refetches."""
        self._token = None

    async def _fetch(self) -> None:
        from openbank.identity.v1 import token_pb2

        request = token_pb2.IssueTokenRequest(
            grant_type=token_pb2.GRANT_TYPE_CLIENT_CREDENTIALS,
            client_id=self._client_id,
            client_secret=self._client_secret,
            scopes=self._scopes,
        )
        started = self._clock()
        try:
            answer = await call_with_retry(
                lambda **options: self._stub.IssueToken(request, timeout=ISSUE_TIMEOUT_SECONDS, **options),
                what="identity.IssueToken",
            )
        except grpc.aio.AioRpcError as error:
            raise decode_rpc_error(error) from None
        lifetime = max(float(answer.expires_in), 1.0)
        # Refresh ahead of expiry, but never sooner than half-way through a short lifetime.
        self._refresh_at = started + max(lifetime - self._margin, lifetime / 2)
        self._token = answer.access_token
