"""Wiring: the one place that builds the console's adapters and runs its HTTP server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from bankweb.console.console import Console
from bankweb.console.grpc_mesh import AUDITED_SERVICES, CONSOLE_SCOPES, GrpcMesh
from bankweb.console.operators import OperatorDirectory
from bankweb.console.settings import ConsoleSettings
from bankweb.console.web import ConsoleWeb, build_console_app
from bankweb.ports import SessionStore
from bankweb.sessions import AttemptLimiter, MemorySessionStore, RedisSessionStore
from meshlib.audit import AuditFileWriter
from meshlib.auth.service_tokens import ServiceTokenSource
from meshlib.clients import ChannelSettings, open_channel

log = logging.getLogger("bankweb.console")


@dataclass
class RunningConsole:
    """A started console: its port, and how to stop it."""

    port: int
    server: uvicorn.Server
    task: asyncio.Task[None]
    closers: list[Any] = field(default_factory=list)

    async def stop(self) -> None:
        """Stop serving, write the audit trail's tail, close the channels."""
        self.server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        for close in self.closers:
            await close()


async def start_console(settings: ConsoleSettings) -> RunningConsole:
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
    tokens = ServiceTokenSource(channels["identity"], settings.service_client_id, secret, CONSOLE_SCOPES)
    journal = AuditFileWriter(settings.console_audit_dir, settings.console_audit_replica, service="console")
    await journal.start()
    closers.insert(0, journal.close)
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
        GrpcMesh(channels, tokens),
        operators,
        sessions,
        limiter,
        journal,
        settings.console_session_idle_seconds,
        audit_dir=settings.console_audit_dir,
    )
    web = ConsoleWeb(console, sessions, secure_cookies=settings.console_secure_cookies)
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.host, settings.console_port))
    sock.listen(128)
    sock.setblocking(False)
    config = uvicorn.Config(
        build_console_app(web),
        log_config=None,
        access_log=False,
        proxy_headers=False,
        server_header=False,
        lifespan="off",
    )
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve(sockets=[sock]), name="console-http")
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = sock.getsockname()[1]
    log.info("operator console serving", extra={"port": port})
    return RunningConsole(port, server, task, closers)
