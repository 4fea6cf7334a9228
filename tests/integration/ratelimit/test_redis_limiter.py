"""The Redis limiter against a real Redis: exact sequences with an injected clock, a limit
shared by two gateway instances, and Redis killed mid-test under both failure policies."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from meshlib.errors import ResourceExhausted, Unavailable
from meshlib.ratelimit import InProcessBackend, Limit, RateLimiter, RedisBackend
from meshlib.ratelimit.config import parse_config

CONFIG = parse_config(
    {
        "tiers": {
            "default": {
                "reads": {"rate": 10, "per": "second", "burst": 3},
                "payments": {"rate": 10, "per": "second", "burst": 3},
            }
        },
        "classes": {"reads": {"on_backend_failure": "fail_open"}, "payments": {"on_backend_failure": "fail_closed"}},
    }
)


def test_replies_are_parsed_by_hiredis() -> None:
    # The limiter's CPU per decision rests on redis-py's C reply parser (docs/benchmarks.md):
    # losing the extra in a dependency change would pass every other test.
    from redis.utils import HIREDIS_AVAILABLE

    assert HIREDIS_AVAILABLE


async def test_exact_sequence_at_the_boundary_matches_the_in_process_algorithm(redis_url: str, key_prefix: str) -> None:
    clock = [1_700_000_000_000_000]
    redis_backend = RedisBackend(redis_url, prefix=key_prefix, clock=lambda: clock[0])
    local = InProcessBackend(clock=lambda: clock[0])
    limit = Limit(rate=10, period_seconds=1, burst=3)
    try:
        steps = [0, 0, 0, 0, 99_999, 1, 0, 250_000, 0, 0, 0]
        remote_pattern, local_pattern = [], []
        for step in steps:
            clock[0] += step
            remote = await redis_backend.decide("k", limit)
            mine = local.decide_now("k", limit)
            remote_pattern.append((remote.allowed, remote.remaining, remote.retry_after_us))
            local_pattern.append((mine.allowed, mine.remaining, mine.retry_after_us))
        assert remote_pattern == local_pattern
        assert [allowed for allowed, _, _ in remote_pattern] == [
            True,
            True,
            True,
            False,
            False,
            True,
            False,
            True,
            True,
            False,
            False,
        ]
    finally:
        await redis_backend.close()


async def test_two_gateway_instances_share_one_limit(redis_url: str, key_prefix: str) -> None:
    first = RateLimiter(lambda: CONFIG, RedisBackend(redis_url, prefix=key_prefix, clock=lambda: 10**15))
    second = RateLimiter(lambda: CONFIG, RedisBackend(redis_url, prefix=key_prefix, clock=lambda: 10**15))
    allowed = 0
    for limiter in (first, second, first, second, first):
        try:
            await limiter.check("p1", None, "reads")
            allowed += 1
        except ResourceExhausted:
            pass
    assert allowed == 3  # the burst, across both instances
    for limiter in (first, second):
        await limiter._backend.close()  # type: ignore[attr-defined]


async def test_concurrent_decisions_are_pipelined_and_exact(redis_url: str, key_prefix: str) -> None:
    backend = RedisBackend(redis_url, prefix=key_prefix, clock=lambda: 10**15)
    limit = Limit(rate=1, period_seconds=60, burst=50)
    round_trips: list[int] = []
    pipelined = backend._pipelined

    async def counting(commands: list[Any]) -> list[Any]:
        round_trips.append(len(commands))
        return await pipelined(commands)

    backend._pipelined = counting  # type: ignore[method-assign]
    try:
        decisions = await asyncio.gather(
            *(backend.decide(f"hot-{uuid.uuid4().hex[:4]}" if i < 0 else "hot", limit) for i in range(200))
        )
        assert sum(d.allowed for d in decisions) == 50
        assert round_trips == [200]  # asked for in one tick: one round trip
    finally:
        await backend.close()


async def test_a_flushed_script_is_loaded_again_and_the_batch_still_decides_exactly(
    redis_url: str, key_prefix: str
) -> None:
    backend = RedisBackend(redis_url, prefix=key_prefix, clock=lambda: 10**15)
    limit = Limit(rate=1, period_seconds=60, burst=5)
    try:
        assert (await backend.decide("flushed", limit)).allowed
        await backend._redis.script_flush()  # as after a Redis restart or failover
        decisions = await asyncio.gather(*(backend.decide("flushed", limit) for _ in range(10)))
        assert sum(d.allowed for d in decisions) == 4  # one of the burst of 5 was used before
        assert [d.remaining for d in decisions if d.allowed] == [3, 2, 1, 0]
    finally:
        await backend.close()


async def test_redis_down_fail_open_uses_the_local_limiter_and_fail_closed_refuses(redis_srv, key_prefix: str) -> None:  # type: ignore[no-untyped-def]
    if redis_srv.process is None:
        pytest.skip("an external REDIS_URL cannot be stopped by the test")
    outcomes: list[tuple[str, str]] = []
    limiter = RateLimiter(
        lambda: CONFIG,
        RedisBackend(redis_srv.url, prefix=key_prefix),
        on_decision=lambda cls, outcome: outcomes.append((cls, outcome)),
    )
    try:
        assert (await limiter.check("p1", None, "reads")).allowed
        redis_srv.stop()
        # fail_open: decided locally (and still limited: the local bucket has a burst of 3).
        local = [await limiter.check("p9", None, "reads") for _ in range(3)]
        assert all(d.allowed and d.degraded for d in local)
        with pytest.raises(ResourceExhausted):
            await limiter.check("p9", None, "reads")
        # fail_closed: refused, retryable.
        with pytest.raises(Unavailable) as raised:
            await limiter.check("p1", None, "payments")
        assert raised.value.reason == "RATE_LIMITER_UNAVAILABLE"
        assert ("reads", "backend_down_fail_open") in outcomes
        assert ("payments", "backend_down_fail_closed") in outcomes
    finally:
        redis_srv.start_again()
        await limiter._backend.close()  # type: ignore[attr-defined]
    # Back to normal once Redis returns.
    recovered = RateLimiter(lambda: CONFIG, RedisBackend(redis_srv.url, prefix=key_prefix + "x"))
    assert not (await recovered.check("p1", None, "payments")).degraded
    await recovered._backend.close()  # type: ignore[attr-defined]
