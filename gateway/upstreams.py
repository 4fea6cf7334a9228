"""The gateway's upstreams: one channel per replica, round robin, hung or dead replicas ejected.

Each upstream service (``account``...) is a pool of replicas, from its target: a list of
addresses (``127.0.0.1:50052,127.0.0.1:50062``, as ``openbank-mesh up --replicas`` gives) or a
host name re-resolved every few seconds (a Kubernetes headless Service answers one record per
ready pod). Calls go round robin over the replicas in service.

Outlier detection, per replica: a replica whose calls fail at the transport (refused, reset:
UNAVAILABLE without the mesh's status details) or run past the gateway's upstream deadline
``failures_to_eject`` times in a row is ejected for a while (doubling on each ejection in a
row, up to a cap). While ejected it gets no partner calls; a health check probes it when its
time is up and brings it back once it answers, so a hung replica (SIGSTOP, a stuck event
loop) costs one deadline per in-flight call, not one per call. With every replica ejected the
gateway refuses at once (UPSTREAM_UNAVAILABLE with the time to the next probe) instead of
letting calls queue behind a peer that does not answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.upstream_metrics import record_ejection, record_pool
from meshlib.clients import replica_addresses

log = logging.getLogger("gateway.upstreams")


@dataclass(frozen=True)
class EjectionPolicy:
    """When a replica is taken out of service, and for how long."""

    failures_to_eject: int = 3
    base_ejection_seconds: float = 1.0
    max_ejection_seconds: float = 10.0
    probe_timeout_seconds: float = 0.5


@dataclass(eq=False)
class Replica:
    """One upstream replica: its channel and its outlier state."""

    address: str
    channel: grpc.aio.Channel
    consecutive_failures: int = 0
    ejections_in_a_row: int = 0
    ejected_until: float = 0.0
    probe: asyncio.Task[None] | None = None
    _calls: dict[tuple[str, bool], Any] = field(default_factory=dict)

    def method(self, path: str, *, streaming: bool) -> Any:
        """The raw-bytes multicallable for ``path`` on this replica (built once)."""
        key = (path, streaming)
        found = self._calls.get(key)
        if found is None:
            make = self.channel.unary_stream if streaming else self.channel.unary_unary
            found = self._calls[key] = make(path, request_serializer=_identity, response_deserializer=_identity)
        return found

    @property
    def ejected(self) -> bool:
        return self.ejected_until > 0.0


def _identity(data: bytes) -> bytes:
    return data


def is_transport_failure(error: grpc.aio.AioRpcError) -> bool:
    """UNAVAILABLE that no mesh service sent (no status details): the replica is unreachable."""
    if error.code() != grpc.StatusCode.UNAVAILABLE:
        return False
    return not any(key == "grpc-status-details-bin" for key, _ in error.trailing_metadata() or ())


class UpstreamPool:
    """The replicas of one upstream service, balanced and watched."""

    def __init__(
        self,
        name: str,
        target: str,
        open_channel: Callable[[str, str | None], grpc.aio.Channel],
        policy: EjectionPolicy,
        *,
        resolve_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._open_channel = open_channel
        self._policy = policy
        self._clock = clock
        self._resolve_seconds = resolve_seconds
        self._next = 0
        self._closed = False
        self._resolver: asyncio.Task[None] | None = None
        addresses = replica_addresses(target.removeprefix("dns:///"))
        # A single host name (not an address) is resolved, and resolved again, by us.
        self._dns_name = (
            addresses[0] if len(addresses) == 1 and not target.startswith("ipv") and _needs_dns(addresses[0]) else None
        )
        # Replicas found by name keep the name for TLS (their certificate names the Service).
        self._server_name = self._dns_name.rpartition(":")[0] if self._dns_name else None
        self.replicas: list[Replica] = [
            Replica(address, open_channel(address, self._server_name)) for address in addresses
        ]
        self._record()

    def _record(self) -> None:
        """The pool's metrics: replicas known, and out of rotation."""
        record_pool(self.name, len(self.replicas), sum(1 for r in self.replicas if r.ejected))

    async def start(self) -> None:
        """Resolve a host name target to its replicas now, then every ``resolve_seconds``."""
        if self._dns_name is not None:
            with contextlib.suppress(OSError):  # not resolvable yet: the name itself until it is
                await self._resolve_once()
            self._resolver = asyncio.create_task(self._resolve_forever(), name=f"resolve-{self.name}")

    async def close(self) -> None:
        """Stop probing and resolving; close every replica's channel."""
        self._closed = True
        tasks = [t for t in [self._resolver, *(r.probe for r in self.replicas)] if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for replica in self.replicas:
            await replica.channel.close()

    def pick(self) -> Replica | None:
        """The next replica in service (round robin); None when every one is ejected."""
        count = len(self.replicas)
        for _ in range(count):
            replica = self.replicas[self._next % count]
            self._next += 1
            if not replica.ejected:
                return replica
        return None

    def has_other(self, replica: Replica) -> bool:
        """Whether a replica other than ``replica`` is in service."""
        return any(other is not replica and not other.ejected for other in self.replicas)

    def retry_after_seconds(self) -> float:
        """How long until an ejected replica is probed again (when none is in service)."""
        now = self._clock()
        soonest = min((r.ejected_until for r in self.replicas if r.ejected), default=now)
        return max(0.1, soonest - now)

    def succeeded(self, replica: Replica) -> None:
        """A call answered (any status the service itself sent)."""
        replica.consecutive_failures = 0

    def failed(self, replica: Replica) -> None:
        """A call found the replica unreachable or not answering in time."""
        replica.consecutive_failures += 1
        if replica.consecutive_failures >= self._policy.failures_to_eject and not replica.ejected:
            self._eject(replica)

    def _eject(self, replica: Replica) -> None:
        seconds = min(
            self._policy.max_ejection_seconds,
            self._policy.base_ejection_seconds * 2**replica.ejections_in_a_row,
        )
        replica.ejections_in_a_row += 1
        replica.ejected_until = self._clock() + seconds
        record_ejection(self.name)
        self._record()
        log.warning(
            "upstream replica ejected",
            extra={"upstream": self.name, "replica": replica.address, "seconds": seconds},
        )
        if not self._closed and (replica.probe is None or replica.probe.done()):
            replica.probe = asyncio.create_task(self._probe_until_back(replica), name=f"probe-{replica.address}")

    async def _probe_until_back(self, replica: Replica) -> None:
        health = health_pb2_grpc.HealthStub(replica.channel)
        while replica in self.replicas:
            await asyncio.sleep(max(0.0, replica.ejected_until - self._clock()))
            try:
                answer = await health.Check(
                    health_pb2.HealthCheckRequest(),
                    timeout=self._policy.probe_timeout_seconds,
                    wait_for_ready=True,
                )
                serving = answer.status == health_pb2.HealthCheckResponse.SERVING
            except grpc.aio.AioRpcError:
                serving = False
            if serving:
                replica.ejected_until = 0.0
                replica.consecutive_failures = 0
                replica.ejections_in_a_row = 0
                self._record()
                log.warning(
                    "upstream replica back in service", extra={"upstream": self.name, "replica": replica.address}
                )
                return
            seconds = min(
                self._policy.max_ejection_seconds,
                self._policy.base_ejection_seconds * 2**replica.ejections_in_a_row,
            )
            replica.ejections_in_a_row += 1
            replica.ejected_until = self._clock() + seconds

    async def _resolve_forever(self) -> None:
        while True:
            await asyncio.sleep(self._resolve_seconds)
            with contextlib.suppress(OSError):
                await self._resolve_once()

    async def _resolve_once(self) -> None:
        assert self._dns_name is not None
        host, _, port = self._dns_name.rpartition(":")
        infos = await asyncio.get_running_loop().getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
        found = sorted({_join(info[4][0], int(port)) for info in infos})
        if not found:
            return
        known = {r.address: r for r in self.replicas}
        if set(found) == set(known):
            return
        kept = [known[a] if a in known else Replica(a, self._open_channel(a, self._server_name)) for a in found]
        for gone in set(known) - set(found):
            replica = known[gone]
            if replica.probe is not None:
                replica.probe.cancel()
            await replica.channel.close()
        self.replicas = kept
        self._record()
        log.info("upstream replicas resolved", extra={"upstream": self.name, "replicas": found})


def _needs_dns(address: str) -> bool:
    host = address.rpartition(":")[0].strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host != "localhost"
    return False


def _join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
