"""``openbank-mesh up --replicas N``: N processes of every service and the gateway.

Replicas share their service's PostgreSQL database and one Redis (rate limits, stream slots,
the invalidation bus), so ``--replicas`` above 1 needs both: the ones ``DATABASE_URL`` and
``REDIS_URL`` name, else a local PostgreSQL (data kept in ``<data-dir>/postgres``) and a Redis
started for the mesh's lifetime. Every process finds a service by the list of its replicas'
addresses (``OBM_ACCOUNT_TARGET=127.0.0.1:50052,127.0.0.1:50062``), which the services'
channels balance round robin and the gateway watches replica by replica: the same code path
as a Kubernetes headless Service (``dns:///account:50052``), which resolves to one address
per ready pod.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

# Which processes are replicated (bankweb stays one: its sessions are in Redis or memory).
REPLICATED = ("identity", "account", "settlement", "payment", "gateway")


def ports_of_replicas(ports: dict[str, int], replicas: int, names: Sequence[str] = REPLICATED) -> dict[str, list[int]]:
    """Each replicated process's ports: the first replica keeps its port, the others take the
    next ports after the highest of them, skipping any already in use (with the defaults:
    replica 2 of identity, account, settlement, payment and the gateway on 50055-50059)."""
    after = max(port for name, port in ports.items() if name in names) + 1
    taken = set(ports.values())
    result = {name: [ports[name]] for name in names}
    for _ in range(replicas - 1):
        for name in names:
            while after in taken:
                after += 1
            result[name].append(after)
            taken.add(after)
            after += 1
    if max(max(p) for p in result.values()) >= 65536:
        raise SystemExit(f"--replicas {replicas} runs out of ports; give a lower --base-port")
    return result


def replica_targets(ports: dict[str, list[int]], host: str = "127.0.0.1") -> dict[str, str]:
    """``OBM_<SERVICE>_TARGET`` of each service: every replica's address, comma separated."""
    return {
        f"OBM_{name.upper()}_TARGET": ",".join(f"{host}:{port}" for port in ports[name])
        for name in ports
        if name != "gateway"
    }


@dataclass
class LocalStores:
    """The PostgreSQL and Redis URLs a replicated mesh runs on."""

    database_url: str
    redis_url: str
    started: str  # what we started ourselves, for the banner ("" when both were given)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _binary(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if found is None:
        raise SystemExit(f"--replicas needs {name} (or DATABASE_URL / REDIS_URL naming running servers)")
    return found


def _as_postgres(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def _wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise SystemExit(f"nothing listens on port {port} after {timeout:g} s")


@contextlib.contextmanager
def local_stores(data_dir: Path) -> Iterator[LocalStores]:
    """PostgreSQL and Redis for a replicated mesh: the given ones, else our own until the block ends."""
    database_url = os.environ.get("OBM_DATABASE_URL") or os.environ.get("DATABASE_URL")
    redis_url = os.environ.get("OBM_REDIS_URL") or os.environ.get("REDIS_URL")
    with contextlib.ExitStack() as stack:
        started = []
        if not database_url:
            database_url = stack.enter_context(_postgres(data_dir / "postgres"))
            started.append(f"PostgreSQL {database_url}")
        if not redis_url:
            redis_url = stack.enter_context(_redis(data_dir))
            started.append(f"Redis {redis_url}")
        yield LocalStores(database_url, redis_url, ", ".join(started))


@contextlib.contextmanager
def _postgres(directory: Path) -> Iterator[str]:
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    data, sockets = directory / "data", directory / "sock"
    sockets.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres")
        shutil.chown(sockets, "postgres")
    if not (data / "PG_VERSION").exists():
        subprocess.run(  # noqa: S603 - our own binaries, no shell
            _as_postgres([initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8"]),
            check=True,
            stdout=subprocess.DEVNULL,
        )
    port = _free_port()
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c max_connections=400"
    subprocess.run(  # noqa: S603 - our own binaries, no shell
        _as_postgres([pg_ctl, "-D", str(data), "-o", options, "-l", str(directory / "log"), "-w", "start"]),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/openbank"
    finally:
        subprocess.run(  # noqa: S603 - our own binaries, no shell
            _as_postgres([pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"]),
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )


@contextlib.contextmanager
def _redis(data_dir: Path) -> Iterator[str]:
    port = _free_port()
    workdir = data_dir / "redis"
    workdir.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(  # noqa: S603 - our own binary, no shell
        [_binary("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_port(port)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)


def record_replicas(data_dir: Path, ports: dict[str, list[int]]) -> None:
    """Add every replica's port to ``mesh.json`` (``ports`` keeps the first replica's)."""
    from meshcli.targets import MESH_FILE

    path = data_dir / MESH_FILE
    recorded = json.loads(path.read_text())
    recorded["replicas"] = ports
    path.write_text(json.dumps(recorded, indent=2) + "\n")


def stores_env(stores: LocalStores | None) -> dict[str, str]:
    """The environment that points every process at the replicated mesh's stores."""
    return {"DATABASE_URL": stores.database_url, "REDIS_URL": stores.redis_url} if stores else {}
