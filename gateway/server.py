"""Gateway wiring: the route table from the contract, upstream channels, the verifier with
revocation, consent checks, rate limits and the audit log."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from gateway.audit import AuditInterceptor
from gateway.policy import GatewayPolicyInterceptor
from gateway.proxy import GatewayProxy
from gateway.ratelimit import InProcessBackend, RateLimiter, RedisBackend
from gateway.ratelimit.config import ReloadingConfig
from gateway.ratelimit.metrics import record_ratelimit_decision
from gateway.reflection import public_descriptor_pool
from gateway.routing import build_routes
from gateway.settings import GatewaySettings
from gateway.streams import LocalStreamSlots, RedisStreamSlots
from gateway.upstreams import EjectionPolicy, UpstreamPool
from meshlib.app import build_verifier
from meshlib.audit import AuditFileWriter
from meshlib.auth.certificates import peer_certificate_sha256
from meshlib.auth.consent import ConsentLookup
from meshlib.auth.interceptor import AuthInterceptor
from meshlib.auth.jwks_client import identity_jwks_fetcher
from meshlib.auth.wiring import identity_peers
from meshlib.clients import ChannelSettings, open_channel
from meshlib.server import Lifecycle, MeshServer, ServiceRegistration

log = logging.getLogger("gateway")


def _channel(settings: GatewaySettings, target: str, server_name: str | None = None) -> grpc.aio.Channel:
    # The proxy puts the interaction id on every forwarded call itself, and the gateway's own
    # calls (consents, token status, keys) are shared cache refreshes that belong to no
    # single partner call: no per-call interceptor on these channels.
    return open_channel(
        ChannelSettings(
            target=target,
            tls_ca_file=settings.peer_tls_ca_file,
            tls_cert_file=settings.peer_tls_cert_file,
            tls_key_file=settings.peer_tls_key_file,
            max_message_bytes=settings.max_message_bytes,
            tls_server_name=server_name,
        ),
        propagate_interaction_id=False,
    )


async def start_gateway(
    settings: GatewaySettings,
    *,
    jwks_fetcher: Callable[[], Awaitable[dict[str, Any]]] | None = None,
    consents: ConsentLookup | None = None,
    revocation: Any = None,
) -> MeshServer:
    """Build and start the gateway; returns the running server.

    Tests may pass a JWKS, a consent lookup and a revocation check instead of identity's.
    """
    if settings.service_name == "openbank":  # unnamed: the process is the gateway (logs, metrics)
        settings = settings.model_copy(update={"service_name": "gateway"})
    routes = build_routes()
    channels = {
        "identity": _channel(settings, settings.identity_target),
        "account": _channel(settings, settings.account_target),
        "payment": _channel(settings, settings.payment_target),
        "settlement": _channel(settings, settings.settlement_target),
    }
    peers = identity_peers(
        channels["identity"],
        client_id=settings.service_client_id,
        client_secret=settings.service_client_secret,
        redis_url=settings.redis_url,
        channel=settings.invalidation_channel,
        stream_recheck_bus_up_seconds=settings.stream_recheck_seconds_bus_up,
    )
    # Partner calls go to the replicas of each upstream through the gateway's own pools (per
    # replica outlier detection); the gateway's own calls (keys, consents, token status) use
    # the balanced channels above.
    ejection = EjectionPolicy(
        failures_to_eject=settings.upstream_failures_to_eject,
        base_ejection_seconds=settings.upstream_ejection_seconds,
        max_ejection_seconds=settings.upstream_max_ejection_seconds,
    )
    pools = {
        name: UpstreamPool(name, target, lambda address, tls_name: _channel(settings, address, tls_name), ejection)
        for name, target in (
            ("identity", settings.identity_target),
            ("account", settings.account_target),
            ("payment", settings.payment_target),
            ("settlement", settings.settlement_target),
        )
    }
    verifier = build_verifier(settings, jwks_fetcher or identity_jwks_fetcher(channels["identity"]))
    verifier.revocation = revocation if revocation is not None else peers.revocation

    limits = ReloadingConfig(settings.ratelimit_config_file)
    backend: RedisBackend | InProcessBackend
    if settings.redis_url:
        backend = RedisBackend(
            settings.redis_url,
            prefix=settings.ratelimit_key_prefix,
            lease_seconds=settings.ratelimit_lease_seconds,
            max_lease=settings.ratelimit_max_lease,
        )
    else:
        backend = InProcessBackend()
    streams: RedisStreamSlots | LocalStreamSlots
    if settings.redis_url:
        streams = RedisStreamSlots(
            settings.redis_url,
            prefix=f"{settings.ratelimit_key_prefix}streams:",
            lease_seconds=settings.stream_slot_lease_seconds,
        )
    else:
        streams = LocalStreamSlots()  # one gateway: the cap per process is the cap
    limiter = RateLimiter(
        lambda: limits.current,
        backend,
        on_decision=lambda cls, outcome: record_ratelimit_decision(cls, outcome == "allowed"),
    )
    proxy = GatewayProxy(
        routes,
        pools,
        max_call_deadline=settings.max_call_deadline_seconds,
        max_stream_deadline=settings.max_stream_deadline_seconds,
        default_upstream_deadline=settings.upstream_call_timeout_seconds,
        upstream_deadlines=settings.upstream_deadlines,
    )
    public_services = sorted({route.policy.service for route in routes.values()})
    journal = AuditFileWriter(
        settings.audit_dir or settings.data_dir / "audit",
        settings.audit_replica,
        flush_seconds=settings.audit_flush_seconds,
        retention_days=settings.audit_retention_days,
    )
    reload_task: asyncio.Task[None] | None = None

    async def reload_limits_forever() -> None:
        while True:
            await asyncio.sleep(settings.ratelimit_reload_seconds)
            limits.maybe_reload()

    async def start_background() -> None:
        nonlocal reload_task
        await journal.start()
        await peers.start()
        verifier.keys.warm_up()  # identity's keys before the first call needs them
        await streams.start()
        for pool in pools.values():
            await pool.start()
        reload_task = asyncio.create_task(reload_limits_forever(), name="ratelimit-reload")

    async def close_everything() -> None:
        if reload_task is not None:
            reload_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reload_task
        await peers.bus.close()
        await journal.close()
        await streams.close()
        if isinstance(backend, RedisBackend):
            await backend.close()
        for channel in channels.values():
            await channel.close()
        for pool in pools.values():
            await pool.close()

    def add_proxy(handler: Any, server: grpc.aio.Server) -> None:
        server.add_generic_rpc_handlers([handler])

    server = MeshServer(
        settings,
        # One registration carries the proxy; the rest only name the public services for
        # health and reflection.
        [ServiceRegistration(public_services[0], proxy, add_proxy)]
        + [ServiceRegistration(name, None, lambda *_: None) for name in public_services[1:]],
        interceptors=[
            AuditInterceptor(journal),
            # A certificate-bound token must come over the partner's own TLS session with that
            # certificate; the gateway believes no forwarded thumbprint (it is the edge).
            AuthInterceptor(
                verifier, {path: r.policy for path, r in routes.items()}, certificates=peer_certificate_sha256
            ),
            GatewayPolicyInterceptor(
                routes, consents or peers.consents, limiter, lambda: limits.current, streams=streams
            ),
        ],
        error_domain="gateway.openbank.dev",
        lifecycle=Lifecycle(on_start=[start_background], on_stop=[close_everything]),
        # Partners' reflection lists the routed rpcs only, not the internal ones beside them.
        reflection_pool=lambda service_names: public_descriptor_pool(routes, service_names),
    )
    await server.start()
    server.routes = routes  # type: ignore[attr-defined]
    server.upstreams = pools  # type: ignore[attr-defined]
    server.limits = limits  # type: ignore[attr-defined]
    server.audit_journal = journal  # type: ignore[attr-defined]
    return server
