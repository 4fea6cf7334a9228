"""Throwaway Redis and PostgreSQL servers on free ports, for tests and benchmarks.

``REDIS_URL`` / ``DATABASE_URL`` win when set. PostgreSQL runs as the ``postgres`` user
through ``runuser`` when we are root. With ``CI=true`` a missing binary is a failure, never
a skip: the caller decides by catching :class:`ServerUnavailable`.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


class ServerUnavailable(RuntimeError):
    """The server binary is not installed here."""


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early with code {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port} after {timeout}s")


def find_binary(name: str) -> str | None:
    """A server binary on PATH or in Debian's PostgreSQL directory."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    return candidates[0] if candidates else None


@dataclass
class RedisServer:
    """A private redis-server process."""

    url: str
    process: subprocess.Popen[bytes] | None
    port: int

    def stop(self) -> None:
        """Kill it (used by tests that need Redis to go away)."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def start_again(self) -> None:
        """Restart on the same port after :meth:`stop`."""
        self.process = _spawn_redis(self.port)


def _spawn_redis(port: int) -> subprocess.Popen[bytes]:
    binary = find_binary("redis-server")
    if binary is None:
        raise ServerUnavailable("redis-server is not installed (run `make test-servers`)")
    workdir = tempfile.mkdtemp(prefix="obm-redis-")
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
            "--daemonize",
            "no",
            "--protected-mode",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_for_port(port, process)
    return process


@contextlib.contextmanager
def redis_server() -> Iterator[RedisServer]:
    """A Redis for the duration of the block (or the one in REDIS_URL)."""
    if os.environ.get("REDIS_URL"):
        yield RedisServer(os.environ["REDIS_URL"], None, 0)
        return
    port = free_port()
    server = RedisServer(f"redis://127.0.0.1:{port}/0", _spawn_redis(port), port)
    try:
        yield server
    finally:
        server.stop()


@dataclass
class PostgresServer:
    """A private PostgreSQL cluster; ``admin_url`` reaches its ``postgres`` database."""

    admin_url: str
    host: str
    port: int

    def url_for(self, database: str) -> str:
        """The URL of one database on this server."""
        return f"postgresql://postgres@{self.host}:{self.port}/{database}"


def _as_postgres(command: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *command]
    return command


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL for the duration of the block (or the one in DATABASE_URL)."""
    if os.environ.get("DATABASE_URL"):
        from sqlalchemy.engine import make_url

        url = make_url(os.environ["DATABASE_URL"])
        yield PostgresServer(
            url.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False),
            url.host or "127.0.0.1",
            url.port or 5432,
        )
        return
    with private_postgres_server() as server:
        yield server


@dataclass
class PrivatePostgres(PostgresServer):
    """A PostgreSQL of our own, which a test may stop, start and restart (never a shared one)."""

    pg_ctl: str = ""
    data: Path = Path()
    options: str = ""
    log: Path = Path()

    def stop(self, mode: str = "immediate") -> None:
        """Stop the server (``immediate``: as a crash would, every connection cut)."""
        subprocess.run(
            _as_postgres([self.pg_ctl, "-D", str(self.data), "-m", mode, "-w", "stop"]),
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def start(self) -> None:
        """Start it again on the same port (waits until it accepts connections)."""
        subprocess.run(
            _as_postgres([self.pg_ctl, "-D", str(self.data), "-o", self.options, "-l", str(self.log), "-w", "start"]),
            check=True,
            stdout=subprocess.DEVNULL,
        )


@contextlib.contextmanager
def private_postgres_server() -> Iterator[PrivatePostgres]:
    """A throwaway PostgreSQL on a free port for the duration of the block, whatever DATABASE_URL says."""
    initdb, pg_ctl = find_binary("initdb"), find_binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        raise ServerUnavailable("PostgreSQL (initdb, pg_ctl) is not installed (run `make test-servers`)")
    root = Path(tempfile.mkdtemp(prefix="obm-pg-"))
    data, sockets = root / "data", root / "sock"
    sockets.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")
    subprocess.run(
        _as_postgres([initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"]),
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    port = free_port()
    options = (
        f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c max_connections=300 "
        "-c shared_buffers=128MB -c synchronous_commit=on"
    )
    server = PrivatePostgres(
        f"postgresql://postgres@127.0.0.1:{port}/postgres",
        "127.0.0.1",
        port,
        pg_ctl=pg_ctl,
        data=data,
        options=options,
        log=root / "log",
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


async def create_database(server: PostgresServer, name: str) -> str:
    """Create an empty database; returns its URL."""
    import asyncpg

    connection = await asyncpg.connect(server.admin_url)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return server.url_for(name)


async def drop_database(server: PostgresServer, name: str) -> None:
    """Drop a database, disconnecting whoever is still on it."""
    import asyncpg

    connection = await asyncpg.connect(server.admin_url)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()
