"""A throwaway Redis Cluster for tests: three masters (and a replica each, for failover), each
a private ``redis-server --cluster-enabled yes`` on a free port, joined with
``redis-cli --cluster create``. With CI=true a missing binary is a failure (the caller decides
by catching :class:`ServerUnavailable`)."""

from __future__ import annotations

import contextlib
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from tests.support.servers import ServerUnavailable, _wait_for_port, find_binary

CLUSTER_SCHEME = "redis+cluster"


@dataclass
class ClusterNode:
    """One redis-server of the cluster."""

    port: int
    process: subprocess.Popen[bytes]

    def kill(self) -> None:
        """SIGKILL: the node is gone (its replica takes over after the node timeout)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def restart(self) -> None:
        """Start the killed node again, as it was (its nodes file makes it rejoin the cluster,
        as a replica of whichever node took over its slots)."""
        self.process = subprocess.Popen(self.process.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_for_port(self.port, self.process)

    def info(self, section: str) -> dict[str, str]:
        """``CLUSTER INFO`` / ``INFO <section>`` as a dict."""
        command = ["cluster", "info"] if section == "cluster" else ["info", section]
        out = subprocess.run(
            [shutil.which("redis-cli") or "redis-cli", "-p", str(self.port), *command],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout
        return dict(line.strip().split(":", 1) for line in out.splitlines() if ":" in line)


@dataclass
class RedisCluster:
    """The cluster's nodes and the URL the mesh is given (``redis+cluster://``)."""

    nodes: list[ClusterNode] = field(default_factory=list)

    @property
    def url(self) -> str:
        """A live seed node; the client discovers the rest."""
        alive = next(node for node in self.nodes if node.process.poll() is None)
        return f"{CLUSTER_SCHEME}://127.0.0.1:{alive.port}/0"

    def masters(self) -> list[ClusterNode]:
        """The nodes that are masters now."""
        return [n for n in self.nodes if n.process.poll() is None and n.info("replication").get("role") == "master"]

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Until every live node says ``cluster_state:ok`` and every replica's link to its master
        is up (a replica that has not synced cannot take over)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            live = [n for n in self.nodes if n.process.poll() is None]
            healthy = live and all(n.info("cluster").get("cluster_state") == "ok" for n in live)
            replicas = [n.info("replication") for n in live]
            synced = all(r.get("master_link_status") == "up" for r in replicas if r.get("role") == "slave")
            if healthy and synced:
                return
            time.sleep(0.1)
        raise TimeoutError("the cluster did not become healthy")

    def stop(self) -> None:
        """Kill every node."""
        for node in self.nodes:
            node.kill()


def _cluster_port() -> int:
    """A free port whose cluster-bus port (port + 10000) is free too."""
    for _ in range(200):
        port = random.randint(20_000, 45_000)
        if all(_free(candidate) for candidate in (port, port + 10_000)):
            return port
    raise RuntimeError("no free port pair for a cluster node")


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _spawn(binary: str, port: int, workdir: str) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            f"nodes-{port}.conf",
            "--cluster-node-timeout",
            "1000",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
            "--protected-mode",
            "no",
            # A replica syncs at once (the default waits 5 s for more replicas to share the RDB).
            "--repl-diskless-sync-delay",
            "0",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_for_port(port, process)
    return process


@contextlib.contextmanager
def redis_cluster(masters: int = 3, replicas: int = 1) -> Iterator[RedisCluster]:
    """A Redis Cluster of ``masters`` masters with ``replicas`` replicas each, for the block."""
    binary, cli = find_binary("redis-server"), shutil.which("redis-cli")
    if binary is None or cli is None:
        raise ServerUnavailable("redis-server / redis-cli are not installed (run `make test-servers`)")
    workdir = tempfile.mkdtemp(prefix="obm-redis-cluster-")
    cluster = RedisCluster()
    try:
        for _ in range(masters * (1 + replicas)):
            port = _cluster_port()
            cluster.nodes.append(ClusterNode(port, _spawn(binary, port, workdir)))
        created = subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in cluster.nodes),
                "--cluster-replicas",
                str(replicas),
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if created.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {created.stdout[-2000:]}{created.stderr[-2000:]}")
        cluster.wait_healthy()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)
