"""Gateway wiring: the route table from the contract, upstream channels, the verifier."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from gateway.proxy import GatewayProxy
from gateway.routing import build_routes
from gateway.settings import GatewaySettings
from meshlib.app import build_verifier
from meshlib.auth.interceptor import AuthInterceptor
from meshlib.auth.jwks_client import identity_jwks_fetcher
from meshlib.clients import ChannelSettings, open_channel
from meshlib.server import Lifecycle, MeshServer, ServiceRegistration

log = logging.getLogger("gateway")


def _channel(settings: GatewaySettings, target: str) -> grpc.aio.Channel:
    return open_channel(
        ChannelSettings(
            target=target,
            tls_ca_file=settings.peer_tls_ca_file,
            tls_cert_file=settings.peer_tls_cert_file,
            tls_key_file=settings.peer_tls_key_file,
            max_message_bytes=settings.max_message_bytes,
        )
    )


async def start_gateway(
    settings: GatewaySettings, *, jwks_fetcher: Callable[[], Awaitable[dict[str, Any]]] | None = None
) -> MeshServer:
    """Build and start the gateway; returns the running server (tests may pass a JWKS)."""
    routes = build_routes()
    channels = {
        "identity": _channel(settings, settings.identity_target),
        "account": _channel(settings, settings.account_target),
        "payment": _channel(settings, settings.payment_target),
        "settlement": _channel(settings, settings.settlement_target),
    }
    verifier = build_verifier(settings, jwks_fetcher or identity_jwks_fetcher(channels["identity"]))
    proxy = GatewayProxy(
        routes,
        channels,
        max_call_deadline=settings.max_call_deadline_seconds,
        max_stream_deadline=settings.max_stream_deadline_seconds,
    )
    public_services = sorted({route.policy.service for route in routes.values()})

    def add_proxy(handler: Any, server: grpc.aio.Server) -> None:
        server.add_generic_rpc_handlers([handler])

    async def close_channels() -> None:
        for channel in channels.values():
            await channel.close()

    server = MeshServer(
        settings,
        # One registration carries the proxy; the rest only name the public services for
        # health and reflection.
        [ServiceRegistration(public_services[0], proxy, add_proxy)]
        + [ServiceRegistration(name, None, lambda *_: None) for name in public_services[1:]],
        interceptors=[AuthInterceptor(verifier, {path: r.policy for path, r in routes.items()})],
        error_domain="gateway.openbank.dev",
        lifecycle=Lifecycle(on_stop=[close_channels]),
    )
    await server.start()
    server.routes = routes  # type: ignore[attr-defined]
    return server
