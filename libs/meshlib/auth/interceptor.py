"""The one auth interceptor: every rpc that the contract says needs a token gets one
verified, and the scopes the contract lists are enforced, before the servicer runs.

Consent checks need the consent's live state and are the service layer's (and the
gateway's) business; this interceptor only says who is calling and with what scopes, and
keeps an open stream only as long as its caller's token, consent and partner stay valid.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import grpc

from meshlib.auth.certificates import CertificateSource, ForwardedCertificate, require_certificate_binding
from meshlib.auth.context import reset_caller, set_caller
from meshlib.auth.streams import guard_stream
from meshlib.auth.verifier import JwtVerifier
from meshlib.errors import Unauthenticated
from meshlib.grpc_errors import WrappingInterceptor, wrap_handler
from meshlib.policy import MethodPolicy

AUTHORIZATION_HEADER = "authorization"


def bearer_token(metadata: Any) -> str:
    """The bearer token in call metadata; UNAUTHENTICATED if missing or malformed."""
    values = [v for k, v in metadata or () if k == AUTHORIZATION_HEADER]
    if not values:
        raise Unauthenticated("an access token is required", reason="TOKEN_MISSING")
    if len(values) > 1 or not isinstance(values[0], str):
        raise Unauthenticated("send exactly one authorization header", reason="TOKEN_INVALID")
    scheme, _, token = values[0].partition(" ")
    if scheme.lower() != "bearer" or not token or " " in token.strip():
        raise Unauthenticated("use 'authorization: Bearer <access token>'", reason="TOKEN_INVALID")
    return token.strip()


class AuthInterceptor(WrappingInterceptor):
    """Verify the token, its certificate binding and the required scopes of every rpc in
    ``policies``.

    ``certificates`` tells the partner's TLS client certificate of a call: the gateway's own
    TLS session at the gateway, what the gateway forwarded at a service (see
    :mod:`meshlib.auth.certificates`). A certificate-bound token is refused without it.
    """

    def __init__(
        self,
        verifier: JwtVerifier,
        policies: Mapping[str, MethodPolicy],
        *,
        certificates: CertificateSource | None = None,
    ) -> None:
        self._verifier = verifier
        self._policies = policies
        self._certificates = certificates or ForwardedCertificate()

    def wrap(
        self, handler: grpc.RpcMethodHandler | None, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        """Authenticate the call before its handler runs (rpcs that carry a token)."""
        if handler is None:
            return None
        policy = self._policies.get(handler_call_details.method)
        if policy is None or not policy.requires_token:
            # Health, reflection and open rpcs (IssueToken, GetJwks) carry no token.
            return handler
        return wrap_handler(handler, lambda behavior: self._guard(behavior, policy))

    async def _authenticate(self, policy: MethodPolicy, context: grpc.aio.ServicerContext) -> Any:
        caller = await self._verifier.verify(bearer_token(context.invocation_metadata()))
        if caller.certificate_thumbprint is not None:
            require_certificate_binding(caller, self._certificates(context))
        caller.require_scopes(policy.scopes)
        return caller

    def _guard(self, behavior: Callable[..., Any], policy: MethodPolicy) -> Callable[..., Any]:
        if getattr(behavior, "_meshlib_streaming", False):

            async def streaming(request: Any, context: grpc.aio.ServicerContext) -> Any:
                caller = await self._authenticate(policy, context)
                token = set_caller(caller)
                try:
                    # The stream lasts only as long as the caller's rights (meshlib.auth.streams).
                    async for item in guard_stream(behavior(request, context), caller, self._verifier.revocation):
                        yield item
                finally:
                    reset_caller(token)

            streaming._meshlib_streaming = True  # type: ignore[attr-defined]
            return streaming

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            token = set_caller(await self._authenticate(policy, context))
            try:
                return await behavior(request, context)
            finally:
                reset_caller(token)

        return unary
