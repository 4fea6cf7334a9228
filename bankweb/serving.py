"""How each of the bank's web apps (the customer pages, the operator console) runs: bound to
its port, served by uvicorn in the background, stopped cleanly, as its own process until
SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn


@dataclass
class RunningSite:
    """A started web app: its port, and how to stop it."""

    port: int
    server: uvicorn.Server
    task: asyncio.Task[None]
    closers: list[Any] = field(default_factory=list)

    async def stop(self) -> None:
        """Stop serving, then run the closers (audit trails, channels, Redis) in order."""
        self.server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        for close in self.closers:
            await close()


async def serve(app: Any, host: str, port: int, name: str, closers: list[Any]) -> RunningSite:
    """Bind (port 0 picks a free one), serve ``app`` in the background, return once listening.
    No access log: URLs can carry one-time values (the authorisation's request_uri)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    config = uvicorn.Config(
        app, log_config=None, access_log=False, proxy_headers=False, server_header=False, lifespan="off"
    )
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve(sockets=[sock]), name=f"{name}-http")
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    return RunningSite(sock.getsockname()[1], server, task, closers)


async def run_until_signalled(start: Callable[[], Awaitable[RunningSite]]) -> None:
    """Start, serve until SIGTERM / SIGINT, stop cleanly."""
    running = await start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await running.stop()
