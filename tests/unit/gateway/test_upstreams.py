"""The gateway's replica pools: round robin over replicas in service, ejection after failures
in a row (doubling), refusal when none is left, and replicas found by a host name."""

from __future__ import annotations

import asyncio
import socket

import grpc
import pytest

from gateway.upstreams import EjectionPolicy, UpstreamPool


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _pool(target: str, clock: Clock, **policy: float) -> UpstreamPool:
    return UpstreamPool(
        "account",
        target,
        lambda address, _tls_name: grpc.aio.insecure_channel(address),
        EjectionPolicy(**policy),  # type: ignore[arg-type]
        clock=clock,
    )


async def test_round_robin_over_the_replicas_in_service() -> None:
    pool = _pool("127.0.0.1:1,127.0.0.1:2,127.0.0.1:3", Clock())
    try:
        assert [pool.pick().address for _ in range(6)] == ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"] * 2
    finally:
        await pool.close()


async def test_failures_in_a_row_eject_a_replica_and_a_success_between_resets_the_count() -> None:
    clock = Clock()
    pool = _pool("127.0.0.1:1,127.0.0.1:2", clock, failures_to_eject=3, base_ejection_seconds=1.0)
    first, second = pool.replicas
    try:
        pool.failed(first)
        pool.failed(first)
        pool.succeeded(first)
        pool.failed(first)
        pool.failed(first)
        assert not first.ejected
        pool.failed(first)
        assert first.ejected and first.ejected_until == clock.now + 1.0
        assert {pool.pick().address for _ in range(4)} == {second.address}
        assert pool.has_other(second) is False and pool.has_other(first) is True
    finally:
        await pool.close()


async def test_with_every_replica_ejected_none_is_picked_until_the_next_probe() -> None:
    clock = Clock()
    pool = _pool("127.0.0.1:1,127.0.0.1:2", clock, failures_to_eject=1, base_ejection_seconds=2.0)
    try:
        for replica in pool.replicas:
            pool.failed(replica)
        assert pool.pick() is None
        clock.now += 0.5
        assert pool.retry_after_seconds() == pytest.approx(1.5)
    finally:
        await pool.close()


async def test_a_host_name_is_resolved_to_one_replica_per_address(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = [["10.0.0.1", "10.0.0.2"], ["10.0.0.2", "10.0.0.3"]]

    async def getaddrinfo(host: str, port: int, **_: object) -> list[tuple]:  # type: ignore[type-arg]
        assert (host, port) == ("account", 50052)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in answers.pop(0)]

    pool = _pool("account:50052", Clock())
    try:
        monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", getaddrinfo)
        await pool._resolve_once()
        assert [r.address for r in pool.replicas] == ["10.0.0.1:50052", "10.0.0.2:50052"]
        kept = pool.replicas[1]
        await pool._resolve_once()  # a pod went, another came: the one that stayed keeps its state
        assert [r.address for r in pool.replicas] == ["10.0.0.2:50052", "10.0.0.3:50052"]
        assert pool.replicas[0] is kept
    finally:
        await pool.close()
