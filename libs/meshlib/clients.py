"""Outgoing gRPC: long-lived channels, deadlines on every call, retries on UNAVAILABLE only.

Services call each other through channels made here, so tracing, interaction-id
propagation, keepalive, message limits and (m)TLS are set up one way.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.rpc import error_details_pb2

from meshlib.grpc_errors import decode_rpc_error, decode_status
from meshlib.logs import INTERACTION_ID_HEADER, interaction_id_var
from meshlib.telemetry import client_interceptors

log = logging.getLogger("meshlib.clients")

T = TypeVar("T")


@dataclass(frozen=True)
class ChannelSettings:
    """How to reach an upstream: address, optional (m)TLS files, limits."""

    target: str
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_server_name: str | None = None
    max_message_bytes: int = 4 * 1024 * 1024
    keepalive_time_ms: int = 30_000


class _InteractionIdInterceptor(grpc.aio.UnaryUnaryClientInterceptor, grpc.aio.UnaryStreamClientInterceptor):
    """Carries the current call's interaction id to the next hop."""

    @staticmethod
    def _with_id(details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        interaction_id = interaction_id_var.get()
        if not interaction_id:
            return details
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        if INTERACTION_ID_HEADER not in metadata:
            metadata.add(INTERACTION_ID_HEADER, interaction_id)
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )

    async def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return await continuation(self._with_id(client_call_details), request)

    async def intercept_unary_stream(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return await continuation(self._with_id(client_call_details), request)


# Calls spread over every address the target resolves to (each replica of a service): a list
# of addresses (``up --replicas``) or a DNS name with one record per replica (a Kubernetes
# headless Service, ``dns:///account:50052``) take the same path.
ROUND_ROBIN_SERVICE_CONFIG = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})


def replica_addresses(target: str) -> list[str]:
    """The ``host:port`` of each replica a target lists (``a:1,b:2`` or ``ipv4:a:1,b:2``);
    a single address or a resolver target (``dns:///svc:port``) is one entry."""
    for scheme in ("ipv4:", "ipv6:"):
        if target.startswith(scheme):
            target = target[len(scheme) :]
            break
    return [part.strip() for part in target.split(",") if part.strip()]


def balanced_target(target: str) -> str:
    """The gRPC target for ``target``: a list of replicas becomes an ``ipv4:`` (or ``ipv6:``)
    target gRPC balances over; anything else is used as it is."""
    if "," not in target or target.startswith(("ipv4:", "ipv6:")):
        return target
    addresses = replica_addresses(target)
    return ("ipv6:" if addresses[0].startswith("[") else "ipv4:") + ",".join(addresses)


def open_channel(
    settings: ChannelSettings, *, tracing: bool = True, propagate_interaction_id: bool = True
) -> grpc.aio.Channel:
    """A long-lived channel to an upstream; create once at start-up, close at shutdown.

    ``propagate_interaction_id=False`` leaves out the client interceptor that copies the
    current call's interaction id: for a caller that sets the header itself (the gateway's
    proxy), where the interceptor would only cost a task and a metadata copy per call.
    """
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.keepalive_time_ms", settings.keepalive_time_ms),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.enable_retries", 0),  # retries are explicit, on UNAVAILABLE only
        # Reconnect quickly after a peer restarts (rollouts, crashes): the default first
        # backoff of a second would fail every call made in that second.
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        # A retry waiting for ready (call_with_retry) then always spans a reconnect attempt.
        ("grpc.max_reconnect_backoff_ms", 1000),
        ("grpc.service_config", ROUND_ROBIN_SERVICE_CONFIG),
    ]
    target = balanced_target(settings.target)
    interceptors: list[Any] = [_InteractionIdInterceptor()] if propagate_interaction_id else []
    if tracing:
        interceptors = [*client_interceptors(), *interceptors]
    if settings.tls_ca_file:
        if settings.tls_server_name:
            options.append(("grpc.ssl_target_name_override", settings.tls_server_name))
        credentials = grpc.ssl_channel_credentials(
            root_certificates=settings.tls_ca_file.read_bytes(),
            private_key=settings.tls_key_file.read_bytes() if settings.tls_key_file else None,
            certificate_chain=settings.tls_cert_file.read_bytes() if settings.tls_cert_file else None,
        )
        return grpc.aio.secure_channel(target, credentials, options=options, interceptors=interceptors)
    return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)


def retry_delay(error: grpc.aio.AioRpcError) -> float:
    """The seconds the upstream's RetryInfo asks a caller to wait (0 without one)."""
    status = decode_status(error.trailing_metadata())
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return max(0.0, info.retry_delay.seconds + info.retry_delay.nanos / 1e9)
    return 0.0


async def call_with_retry(
    call: Callable[..., Awaitable[T]],
    *,
    attempts: int = 4,
    base_delay: float = 0.05,
    max_delay: float = 1.0,
    what: str = "call",
) -> T:
    """Run ``call`` again (jittered exponential backoff, at least the upstream's RetryInfo
    delay up to ``max_delay``) only when it fails UNAVAILABLE.

    ``call`` takes a ``wait_for_ready`` keyword and passes it to the stub. The first attempt
    fails fast; the retries wait, within their own deadline, for the channel to connect:
    right after a peer restarts the channel may still be backing off from its failed
    connects, and a retry that merely waited out its delay would fail the same way.
    """
    for attempt in range(1, attempts + 1):
        try:
            return await call(wait_for_ready=attempt > 1)
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.UNAVAILABLE or attempt == attempts:
                raise
            delay = min(max_delay, base_delay * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)
            # A replica that answers UNAVAILABLE itself (its store or peer lost, shedding while
            # the other replica restarts) says when to come back; retrying sooner, the three
            # attempts were spent within ~150 ms and the saga gave the payment up.
            delay = max(delay, min(max_delay, retry_delay(error)))
            log.warning("upstream unavailable, retrying", extra={"what": what, "attempt": attempt})
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")


Bearer = Callable[[], Awaitable[str]]


class PeerCaller:
    """The one way a service calls another: its service token, a deadline, retries on
    UNAVAILABLE only (:func:`call_with_retry`), and the upstream's error decoded back into a
    :class:`~meshlib.errors.MeshError` with its reason.

    ``bearer`` returns the current service token (``ServiceTokenSource.token``).
    """

    def __init__(self, bearer: Bearer, *, deadline_seconds: float, attempts: int = 3) -> None:
        self._bearer = bearer
        self._deadline = deadline_seconds
        self._attempts = attempts

    async def __call__(self, method: Callable[..., Awaitable[T]], request: Any, what: str) -> T:
        """Call ``method`` (a stub's bound rpc) with ``request``; ``what`` names it in logs."""
        metadata = (("authorization", f"Bearer {await self._bearer()}"),)
        try:
            return await call_with_retry(
                lambda **options: method(request, timeout=self._deadline, metadata=metadata, **options),
                attempts=self._attempts,
                what=what,
            )
        except grpc.aio.AioRpcError as error:
            raise decode_rpc_error(error) from None
