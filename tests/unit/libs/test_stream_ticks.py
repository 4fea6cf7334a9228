"""Open streams re-check their rights in one tick per process (meshlib.auth.revocation):
N streams over K tokens cost one batched status check of K tokens per tick; a token found
inactive ends exactly its streams, with the reason a new call would get; while the bus is up
the tick runs at the long interval, at the short one while it is down; a resync checks every
open token at once, in one batch."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator, Callable, Sequence

import pytest

from meshlib.auth.context import Caller
from meshlib.auth.revocation import RevocationCache, TokenStatus
from meshlib.auth.streams import guard_stream
from meshlib.errors import MeshError, Unavailable

TICK = 0.1


def _caller(token: int, stream: int) -> Caller:
    return Caller(
        subject=f"p{token}",
        client_id="client",
        scopes=frozenset({"events:read"}),
        token_id=f"t{token}",
        expires_at=dt.datetime.fromtimestamp(time.time() + 600, dt.UTC),
        partner_id="p1",
        consent_id=f"c{token}",
        raw_token=f"raw-{token}-{stream}",  # the same token as presented by each stream
    )


class Identity:
    """Token statuses by token id; counts single and batched checks."""

    def __init__(self) -> None:
        self.statuses: dict[str, TokenStatus] = {}
        self.single = 0
        self.batches: list[list[str]] = []
        self.down = False

    async def introspect(self, caller: Caller) -> TokenStatus:
        self.single += 1
        if self.down:
            raise ConnectionError("identity unreachable")
        return self.statuses.get(caller.token_id, TokenStatus(active=True))

    async def introspect_many(self, callers: Sequence[Caller]) -> list[TokenStatus]:
        self.batches.append([caller.token_id for caller in callers])
        if self.down:
            raise ConnectionError("identity unreachable")
        return [self.statuses.get(caller.token_id, TokenStatus(active=True)) for caller in callers]


async def _idle() -> AsyncIterator[int]:
    await asyncio.Event().wait()
    yield 0  # pragma: no cover


class Streams:
    """``per_token`` open, idle streams on each of ``tokens`` tokens; how each ended."""

    def __init__(self, cache: RevocationCache, tokens: int, per_token: int) -> None:
        self.ended: dict[tuple[int, int], MeshError] = {}
        self.tasks = [
            asyncio.ensure_future(self._run(cache, token, stream))
            for token in range(tokens)
            for stream in range(per_token)
        ]

    async def _run(self, cache: RevocationCache, token: int, stream: int) -> None:
        try:
            async for _ in guard_stream(_idle(), _caller(token, stream), cache):
                pass
        except MeshError as refused:
            self.ended[(token, stream)] = refused

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def _until(done: Callable[[], bool], timeout: float) -> None:
    for _ in range(int(timeout / 0.01)):
        if done():
            return
        await asyncio.sleep(0.01)


def _cache(identity: Identity, **options: object) -> RevocationCache:
    return RevocationCache(
        identity.introspect,
        ttl_seconds=60,
        stream_recheck_seconds=TICK,
        introspect_many=identity.introspect_many,
        **options,  # type: ignore[arg-type]
    )


async def test_n_streams_over_k_tokens_cost_one_batch_of_k_tokens_per_tick() -> None:
    identity = Identity()
    streams = Streams(_cache(identity), tokens=3, per_token=4)
    try:
        await asyncio.sleep(TICK / 2)
        opened = identity.single
        assert opened == 3  # one look per token when the streams opened, shared by its streams
        await asyncio.sleep(5.5 * TICK)
        assert 4 <= len(identity.batches) <= 7
        assert all(sorted(batch) == ["t0", "t1", "t2"] for batch in identity.batches)
        assert identity.single == opened and not streams.ended
    finally:
        await streams.close()


async def test_a_token_inactive_in_the_batch_ends_exactly_its_streams() -> None:
    identity = Identity()
    streams = Streams(_cache(identity), tokens=3, per_token=4)
    try:
        await asyncio.sleep(1.5 * TICK)
        identity.statuses["t1"] = TokenStatus(active=False, consent_state="REVOKED")
        changed = time.monotonic()
        await _until(lambda: len(streams.ended) == 4, 2)
        assert time.monotonic() - changed < 3 * TICK
        assert sorted(streams.ended) == [(1, stream) for stream in range(4)]
        assert {refused.reason for refused in streams.ended.values()} == {"CONSENT_REVOKED"}
        await asyncio.sleep(3 * TICK)  # the others stay open; their token alone is asked after
        assert len(streams.ended) == 4 and sorted(identity.batches[-1]) == ["t0", "t2"]
    finally:
        await streams.close()


async def test_while_the_bus_is_up_the_tick_runs_at_the_long_interval() -> None:
    identity, bus = Identity(), {"up": True}
    cache = _cache(identity, stream_recheck_bus_up_seconds=60, bus_up=lambda: bus["up"])
    streams = Streams(cache, tokens=2, per_token=2)
    try:
        await asyncio.sleep(5 * TICK)
        assert identity.batches == []
        bus["up"] = False  # down: back to the short interval
        await asyncio.sleep(2.5 * TICK)
        assert len(identity.batches) >= 1
        bus["up"] = True
        await cache.on_resync()  # a resync: every open token at once, in one batch
        await asyncio.sleep(TICK / 2)
        batches = len(identity.batches)
        assert sorted(identity.batches[-1]) == ["t0", "t1"]
        await asyncio.sleep(3 * TICK)
        assert len(identity.batches) == batches and not streams.ended
    finally:
        await streams.close()


async def test_identity_unreachable_ends_streams_only_once_their_last_status_is_too_old() -> None:
    identity = Identity()
    cache = RevocationCache(
        identity.introspect,
        ttl_seconds=TICK,
        stale_grace_seconds=4 * TICK,
        stream_recheck_seconds=TICK,
        introspect_many=identity.introspect_many,
    )
    streams = Streams(cache, tokens=2, per_token=2)
    try:
        await asyncio.sleep(1.5 * TICK)
        identity.down = True
        down = time.monotonic()
        await asyncio.sleep(3 * TICK)
        assert not streams.ended  # the last status still serves, as it would for a call
        await _until(lambda: len(streams.ended) == 4, 3)
        assert all(isinstance(refused, Unavailable) for refused in streams.ended.values())
        assert len(streams.ended) == 4 and time.monotonic() - down < 12 * TICK
    finally:
        await streams.close()


@pytest.mark.parametrize("tokens", [1, 5])
async def test_the_tick_stops_when_the_last_stream_ends(tokens: int) -> None:
    identity = Identity()
    cache = _cache(identity)
    streams = Streams(cache, tokens=tokens, per_token=3)
    await asyncio.sleep(1.5 * TICK)
    await streams.close()
    await asyncio.sleep(1.5 * TICK)
    batches = len(identity.batches)
    await asyncio.sleep(3 * TICK)
    assert len(identity.batches) == batches
