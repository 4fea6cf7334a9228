"""The invalidation bus over a real Redis: two processes' buses see each other's events."""

from __future__ import annotations

import asyncio
import time

from meshlib.events import InProcessBus, Invalidation, RedisBus


async def test_an_event_published_on_one_bus_reaches_another_within_a_second(redis_url: str, key_prefix: str) -> None:
    channel = f"{key_prefix}invalidations"
    sender, receiver = RedisBus(redis_url, channel), RedisBus(redis_url, channel)
    received: asyncio.Queue[Invalidation] = asyncio.Queue()

    async def on_event(event: Invalidation) -> None:
        await received.put(event)

    receiver.subscribe(on_event)
    await receiver.start()
    await sender.start()
    try:
        started = time.monotonic()
        await sender.publish(Invalidation("consent", "c-1", "revoked"))
        event = await asyncio.wait_for(received.get(), 1.0)
        assert event == Invalidation("consent", "c-1", "revoked")
        assert time.monotonic() - started < 1.0
    finally:
        await sender.close()
        await receiver.close()


async def test_resync_is_requested_after_redis_comes_back(redis_srv, key_prefix: str) -> None:  # type: ignore[no-untyped-def]
    if redis_srv.process is None:
        return  # an external REDIS_URL cannot be restarted by the test
    bus = RedisBus(redis_srv.url, f"{key_prefix}inv")
    resynced = asyncio.Event()

    async def on_event(_: Invalidation) -> None:
        return None

    async def on_resync() -> None:
        resynced.set()

    bus.subscribe(on_event, on_resync)
    await bus.start()
    try:
        redis_srv.stop()
        await asyncio.sleep(0.3)
        redis_srv.start_again()
        await asyncio.wait_for(resynced.wait(), 10)
    finally:
        await bus.close()


async def test_in_process_bus_delivers_and_survives_a_failing_listener() -> None:
    bus = InProcessBus()
    seen: list[str] = []

    async def broken(_: Invalidation) -> None:
        raise RuntimeError("listener bug")

    async def good(event: Invalidation) -> None:
        seen.append(event.key)

    bus.subscribe(broken)
    bus.subscribe(good)
    await bus.publish(Invalidation("partner", "p-1"))
    assert seen == ["p-1"]
