"""The gateway's checks after authentication: consent, rate limits, stream caps.

Runs inside the auth interceptor (so the caller is known) and before the proxy forwards
anything; a refused call never reaches an upstream.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

import grpc

from gateway.client_limit import client_id_readers, per_client_class
from gateway.ratelimit import Decision, RateLimiter
from gateway.ratelimit.config import RateLimitConfig
from gateway.ratelimit.limiter import headers as ratelimit_headers
from gateway.routing import Route
from gateway.streams import LocalStreamSlots, StreamSlots
from meshlib.auth.consent import ConsentLookup
from meshlib.auth.context import current_caller
from meshlib.errors import MeshError, ResourceExhausted
from meshlib.grpc_errors import WrappingInterceptor, wrap_handler

CUSTOMER_PRESENT_HEADER = "x-fapi-customer-ip-address"

# The answer's ratelimit-* headers, set here and sent by the proxy with its initial metadata.
ratelimit_var: contextvars.ContextVar[tuple[tuple[str, str], ...]] = contextvars.ContextVar(
    "ratelimit_headers", default=()
)
# Filled in by the checks, read by the audit record.
audit_var: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("gateway_audit", default=None)


def _note(**fields: Any) -> None:
    record = audit_var.get()
    if record is not None:
        record.update(fields)


class GatewayPolicyInterceptor(WrappingInterceptor):
    """Consent state and permission, rate limits and stream caps for every public rpc."""

    def __init__(
        self,
        routes: Mapping[str, Route],
        consents: ConsentLookup,
        limiter: RateLimiter,
        config: Callable[[], RateLimitConfig],
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        streams: StreamSlots | None = None,
    ) -> None:
        self._routes = routes
        self._client_ids = client_id_readers(routes)
        self._consents = consents
        self._limiter = limiter
        self._config = config
        self._clock = clock
        # Shared by every replica with Redis (gateway.streams), per process otherwise.
        self._streams: StreamSlots = streams or LocalStreamSlots()

    def wrap(
        self, handler: grpc.RpcMethodHandler | None, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        """Consent, rate limits and stream caps before the call is forwarded."""
        route = self._routes.get(handler_call_details.method)
        if handler is None or route is None:
            return handler
        return wrap_handler(handler, lambda behavior: self._guard(behavior, route))

    async def _admit(self, route: Route, context: grpc.aio.ServicerContext, request: Any) -> Decision | None:
        policy = route.policy
        caller = current_caller()
        if caller is not None:
            # The caller itself too: the audit file records who (actor, client, customer) from it.
            _note(partner=caller.partner_id or caller.subject, consent=caller.consent_id, caller=caller)
        if policy.consent_permission:
            partner_id = caller.require_partner() if caller else ""
            consent_id = caller.require_consent() if caller else ""
            view = await self._consents.get(consent_id, partner_id=partner_id)
            view.require_usable(policy.consent_permission, self._clock())
        subject = (caller.partner_id or caller.subject) if caller else f"peer:{context.peer().rsplit(':', 1)[0]}"
        tier = caller.rate_limit_tier if caller else None
        decision = await self._limiter.check(subject, tier, policy.rate_limit_class)
        read_client_id = self._client_ids.get(policy.full_method)
        client_id = read_client_id(request) if read_client_id and isinstance(request, bytes) else ""
        if client_id:  # the token endpoint: per client as well as per address (gateway.client_limit)
            await self._limiter.check(f"client:{client_id}", None, per_client_class(policy.rate_limit_class))
        if policy.rate_limit_class == "reads" and caller and caller.consent_id:
            customer_present = any(k == CUSTOMER_PRESENT_HEADER for k, _ in context.invocation_metadata() or ())
            if not customer_present:
                await self._limiter.check_allowance(
                    f"consent:{caller.consent_id}", self._config().unattended_reads_per_day, "reads"
                )
        return decision

    def _guard(self, behavior: Callable[..., Any], route: Route) -> Callable[..., Any]:
        if getattr(behavior, "_meshlib_streaming", False):

            async def streaming(request: Any, context: grpc.aio.ServicerContext) -> Any:
                decision = await self._checked(self._admit(route, context, request))
                partner = _stream_owner()
                slot = await self._streams.acquire(partner, self._config().max_streams_per_partner)
                if slot is None:
                    _note(decision="denied", reason="TOO_MANY_STREAMS")
                    raise ResourceExhausted(
                        "too many open streams for this partner", reason="TOO_MANY_STREAMS", retry_after_seconds=1.0
                    )
                ratelimit_var.set(ratelimit_headers(decision))
                _note(decision="allowed")
                try:
                    async for item in behavior(request, context):
                        yield item
                finally:
                    self._streams.release(partner, slot)

            streaming._meshlib_streaming = True  # type: ignore[attr-defined]
            return streaming

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            decision = await self._checked(self._admit(route, context, request))
            ratelimit_var.set(ratelimit_headers(decision))
            _note(decision="allowed")
            return await behavior(request, context)

        return unary

    async def _checked(self, admission: Any) -> Decision | None:
        try:
            return await admission
        except MeshError as error:
            _note(decision="denied", reason=error.reason)
            if isinstance(error, ResourceExhausted) and error.retry_after_seconds is not None:
                reset = str(int(-(-error.retry_after_seconds // 1)))
                error.trailers = (("ratelimit-remaining", "0"), ("ratelimit-reset", reset))
            raise
        except asyncio.CancelledError:
            raise


def _stream_owner() -> str:
    caller = current_caller()
    return (caller.partner_id or caller.subject) if caller else "anonymous"
