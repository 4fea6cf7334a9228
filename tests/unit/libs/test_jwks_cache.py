"""The verifier's JWKS cache: a made-up kid cannot keep a genuine new key out, a stale copy
is refreshed behind the calls, and fetches stay bounded however many unknown kids arrive."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from meshlib.auth.testing import TestIssuer
from meshlib.auth.verifier import UNKNOWN_KID_FETCH_ATTEMPTS, UNKNOWN_KID_REFETCH_SECONDS, JwksCache
from meshlib.errors import Unavailable


class KeySource:
    """What identity publishes, changeable by the test; counts fetches and can be slow."""

    def __init__(self, *issuers: TestIssuer) -> None:
        self.keys: list[dict[str, Any]] = [k for issuer in issuers for k in issuer.jwks["keys"]]
        self.fetches = 0
        self.delay = 0.0

    def publish(self, issuer: TestIssuer) -> None:
        self.keys = issuer.jwks["keys"] + self.keys

    async def __call__(self) -> dict[str, Any]:
        self.fetches += 1
        await asyncio.sleep(self.delay)
        return {"keys": list(self.keys)}


async def test_a_made_up_kid_just_before_a_rotation_does_not_lock_out_the_new_key() -> None:
    old, new = TestIssuer(), TestIssuer()
    source = KeySource(old)
    cache = JwksCache(source)  # the real refetch interval
    assert await cache.key(old.kid) is not None
    # An attacker's token with a made-up kid uses up this interval's refetch...
    assert await cache.key("made-up-by-an-attacker") is None
    # ...and the new key is published (and signs) right after it.
    source.publish(new)
    started = time.monotonic()
    assert await cache.key(new.kid) is not None  # waits for the next fetch, is not refused
    assert time.monotonic() - started <= UNKNOWN_KID_REFETCH_SECONDS + 0.5


async def test_many_made_up_kids_cost_one_fetch_per_interval() -> None:
    issuer = TestIssuer()
    source = KeySource(issuer)
    cache = JwksCache(source, refresh_interval_seconds=0.2)
    await cache.key(issuer.kid)
    started = time.monotonic()
    answers = await asyncio.gather(*(cache.key(f"bogus-{n}") for n in range(200)))
    burst = time.monotonic() - started
    assert answers == [None] * 200
    # One fetch for the whole burst; a second only if the burst itself outlasted an interval
    # (a loaded machine), never one per made-up kid.
    assert 2 <= source.fetches <= 2 + int(burst / 0.2)
    before = source.fetches
    for n in range(3):  # one after another: each waits for the next slot
        assert await cache.key(f"again-{n}") is None
    assert source.fetches == before + 3
    # Every fetch after the first came at least an interval after the one before it.
    assert time.monotonic() - started >= (source.fetches - 1) * 0.2 - 0.05


async def test_a_stale_copy_is_refreshed_behind_the_calls() -> None:
    old, new = TestIssuer(), TestIssuer()
    source = KeySource(old)
    cache = JwksCache(source, max_age_seconds=0.2)
    await cache.key(old.kid)
    source.publish(new)  # pre-published: no token of it has been seen yet
    source.delay = 0.3
    await asyncio.sleep(0.25)
    started = time.monotonic()
    assert await cache.key(old.kid) is not None  # served from the copy while the refresh runs
    assert time.monotonic() - started < 0.1
    await asyncio.sleep(0.01)
    assert source.fetches == 2
    await asyncio.sleep(0.4)
    fetches = source.fetches
    assert await cache.key(new.kid) is not None  # known before its first token: no fetch needed
    assert source.fetches == fetches


async def test_a_failed_fetch_keeps_the_cached_keys() -> None:
    issuer = TestIssuer()
    source = KeySource(issuer)
    cache = JwksCache(source, refresh_interval_seconds=0.05)
    await cache.key(issuer.kid)

    async def unreachable() -> dict[str, Any]:
        raise ConnectionError("identity is down")

    cache._fetch = unreachable  # type: ignore[method-assign]
    with pytest.raises(Unavailable):  # the keys could not be read: a fault, not a refused key
        await cache.key("unknown")
    assert await cache.key(issuer.kid) is not None


class FlakySource(KeySource):
    """Fails its first ``failures`` fetches, as identity unreachable for a moment."""

    def __init__(self, issuer: TestIssuer, failures: int) -> None:
        super().__init__(issuer)
        self.failures = failures

    async def __call__(self) -> dict[str, Any]:
        if self.failures > 0:
            self.failures -= 1
            self.fetches += 1
            raise ConnectionError("identity is not answering")
        return await super().__call__()


async def test_a_fetch_that_failed_is_tried_again_not_taken_for_an_unknown_key() -> None:
    issuer = TestIssuer()
    cache = JwksCache(FlakySource(issuer, failures=2), refresh_interval_seconds=0.05)
    assert await cache.key(issuer.kid) is not None  # the third fetch reads it


async def test_keys_that_cannot_be_read_answer_unavailable() -> None:
    issuer = TestIssuer()
    source = FlakySource(issuer, failures=100)
    cache = JwksCache(source, refresh_interval_seconds=0.05)
    with pytest.raises(Unavailable) as refused:
        await cache.key(issuer.kid)
    assert refused.value.reason == "PEER_UNAVAILABLE"
    assert source.fetches == UNKNOWN_KID_FETCH_ATTEMPTS


async def test_the_start_up_fetch_loads_the_keys_before_the_first_call_and_outlasts_a_late_identity() -> None:
    issuer = TestIssuer()
    source = KeySource(issuer)
    failures = 3

    async def identity_starting_late() -> dict[str, Any]:
        nonlocal failures
        if failures:
            failures -= 1
            raise ConnectionError("identity is not up yet")
        return await source()

    cache = JwksCache(identity_starting_late)
    cache.warm_up(pause_seconds=0.01)
    for _ in range(200):
        if source.fetches:
            break
        await asyncio.sleep(0.01)
    assert source.fetches == 1 and failures == 0
    # The first call finds the key without a fetch of its own, and the refetch budget is intact.
    assert await cache.key(issuer.kid) is not None and source.fetches == 1 and cache.fetches == 0
    cache.warm_up()  # loaded: nothing more to do
    await asyncio.sleep(0.02)
    assert source.fetches == 1
