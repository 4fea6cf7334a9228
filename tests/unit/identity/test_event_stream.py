"""The event stream with fakes: read in batches after its position, each event once and in
order across batch boundaries and wake-ups; a filter does not make it read again and again."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from meshlib.fanout import Fanout
from services.identity.domain.events import EventFilter, EventType, PartnerEvent
from services.identity.event_service import EventLogSettings, PartnerEventLog

NOW = dt.datetime(2026, 12, 7, tzinfo=dt.UTC)


class FakeLog:
    def __init__(self) -> None:
        self.events: list[PartnerEvent] = []
        self.reads = 0

    def add(self, kind: EventType = EventType.CONSENT_PAUSED) -> None:
        seq = len(self.events) + 1
        self.events.append(PartnerEvent("p1", seq, f"e{seq}", kind, "consents/c1", "c1", NOW, {}))

    async def head(self, partner_id: str) -> tuple[int, int, int]:
        return len(self.events), 0, 0

    async def after(self, partner_id: str, after_seq: int, limit: int, chosen: EventFilter) -> list[PartnerEvent]:
        self.reads += 1
        await asyncio.sleep(0)  # a real read lets others run (a spinning stream shows in reads)
        return [e for e in self.events if e.seq > after_seq and chosen.matches(e)][:limit]


class FakeUow:
    def __init__(self, log: FakeLog) -> None:
        self.partner_events = log

    async def __aenter__(self) -> FakeUow:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        return None


async def _take(stream: Any, count: int) -> list[int]:
    taken = []
    async for event in stream:
        taken.append(event.seq)
        if len(taken) == count:
            return taken
    return taken


async def test_batches_and_wake_ups_give_each_event_once_in_order() -> None:
    log, fanout = FakeLog(), Fanout()
    for _ in range(5):
        log.add()
    events = PartnerEventLog(lambda **_: FakeUow(log), lambda: NOW, fanout, EventLogSettings(stream_batch=2))  # type: ignore[arg-type]
    stream = (await events.open_stream("p1", "0", EventFilter())).events()
    assert await asyncio.wait_for(_take(stream, 5), 1) == [1, 2, 3, 4, 5]
    log.add()
    log.add()
    fanout.announce("p1", 7)
    assert await asyncio.wait_for(_take(stream, 2), 1) == [6, 7]
    await stream.aclose()


async def test_a_filtered_stream_waits_instead_of_reading_again() -> None:
    log, fanout = FakeLog(), Fanout()
    for _ in range(3):
        log.add()
    events = PartnerEventLog(lambda **_: FakeUow(log), lambda: NOW, fanout)  # type: ignore[arg-type]
    chosen = EventFilter(types=frozenset({EventType.CONSENT_REVOKED}))
    stream = (await events.open_stream("p1", "0", chosen)).events()
    waiting = asyncio.ensure_future(_take(stream, 1))
    await asyncio.sleep(0.05)
    assert not waiting.done() and log.reads == 1  # looked through the head once, then waits
    log.add()  # not one it wants: one more read, then it waits again (no busy loop)
    fanout.announce("p1", 4)
    await asyncio.sleep(0.05)
    assert not waiting.done() and log.reads == 2
    log.add(EventType.CONSENT_REVOKED)
    fanout.announce("p1", 5)
    assert await asyncio.wait_for(waiting, 1) == [5]
    await stream.aclose()
