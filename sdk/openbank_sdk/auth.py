"""OAuth 2.0 over gRPC: client-credentials tokens, the authorization-code grant with PKCE,
and refresh-token rotation.

Token sources hand out a valid access token, renewing it ``refresh_margin`` seconds before
it expires, and share one renewal between concurrent callers (two parallel refreshes with
the same single-use refresh token would look like a replay and revoke the whole family).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from openbank.identity.v1 import token_pb2, token_pb2_grpc
from openbank_sdk.errors import from_rpc_error
from openbank_sdk.retry import DEFAULT_RETRY, NO_RETRY, RetryPolicy, call_with_retry

PKCE_METHOD = "S256"
_VERIFIER_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"


@dataclass(frozen=True)
class Pkce:
    """A PKCE pair (RFC 7636): keep ``verifier`` secret, send ``challenge`` with the consent."""

    verifier: str
    challenge: str
    method: str = PKCE_METHOD

    @classmethod
    def generate(cls, length: int = 64) -> Pkce:
        """A fresh random verifier (43..128 characters) and its S256 challenge."""
        if not 43 <= length <= 128:
            raise ValueError("a PKCE verifier has 43 to 128 characters")
        verifier = "".join(secrets.choice(_VERIFIER_ALPHABET) for _ in range(length))
        return cls(verifier=verifier, challenge=challenge_for(verifier))


def challenge_for(verifier: str) -> str:
    """BASE64URL(SHA256(verifier)) without padding (the S256 method)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


@dataclass
class TokenSet:
    """What IssueToken returned, with the local moment the access token expires."""

    access_token: str
    expires_at: float
    scopes: tuple[str, ...] = ()
    refresh_token: str = ""
    consent: str = ""

    def __repr__(self) -> str:
        # Tokens are bearer credentials: never print them.
        return f"TokenSet(consent={self.consent!r}, scopes={self.scopes!r}, expires_at={self.expires_at:.0f})"

    @classmethod
    def from_response(cls, response: token_pb2.IssueTokenResponse, now: float) -> TokenSet:
        """Convert an IssueTokenResponse, anchoring ``expires_in`` to the local clock."""
        return cls(
            access_token=response.access_token,
            expires_at=now + response.expires_in,
            scopes=tuple(response.scopes),
            refresh_token=response.refresh_token,
            consent=response.consent,
        )


@dataclass
class ClientCredentials:
    """A partner's OAuth client (``client_secret_post``)."""

    client_id: str
    client_secret: str = field(repr=False)


class TokenSource:
    """Base of the token sources: a cached access token, renewed before it expires."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        client: ClientCredentials,
        *,
        refresh_margin: float = 30.0,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stub = token_pb2_grpc.TokenServiceStub(channel)
        self._client = client
        self._margin = refresh_margin
        self._timeout = timeout
        self._clock = clock
        self._lock = asyncio.Lock()
        self._tokens: TokenSet | None = None

    @property
    def current(self) -> TokenSet | None:
        """The token set held now (None before the first fetch)."""
        return self._tokens

    def _fresh(self) -> bool:
        return self._tokens is not None and self._clock() < self._tokens.expires_at - self._margin

    async def token(self) -> str:
        """A valid access token, renewed first when it is about to expire."""
        if not self._fresh():
            async with self._lock:
                if not self._fresh():
                    await self._renew()
        assert self._tokens is not None
        return self._tokens.access_token

    async def metadata(self) -> tuple[tuple[str, str], ...]:
        """``authorization: Bearer ...`` call metadata."""
        return (("authorization", f"Bearer {await self.token()}"),)

    async def refresh(self) -> TokenSet:
        """Renew now, whatever the expiry (e.g. after UNAUTHENTICATED TOKEN_EXPIRED)."""
        async with self._lock:
            await self._renew()
        assert self._tokens is not None
        return self._tokens

    async def _issue(self, request: token_pb2.IssueTokenRequest, retry: RetryPolicy) -> TokenSet:
        async def once() -> token_pb2.IssueTokenResponse:
            try:
                return await self._stub.IssueToken(request, timeout=self._timeout)
            except grpc.aio.AioRpcError as error:
                raise from_rpc_error(error) from None

        response = await call_with_retry(once, retry)
        return TokenSet.from_response(response, self._clock())

    async def _renew(self) -> None:
        raise NotImplementedError


class ClientCredentialsTokens(TokenSource):
    """Partner-wide tokens (grant_type client_credentials) for the given scopes.

    Renewal simply asks again; retried on UNAVAILABLE, since a client-credentials grant has
    no single-use part.
    """

    def __init__(
        self,
        channel: grpc.aio.Channel,
        client: ClientCredentials,
        scopes: Sequence[str],
        *,
        retry: RetryPolicy = DEFAULT_RETRY,
        refresh_margin: float = 30.0,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(channel, client, refresh_margin=refresh_margin, timeout=timeout, clock=clock)
        self.scopes = tuple(scopes)
        self._retry = retry

    async def _renew(self) -> None:
        request = token_pb2.IssueTokenRequest(
            grant_type=token_pb2.GRANT_TYPE_CLIENT_CREDENTIALS,
            client_id=self._client.client_id,
            client_secret=self._client.client_secret,
            scopes=list(self.scopes),
        )
        self._tokens = await self._issue(request, self._retry)


class ConsentTokens(TokenSource):
    """Tokens bound to one consent: from an authorization code, renewed with the refresh token.

    Each refresh returns a new refresh token (rotation) that replaces the old one; the old
    one must never be sent again. Code exchange and refresh are never retried automatically:
    both are single-use, and a replay of a used refresh token revokes the whole family.
    """

    def __init__(
        self,
        channel: grpc.aio.Channel,
        client: ClientCredentials,
        tokens: TokenSet | None = None,
        *,
        refresh_margin: float = 30.0,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(channel, client, refresh_margin=refresh_margin, timeout=timeout, clock=clock)
        self._tokens = tokens

    @property
    def consent(self) -> str:
        """The consent the tokens are bound to, ``consents/{consent}``."""
        assert self._tokens is not None
        return self._tokens.consent

    @classmethod
    async def exchange_code(
        cls,
        channel: grpc.aio.Channel,
        client: ClientCredentials,
        code: str,
        code_verifier: str,
        scopes: Sequence[str] = (),
        *,
        refresh_margin: float = 30.0,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> ConsentTokens:
        """Exchange the customer's authorization code (with the PKCE verifier) for tokens."""
        source = cls(channel, client, None, refresh_margin=refresh_margin, timeout=timeout, clock=clock)
        request = token_pb2.IssueTokenRequest(
            grant_type=token_pb2.GRANT_TYPE_AUTHORIZATION_CODE,
            client_id=client.client_id,
            client_secret=client.client_secret,
            code=code,
            code_verifier=code_verifier,
            scopes=list(scopes),
        )
        source._tokens = await source._issue(request, NO_RETRY)
        return source

    @classmethod
    async def poll_decoupled(
        cls,
        channel: grpc.aio.Channel,
        client: ClientCredentials,
        auth_req_id: str,
        scopes: Sequence[str] = (),
        *,
        refresh_margin: float = 30.0,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> ConsentTokens:
        """One poll of a decoupled authorisation (grant type CIBA): tokens once the customer
        approved; else the error (AUTHORIZATION_PENDING, SLOW_DOWN, ACCESS_DENIED, EXPIRED_TOKEN)."""
        source = cls(channel, client, None, refresh_margin=refresh_margin, timeout=timeout, clock=clock)
        request = token_pb2.IssueTokenRequest(
            grant_type=token_pb2.GRANT_TYPE_CIBA,
            client_id=client.client_id,
            client_secret=client.client_secret,
            auth_req_id=auth_req_id,
            scopes=list(scopes),
        )
        source._tokens = await source._issue(request, NO_RETRY)
        return source

    async def _renew(self) -> None:
        if self._tokens is None or not self._tokens.refresh_token:
            raise RuntimeError("no refresh token: exchange an authorization code first")
        request = token_pb2.IssueTokenRequest(
            grant_type=token_pb2.GRANT_TYPE_REFRESH_TOKEN,
            client_id=self._client.client_id,
            client_secret=self._client.client_secret,
            refresh_token=self._tokens.refresh_token,
        )
        renewed = await self._issue(request, NO_RETRY)
        # The server rotates: keep the new refresh token (or the old one if none came back).
        renewed.refresh_token = renewed.refresh_token or self._tokens.refresh_token
        renewed.consent = renewed.consent or self._tokens.consent
        self._tokens = renewed


class ScopedTokenSources:
    """Client-credentials token sources of an :class:`~openbank_sdk.OpenBankClient`, one per set of
    scopes, each asked for on first use (so a partner without a scope can use the rest of the
    client). Mixed into the client, which has the attributes below."""

    channel: grpc.aio.Channel
    credentials: ClientCredentials
    _retry: Any
    _timeout: float
    _refresh_margin: float

    def _tokens_for(self, *scopes: str) -> ClientCredentialsTokens:
        sources: dict[tuple[str, ...], ClientCredentialsTokens] = self.__dict__.setdefault("_scoped_token_sources", {})
        if scopes not in sources:
            sources[scopes] = ClientCredentialsTokens(
                self.channel,
                self.credentials,
                scopes,
                retry=self._retry,
                refresh_margin=self._refresh_margin,
                timeout=self._timeout,
            )
        return sources[scopes]
