"""The Redis limiter against a real Redis: exact sequences with an injected clock, a limit
shared by two gateway instances, and Redis killed mid-test under both failure policies."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.ratelimit import InProcessBackend, Limit, RateLimiter, RedisBackend
from gateway.ratelimit.config import parse_config
from meshlib.errors import ResourceExhausted, Unavailable

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


def _count_round_trips(backend: RedisBackend, script_calls: list[int] | None = None) -> list[int]:
    """The number of keys decided in each pipeline ``backend`` sends from now on (and, into
    ``script_calls``, the number of script calls carrying them)."""
    round_trips: list[int] = []
    pipelined = backend._pipelined

    async def counting(commands: list[Any]) -> list[Any]:
        round_trips.append(sum(int(command[2]) for command in commands))  # EVALSHA sha numkeys ...
        if script_calls is not None:
            script_calls.append(len(commands))
        return await pipelined(commands)

    backend._pipelined = counting  # type: ignore[method-assign]
    return round_trips


async def test_concurrent_decisions_are_one_entry_per_key_in_one_script_call(redis_url: str, key_prefix: str) -> None:
    backend = RedisBackend(redis_url, prefix=key_prefix, clock=lambda: 10**15)
    limit = Limit(rate=1, period_seconds=60, burst=50)
    script_calls: list[int] = []
    round_trips = _count_round_trips(backend, script_calls)
    try:
        hot = [backend.decide("hot", limit) for _ in range(200)]
        others = [backend.decide(f"cold-{i}", limit) for i in range(20)]
        decisions = await asyncio.gather(*hot, *others)
        hot_decisions = decisions[:200]
        assert sum(d.allowed for d in hot_decisions) == 50
        assert [d.remaining for d in hot_decisions if d.allowed] == list(range(49, -1, -1))
        assert all(not d.allowed and d.retry_after_us > 0 for d in hot_decisions[50:])
        assert all(d.allowed and d.remaining == 49 for d in decisions[200:])
        assert round_trips == [21]  # asked for in one tick: one round trip, one entry per key
        assert script_calls == [1]  # and one script run decides them all
    finally:
        await backend.close()


async def test_one_script_call_decides_each_key_with_its_own_limit_and_a_key_named_twice_in_order(
    redis_url: str, key_prefix: str
) -> None:
    backend = RedisBackend(redis_url, prefix=key_prefix, clock=lambda: 10**15)
    small, large = Limit(rate=1, period_seconds=1, burst=3), Limit(rate=2, period_seconds=1, burst=5)
    try:
        replies = await backend._run_batch(
            [("a", small, 2), ("b", large, 7), ("a", small, -1), ("a", small, 3), ("c", small, 1)]
        )
        assert replies == [
            (2, 2 * small.emission_us),  # two of three taken
            (5, 5 * large.emission_us),  # its own burst, not the other key's
            (0, 0),  # one given back...
            (2, 3 * small.emission_us),  # ...so two fit again, decided after the refund
            (1, small.emission_us),
        ]
    finally:
        await backend.close()


async def test_decisions_asked_for_while_round_trips_are_in_flight_share_the_next(
    redis_url: str, key_prefix: str
) -> None:
    backend = RedisBackend(redis_url, prefix=key_prefix, clock=lambda: 10**15)
    limit = Limit(rate=1, period_seconds=60, burst=5)
    round_trips = _count_round_trips(backend)
    slow_pipelined = backend._pipelined

    async def slow(commands: list[Any]) -> list[Any]:
        await asyncio.sleep(0.05)
        return await slow_pipelined(commands)

    backend._pipelined = slow  # type: ignore[method-assign]
    try:
        first = []
        for i in range(RedisBackend.MAX_IN_FLIGHT):
            first.append(asyncio.ensure_future(backend.decide(f"k-first-{i}", limit)))
            await asyncio.sleep(0.01)  # one more pipeline in flight
        later = []
        for i in range(10):  # ten separate ticks
            later.append(asyncio.ensure_future(backend.decide(f"k-{i}", limit)))
            await asyncio.sleep(0)
        decisions = await asyncio.gather(*first, *later)
        assert all(d.allowed for d in decisions)
        assert round_trips == [1] * RedisBackend.MAX_IN_FLIGHT + [10]
    finally:
        await backend.close()


async def test_a_busy_key_is_admitted_from_leases_exactly_and_without_a_round_trip_each(
    redis_url: str, key_prefix: str
) -> None:
    backend = RedisBackend(redis_url, prefix=key_prefix, clock=lambda: 10**15, lease_seconds=60)
    limit = Limit(rate=1, period_seconds=60, burst=1000)
    round_trips = _count_round_trips(backend)
    try:
        decisions = [await backend.decide("busy", limit) for _ in range(300)]
        assert all(d.allowed for d in decisions)
        # The clock stands still, so every answer is the exact one: the remaining count
        # leases report is the bucket's own.
        assert [d.remaining for d in decisions] == list(range(999, 699, -1))
        assert len(round_trips) < 15  # leases doubling to 1000 / 16 = 62 units
        assert max(round_trips) == 1
    finally:
        await backend.close()


async def test_leases_never_admit_more_than_the_limit_across_two_replicas(redis_url: str, key_prefix: str) -> None:
    replicas = [RedisBackend(redis_url, prefix=key_prefix, clock=lambda: 10**15, lease_seconds=60) for _ in range(2)]
    limit = Limit(rate=1, period_seconds=60, burst=64)
    try:
        allowed = 0
        for index in range(400):
            allowed += (await replicas[index % 2].decide("shared", limit)).allowed
        assert allowed == 64  # the whole burst, and not one call more
    finally:
        for backend in replicas:
            await backend.close()


async def _drain(backend: RedisBackend, key: str, limit: Limit) -> int:
    """How many calls ``backend`` admits for ``key`` before the first refusal."""
    admitted = 0
    while (await backend.decide(key, limit)).allowed:
        admitted += 1
    return admitted


@pytest.mark.parametrize("how", ["expiry", "close"])
async def test_unused_leased_units_go_back_to_the_bucket(redis_url: str, key_prefix: str, how: str) -> None:
    leasing = RedisBackend(redis_url, prefix=key_prefix, clock=lambda: 10**15, lease_seconds=0.05)
    strict = RedisBackend(redis_url, prefix=key_prefix, clock=lambda: 10**15, lease_seconds=0)
    limit = Limit(rate=1, period_seconds=60, burst=320)
    try:
        used = sum([(await leasing.decide("parked", limit)).allowed for _ in range(40)])
        assert used == 40
        assert leasing._leases.peek("parked").units > 0  # units taken ahead of calls that never came
        if how == "expiry":
            await asyncio.sleep(0.2)
        else:
            await leasing.close()
        assert await _drain(strict, "parked", limit) == 320 - 40
    finally:
        await strict.close()
        if how == "expiry":
            await leasing.close()


async def test_a_changed_limit_gives_the_old_leases_units_back_first(redis_url: str, key_prefix: str) -> None:
    # A configuration reload keeps the bucket's key (tier and class) but changes its limit.
    leasing = RedisBackend(redis_url, prefix=key_prefix, clock=lambda: 10**15, lease_seconds=60)
    strict = RedisBackend(redis_url, prefix=key_prefix, clock=lambda: 10**15, lease_seconds=0)
    before = Limit(rate=1, period_seconds=60, burst=320)
    after = Limit(rate=1, period_seconds=60, burst=640)
    try:
        assert all([(await leasing.decide("reloaded", before)).allowed for _ in range(40)])
        assert leasing._leases.peek("reloaded").units > 0
        assert (await leasing.decide("reloaded", after)).allowed
        assert await _drain(strict, "reloaded", after) == 640 - 41
    finally:
        await leasing.close()
        await strict.close()


async def test_a_lease_pushed_out_by_the_key_bound_gives_its_units_back(redis_url: str, key_prefix: str) -> None:
    leasing = RedisBackend(redis_url, prefix=key_prefix, clock=lambda: 10**15, lease_seconds=60, max_keys=1)
    strict = RedisBackend(redis_url, prefix=key_prefix, clock=lambda: 10**15, lease_seconds=0)
    limit = Limit(rate=1, period_seconds=60, burst=320)
    try:
        assert all([(await leasing.decide("old", limit)).allowed for _ in range(40)])
        assert leasing._leases.peek("old").units > 0
        assert (await leasing.decide("new", limit)).allowed  # one key at most: "old" leaves
        assert leasing._leases.peek("old") is None
        await asyncio.gather(*leasing._flush_tasks)  # the round trip that carries the refund
        assert await _drain(strict, "old", limit) == 320 - 40
    finally:
        await leasing.close()
        await strict.close()


async def test_small_buckets_are_never_leased(redis_url: str, key_prefix: str) -> None:
    backend = RedisBackend(redis_url, prefix=key_prefix, clock=lambda: 10**15, lease_seconds=60)
    limit = Limit(rate=4, period_seconds=86_400, burst=RedisBackend.LEASE_MIN_BURST - 1)  # e.g. a daily allowance
    round_trips = _count_round_trips(backend)
    try:
        assert await _drain(backend, "allowance", limit) == limit.burst
        assert len(round_trips) == limit.burst + 1  # one decision, one round trip
        assert not backend._leases
    finally:
        await backend.close()


# (microseconds the clock moves, calls asked for at once, which of two replicas asks)
lease_steps = st.lists(st.tuples(st.integers(0, 4_000), st.integers(1, 12), st.integers(0, 1)), min_size=1, max_size=40)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=lease_steps)
async def test_leased_admissions_across_replicas_never_exceed_what_the_bucket_grants(
    redis_url: str, key_prefix: str, steps: list[tuple[int, int, int]]
) -> None:
    clock = [10**15]
    start = clock[0]
    limit = Limit(rate=1000, period_seconds=1, burst=64)  # one unit a millisecond; leases of up to 4
    prefix = f"{key_prefix}{uuid.uuid4().hex[:8]}:"
    replicas = [RedisBackend(redis_url, prefix=prefix, clock=lambda: clock[0], lease_seconds=0.005) for _ in range(2)]
    try:
        admitted = 0
        for advance_us, calls, replica in steps:
            clock[0] += advance_us
            decisions = await asyncio.gather(*(replicas[replica].decide("k", limit) for _ in range(calls)))
            admitted += sum(d.allowed for d in decisions)
            # GCRA's own bound from a full bucket: the burst, then one call per emission interval.
            assert admitted <= limit.burst + (clock[0] - start) // limit.emission_us
            for decision in decisions:
                assert 0 <= decision.remaining < limit.burst
                assert decision.allowed == (decision.retry_after_us == 0)
    finally:
        for backend in replicas:
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
