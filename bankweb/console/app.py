"""Wiring: the one place that builds the console's adapters and runs its HTTP server."""

from __future__ import annotations

import logging
from typing import Any

from bankweb.console.audit_store import ConsoleAuditTrail
from bankweb.console.console import Console
from bankweb.console.grpc_mesh import AUDITED_SERVICES, ROLE_SCOPES, GrpcMesh
from bankweb.console.operators import OperatorDirectory
from bankweb.console.settings import ConsoleSettings
from bankweb.console.web import ConsoleWeb, build_console_app
from bankweb.ports import SessionStore
from bankweb.serving import RunningSite, serve
from bankweb.sessions import AttemptLimiter, MemorySessionStore, RedisSessionStore
from meshlib.auth.service_tokens import ServiceTokenSource
from meshlib.clients import ChannelSettings, open_channel
from meshlib.storage.database import Database

log = logging.getLogger("bankweb.console")


async def start_console(settings: ConsoleSettings) -> RunningSite:
    """Bind (port 0 picks a free one), serve in the background, return once listening."""
    secret = settings.client_secret()
    if secret is None:
        raise SystemExit("the console needs OBM_SERVICE_CLIENT_SECRET (or _FILE): its internal client")
    operators = OperatorDirectory.load(settings.console_operators_file)
    targets = {
        "identity": settings.identity_target,
        "account": settings.account_target,
        "payment": settings.payment_target,
        "settlement": settings.settlement_target,
    }
    channels = {
        name: open_channel(
            ChannelSettings(
                target=targets[name],
                tls_ca_file=settings.peer_tls_ca_file,
                tls_cert_file=settings.peer_tls_cert_file,
                tls_key_file=settings.peer_tls_key_file,
            )
        )
        for name in ("identity", *AUDITED_SERVICES[1:])
    }
    closers: list[Any] = [channel.close for channel in channels.values()]
    # One token per operator role, each with only that role's scopes (same client, narrower asks).
    tokens = {
        role: ServiceTokenSource(channels["identity"], settings.service_client_id, secret, scopes)
        for role, scopes in ROLE_SCOPES.items()
    }
    database = Database(settings.audit_database_url(), pool_size=2, application_name="console")
    journal = ConsoleAuditTrail(database)
    try:
        await journal.start(migrate=settings.run_migrations)
    except BaseException:
        await database.dispose()
        raise
    closers[:0] = [journal.close, database.dispose]
    sessions: SessionStore
    if settings.redis_url is not None:
        redis_sessions = RedisSessionStore(settings.redis_url.get_secret_value(), namespace="console")
        closers.append(redis_sessions.close)
        sessions = redis_sessions
    else:
        sessions = MemorySessionStore(namespace="console")
    limiter = AttemptLimiter(
        settings.console_signin_attempts,
        settings.console_signin_attempts_per_address,
        settings.console_signin_window_seconds,
    )
    console = Console(
        GrpcMesh(channels, tokens),  # pages with the read-only token, actions as the operator's role
        operators,
        sessions,
        limiter,
        journal,
        settings.console_session_idle_seconds,
    )
    web = ConsoleWeb(console, sessions, secure_cookies=settings.console_secure_cookies)
    running = await serve(build_console_app(web), settings.host, settings.console_port, "console", closers)
    log.info("operator console serving", extra={"port": running.port})
    return running
