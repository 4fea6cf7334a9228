"""RefreshingCache: one fetch per key, refresh ahead of expiry, invalidation wins over a fetch
under way, failures reach every waiter, stale grace, bounded size."""

from __future__ import annotations

import asyncio

import pytest

from meshlib.cache import BoundedMap, RefreshingCache


class Source:
    """Counts fetches; each answers its number, or waits at the gate while it is shut."""

    def __init__(self) -> None:
        self.fetches = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.failing = False

    async def fetch(self) -> int:
        self.fetches += 1
        number = self.fetches
        await self.gate.wait()
        if self.failing:
            raise ConnectionError("the source is down")
        return number


@pytest.fixture
def clock() -> list[float]:
    return [0.0]


def _cache(clock: list[float], **options: float) -> RefreshingCache[str, int]:
    return RefreshingCache(10, clock=lambda: clock[0], **options)  # type: ignore[arg-type]


async def test_callers_that_miss_together_share_one_fetch(clock: list[float]) -> None:
    cache, source = _cache(clock), Source()
    source.gate.clear()
    racing = [asyncio.ensure_future(cache.get("k", source.fetch)) for _ in range(20)]
    await asyncio.sleep(0.01)
    source.gate.set()
    assert await asyncio.gather(*racing) == [1] * 20
    assert source.fetches == 1 and await cache.get("k", source.fetch) == 1


async def test_a_hit_past_the_refresh_point_answers_at_once_and_refreshes_behind(clock: list[float]) -> None:
    cache, source = _cache(clock), Source()
    assert await cache.get("k", source.fetch) == 1
    clock[0] = 7.9  # under 0.8 of the TTL
    assert await cache.get("k", source.fetch) == 1 and source.fetches == 1
    source.gate.clear()
    clock[0] = 8.5
    assert [await cache.get("k", source.fetch) for _ in range(5)] == [1] * 5  # nobody waits
    await asyncio.sleep(0.01)
    assert source.fetches == 2  # one refresh for the five hits
    source.gate.set()
    await asyncio.sleep(0.01)
    clock[0] = 18.0  # past the first entry's TTL, within the refreshed one's (fetched at 8.5)
    assert await cache.get("k", source.fetch) == 2 and source.fetches == 2


async def test_an_expired_entry_is_fetched_again_and_waited_for(clock: list[float]) -> None:
    cache, source = _cache(clock), Source()
    await cache.get("k", source.fetch)
    clock[0] = 10.0
    assert await cache.get("k", source.fetch) == 2


async def test_an_invalidation_disowns_the_fetch_under_way(clock: list[float]) -> None:
    cache, source = _cache(clock), Source()
    source.gate.clear()
    first = asyncio.ensure_future(cache.get("k", source.fetch))
    await asyncio.sleep(0.01)
    cache.invalidate("k")  # the answer on its way may predate the change
    source.gate.set()
    assert await first == 1  # its waiter still gets it
    assert await cache.get("k", source.fetch) == 2  # but it was not kept


async def test_a_failed_fetch_fails_its_waiters_and_is_tried_again_next_time(clock: list[float]) -> None:
    cache, source = _cache(clock), Source()
    source.failing = True
    outcomes = await asyncio.gather(*(cache.get("k", source.fetch) for _ in range(3)), return_exceptions=True)
    assert source.fetches == 1 and all(isinstance(o, ConnectionError) for o in outcomes)
    source.failing = False
    assert await cache.get("k", source.fetch) == 2


async def test_stale_grace_serves_the_last_value_only_while_the_source_fails(clock: list[float]) -> None:
    cache, source = _cache(clock, stale_grace_seconds=5), Source()
    await cache.get("k", source.fetch)
    source.failing = True
    clock[0] = 12.0  # expired, within the grace
    assert await cache.get("k", source.fetch) == 1
    clock[0] = 16.0  # beyond it
    with pytest.raises(ConnectionError):
        await cache.get("k", source.fetch)
    without_grace = _cache(clock)
    source.failing = False
    await without_grace.get("k", source.fetch)
    source.failing = True
    clock[0] = 30.0
    with pytest.raises(ConnectionError):
        await without_grace.get("k", source.fetch)


async def test_a_zero_ttl_fetches_every_time_and_drop_where_and_clear_forget(clock: list[float]) -> None:
    source = Source()
    uncached: RefreshingCache[str, int] = RefreshingCache(0, clock=lambda: clock[0])
    assert [await uncached.get("k", source.fetch) for _ in range(3)] == [1, 2, 3]
    cache = _cache(clock)
    for key in ("a", "b", "c"):
        await cache.get(key, source.fetch)
    cache.drop_where(lambda key, value: key == "a" or value == 6)
    assert len(cache) == 1 and cache.peek("b") == 5 and cache.peek("a") is None
    cache.clear()
    assert len(cache) == 0


async def test_the_least_recently_used_entry_leaves_first(clock: list[float]) -> None:
    cache: RefreshingCache[str, int] = RefreshingCache(10, capacity=2, clock=lambda: clock[0])
    source = Source()
    await cache.get("a", source.fetch)
    await cache.get("b", source.fetch)
    await cache.get("a", source.fetch)  # a is now the most recent
    await cache.get("c", source.fetch)
    assert cache.peek("b") is None and cache.peek("a") == 1 and cache.peek("c") == 3


def test_nonsense_settings_are_refused() -> None:
    for options in ({"refresh_ahead": 0}, {"refresh_ahead": 1.5}, {"capacity": 0}, {"stale_grace_seconds": -1}):
        with pytest.raises(ValueError):
            RefreshingCache(10, **options)  # type: ignore[arg-type]


def test_bounded_map_tells_of_what_the_capacity_pushes_out_and_nothing_else() -> None:
    evicted: list[tuple[str, int]] = []
    bounded: BoundedMap[str, int] = BoundedMap(2, on_evict=lambda key, value: evicted.append((key, value)))
    bounded.put("a", 1)
    bounded.put("b", 2)
    assert bounded.get("a") == 1  # now the most recently used
    bounded.put("c", 3)
    assert evicted == [("b", 2)]
    assert bounded.items() == [("a", 1), ("c", 3)]
    bounded.pop("a")
    bounded.drop_where(lambda key, value: True)
    assert evicted == [("b", 2)] and len(bounded) == 0
