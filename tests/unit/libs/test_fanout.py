"""meshlib.fanout: a stream waits until its key's log passes its position; a sign that came
before the wait is not lost; a resync makes every stream read once; the sweep asks the heads
of the open keys in one call."""

from __future__ import annotations

import asyncio

from meshlib.fanout import Fanout, PollingSignal


async def _returns(coroutine: object, within: float = 1.0) -> bool:
    try:
        await asyncio.wait_for(coroutine, within)  # type: ignore[arg-type]
    except TimeoutError:
        return False
    return True


async def test_a_stream_wakes_only_when_its_key_passes_its_position() -> None:
    fanout = Fanout()
    mine, other = fanout.subscribe("p1"), fanout.subscribe("p2")
    waiting = asyncio.ensure_future(mine.wait(5))
    fanout.announce("p1", 5)  # not past the position
    fanout.announce("p2", 9)  # another partner
    await asyncio.sleep(0)
    assert not waiting.done()
    fanout.announce("p1", 6)
    assert await _returns(waiting)
    assert not await _returns(other.wait(9), 0.05)
    mine.close()
    other.close()
    assert fanout.open_keys() == []


async def test_a_sign_before_the_wait_is_kept() -> None:
    fanout = Fanout()
    subscription = fanout.subscribe("p1")
    fanout.announce("p1", 3)  # while the stream was still reading
    assert await _returns(subscription.wait(2))
    assert not await _returns(subscription.wait(3), 0.05)


async def test_a_resync_makes_each_stream_read_once() -> None:
    fanout = Fanout()
    subscription = fanout.subscribe("p1")
    fanout.resync()
    assert await _returns(subscription.wait(10))
    assert not await _returns(subscription.wait(10), 0.05)  # once, not a busy loop


async def test_the_sweep_asks_every_open_key_in_one_call() -> None:
    asked: list[list[str]] = []

    async def heads(keys: list[str]) -> dict[str, int]:
        asked.append(sorted(keys))
        return {"p1": 4, "p2": 1}

    fanout = Fanout(sweep=heads)
    one, two, three = fanout.subscribe("p1"), fanout.subscribe("p1"), fanout.subscribe("p2")
    await fanout.sweep_once()
    assert asked == [["p1", "p2"]]
    assert await _returns(one.wait(3)) and await _returns(two.wait(3))
    assert not await _returns(three.wait(1), 0.05)


async def test_the_plain_signal_just_waits_its_interval() -> None:
    assert await _returns(PollingSignal(0.01).subscribe("p1").wait(0))
