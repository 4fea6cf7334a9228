"""Raw-bytes forwarding of public rpcs to long-lived upstream channels.

Messages are never decoded on the hot path; the partner's deadline (capped), cancellation,
trace context, interaction id and bearer token travel to the upstream, and the upstream's
status, details and trailers travel back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import grpc

from gateway.policy import ratelimit_var
from gateway.routing import Route
from gateway.upstreams import Replica, UpstreamPool, is_transport_failure
from meshlib.auth.certificates import FORWARDED_CERTIFICATE_HEADER, peer_certificate_sha256
from meshlib.errors import FieldViolation, InvalidArgument, Unavailable
from meshlib.logs import interaction_id_var
from meshlib.server import INTERACTION_ID_HEADER

log = logging.getLogger("gateway.proxy")

# Only these partner headers reach a service; everything else stays at the edge.
FORWARDED_HEADERS = frozenset({"authorization", INTERACTION_ID_HEADER, "x-fapi-customer-ip-address"})
_UPSTREAM_TRAILERS = frozenset({"grpc-status-details-bin", "ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"})


def _identity(data: bytes) -> bytes:
    return data


class GatewayProxy(grpc.GenericRpcHandler):
    """Serves every route by forwarding to a replica of its upstream (:mod:`gateway.upstreams`).

    A unary call waits for its upstream at most the upstream deadline of its rate-limit class
    (``upstream_deadlines``, else ``default_upstream_deadline``) or the partner's own, whichever
    is shorter; running out of the gateway's own is UPSTREAM_TIMEOUT and counts against the
    replica. A call that found its replica unreachable before it was sent is tried once on
    another replica.
    """

    def __init__(
        self,
        routes: Mapping[str, Route],
        pools: Mapping[str, UpstreamPool],
        *,
        max_call_deadline: float,
        max_stream_deadline: float,
        default_upstream_deadline: float | None = None,
        upstream_deadlines: Mapping[str, float] | None = None,
    ) -> None:
        self._routes = routes
        self._pools = pools
        self._max_call_deadline = max_call_deadline
        self._max_stream_deadline = max_stream_deadline
        self._default_upstream_deadline = default_upstream_deadline or max_call_deadline
        self._upstream_deadlines = dict(upstream_deadlines or {})
        self._handlers = {path: self._handler(path, route) for path, route in routes.items()}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        """The handler for a public rpc; None (UNIMPLEMENTED) for anything else."""
        return self._handlers.get(handler_call_details.method)

    def upstream_deadline(self, route: Route) -> float:
        """The longest the gateway waits for the upstream on one call of ``route``."""
        return min(
            self._upstream_deadlines.get(route.policy.rate_limit_class, self._default_upstream_deadline),
            self._max_call_deadline,
        )

    def _handler(self, path: str, route: Route) -> grpc.RpcMethodHandler:
        pool = self._pools[route.upstream]
        if route.policy.server_streaming:

            async def forward_stream(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
                timeout = _deadline(context, self._max_stream_deadline)
                replica = _pick(pool)
                call = replica.method(path, streaming=True)(
                    request, metadata=_forward_metadata(context), timeout=timeout
                )
                await _send_answer_headers(context)
                try:
                    async for message in call:
                        yield message
                except grpc.aio.AioRpcError as error:
                    if is_transport_failure(error):
                        pool.failed(replica)
                    await _relay_error(context, error)
                finally:
                    call.cancel()

            return grpc.unary_stream_rpc_method_handler(forward_stream, _identity, _identity)

        upstream_deadline = self.upstream_deadline(route)

        async def forward(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            partner_timeout = _deadline(context, self._max_call_deadline)
            metadata = _forward_metadata(context)
            for attempt in (1, 2):
                replica = _pick(pool)
                timeout = min(partner_timeout, upstream_deadline)
                started = time.monotonic()
                try:
                    response = await replica.method(path, streaming=False)(request, metadata=metadata, timeout=timeout)
                except grpc.aio.AioRpcError as error:
                    if is_transport_failure(error):
                        pool.failed(replica)
                        partner_timeout -= time.monotonic() - started
                        if attempt == 1 and partner_timeout > 0.01 and pool.has_other(replica):
                            continue
                        await _send_answer_headers(context)
                        raise _unreachable(pool.name, 0.5) from None
                    if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED and timeout < partner_timeout:
                        pool.failed(replica)  # our deadline, not the partner's: the replica is slow
                        await _send_answer_headers(context)
                        raise _upstream_timeout(pool.name, upstream_deadline) from None
                    pool.succeeded(replica)  # the service itself answered
                    await _send_answer_headers(context)
                    await _relay_error(context, error)
                    raise AssertionError("unreachable") from error
                pool.succeeded(replica)
                # The headers go out once the answer is here, just before it: a unary caller sees
                # nothing earlier anyway, and headers and answer reach it together.
                await _send_answer_headers(context)
                return response
            raise AssertionError("unreachable")

        return grpc.unary_unary_rpc_method_handler(forward, _identity, _identity)


def _pick(pool: UpstreamPool) -> Replica:
    replica = pool.pick()
    if replica is None:
        raise _unreachable(pool.name, pool.retry_after_seconds())
    return replica


def _unreachable(upstream: str, retry_after: float) -> Unavailable:
    return Unavailable(
        f"the {upstream} service is not answering; retry after the delay",
        reason="UPSTREAM_UNAVAILABLE",
        retry_after_seconds=retry_after,
        metadata={"upstream": upstream},
    )


def _upstream_timeout(upstream: str, seconds: float) -> Unavailable:
    return Unavailable(
        f"the {upstream} service did not answer in time; retry with the same request_id",
        reason="UPSTREAM_TIMEOUT",
        retry_after_seconds=0.5,
        metadata={"upstream": upstream, "upstream_deadline_ms": str(int(seconds * 1000))},
    )


# A partner's deadline may overshoot the cap by this much (clock skew, transit) unrefused.
DEADLINE_SLACK_SECONDS = 1.0


def _deadline(context: grpc.aio.ServicerContext, cap: float) -> float:
    """The upstream deadline: the partner's own, or the cap when it set none.

    A deadline longer than the cap is refused (DEADLINE_TOO_LONG) rather than silently
    shortened, so the partner learns the limit instead of seeing surprise timeouts.
    """
    remaining = context.time_remaining()
    if remaining is None:
        return cap
    if remaining > cap + DEADLINE_SLACK_SECONDS:
        raise InvalidArgument(
            FieldViolation("grpc-timeout", f"must be at most {cap:g} seconds for this method"),
            reason="DEADLINE_TOO_LONG",
            metadata={"max_deadline_ms": str(int(cap * 1000))},
        )
    return max(0.001, remaining)


def _forward_metadata(context: grpc.aio.ServicerContext) -> tuple[tuple[str, Any], ...]:
    thumbprint = peer_certificate_sha256(context)  # from this TLS session, never from a header
    forwarded = [
        (k, v) for k, v in context.invocation_metadata() or () if k in FORWARDED_HEADERS and k != INTERACTION_ID_HEADER
    ]
    interaction_id = interaction_id_var.get()
    if interaction_id:
        forwarded.append((INTERACTION_ID_HEADER, interaction_id))
    if thumbprint:
        forwarded.append((FORWARDED_CERTIFICATE_HEADER, thumbprint))
    return tuple(forwarded)


async def _send_answer_headers(context: grpc.aio.ServicerContext) -> None:
    """Initial metadata of every forwarded answer: interaction id and ratelimit-* headers."""
    metadata = list(ratelimit_var.get())
    interaction_id = interaction_id_var.get()
    if interaction_id:
        metadata.append((INTERACTION_ID_HEADER, interaction_id))
    if metadata:
        await context.send_initial_metadata(tuple(metadata))


async def _relay_error(context: grpc.aio.ServicerContext, error: grpc.aio.AioRpcError) -> None:
    """Pass the upstream's status through unchanged (its details are already partner-safe)."""
    trailers = tuple((k, v) for k, v in error.trailing_metadata() or () if k in _UPSTREAM_TRAILERS)
    code = error.code()
    if code == grpc.StatusCode.UNIMPLEMENTED:
        # An upstream without the method must look the same as an unknown method here.
        code, trailers = grpc.StatusCode.UNAVAILABLE, ()
    await context.abort(code, error.details() or "", trailers)
