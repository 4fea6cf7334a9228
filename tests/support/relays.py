"""TCP relays that make one test process call from several source addresses.

Linux routes all of 127.0.0.0/8 to the loopback interface, so a connection bound to
127.0.0.N reaches a server on 127.0.0.1 and the server sees 127.0.0.N as its peer. A relay
listens on a free port and opens each accepted connection's upstream leg from its own
source address: a gRPC channel to the relay looks, to the server, like a distinct client.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass


@dataclass
class Relay:
    """One relay: connect to ``port`` on 127.0.0.1 to reach the target from ``source``."""

    source: str
    port: int
    server: asyncio.Server


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def start_relay(target_port: int, source: str, target_host: str = "127.0.0.1") -> Relay:
    """A relay to ``target_host:target_port`` whose upstream connections come from ``source``."""

    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(
            target_host, target_port, local_addr=(source, 0)
        )
        await asyncio.gather(_pipe(client_reader, upstream_writer), _pipe(upstream_reader, client_writer))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return Relay(source, server.sockets[0].getsockname()[1], server)


@contextlib.asynccontextmanager
async def relays(target_port: int, count: int) -> AsyncIterator[list[Relay]]:
    """``count`` relays to the target, from 127.0.0.2, 127.0.0.3, ..."""
    started = [await start_relay(target_port, f"127.0.0.{n}") for n in range(2, 2 + count)]
    try:
        yield started
    finally:
        for relay in started:
            relay.server.close()
        for relay in started:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(relay.server.wait_closed(), 1)
