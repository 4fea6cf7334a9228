"""The shared outbox relay (meshlib.outbox: LeasedRelay inside RelayLoop) with fakes: rows reach
the sink in order; a row is sent at least once and the sink's source-key dedup makes it appear
once; only the lease holder relays and a new holder carries on from the recorded position;
retention purges with the period's cutoff, and a loop without retention purges nothing."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass

import pytest

from meshlib.outbox import LeasedRelay, RelayLoop, Retention

NOW = dt.datetime(2026, 12, 7, 22, 0, tzinfo=dt.UTC)
LEASE = dt.timedelta(seconds=10)


@dataclass(frozen=True)
class Row:
    seq: int


class Time:
    """One fake time for the wall clock and the monotonic clock."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def now(self) -> dt.datetime:
        return NOW + dt.timedelta(seconds=self.seconds)

    def monotonic(self) -> float:
        return self.seconds


class LeasedStore:
    """An outbox and its lease row, as claim_lease/advance_lease keep them."""

    def __init__(self, seqs: list[int]) -> None:
        self.rows = [Row(s) for s in seqs]
        self.position = 0
        self.owner: str | None = None
        self.lease_until: dt.datetime | None = None
        self.fail_advance = False

    async def claim(self, owner: str, now: dt.datetime, lease: dt.timedelta) -> int | None:
        if self.owner not in (None, owner) and self.lease_until is not None and self.lease_until >= now:
            return None
        self.owner, self.lease_until = owner, now + lease
        return self.position

    async def rows_after(self, seq: int, limit: int) -> list[Row]:
        return sorted((r for r in self.rows if r.seq > seq), key=lambda r: r.seq)[:limit]

    async def advance(self, owner: str, position: int) -> bool:
        if self.fail_advance:
            raise ConnectionError("the replica died before recording its position")
        if owner != self.owner:
            return False
        self.position = position
        return True


class Intake:
    """identity's intake: every append is recorded (sent); the log keeps each source key once."""

    def __init__(self) -> None:
        self.sent: list[int] = []
        self.log: list[int] = []
        self.away = False

    async def append(self, rows: list[Row]) -> None:
        if self.away:
            raise ConnectionError("identity away")
        self.sent += [r.seq for r in rows]
        self.log += [r.seq for r in rows if r.seq not in self.log]


def _loop(store: LeasedStore, intake: Intake, time: Time, **kwargs: object) -> RelayLoop[Row]:
    return RelayLoop("payment-events", store, intake, clock=time.now, monotonic=time.monotonic, lease=LEASE, **kwargs)  # type: ignore[arg-type]


async def test_rows_reach_the_sink_in_order_batch_after_batch_and_a_gap_waits_its_grace() -> None:
    time, intake = Time(), Intake()
    store = LeasedStore([5, 1, 2, 4])  # 3 still committing
    relay = LeasedRelay(store, intake, clock=time.now, monotonic=time.monotonic, lease=LEASE, gap_seconds=3, batch=2)
    await relay.relay_due()
    assert intake.sent == [1, 2] and store.position == 2  # the gap holds 4 and 5 back
    store.rows.append(Row(3))  # committed within the grace
    time.seconds += 1.5
    await relay.relay_due()
    assert intake.sent == [1, 2, 3, 4, 5] and store.position == 5  # batch after batch while full
    store.rows.append(Row(7))  # 6 rolled back: passed once the grace is over, never before
    time.seconds += 1.5
    await relay.relay_due()
    time.seconds += 2.0
    await relay.relay_due()
    assert intake.sent == [1, 2, 3, 4, 5]
    time.seconds += 1.5
    await relay.relay_due()
    assert intake.sent == [1, 2, 3, 4, 5, 7] and store.position == 7


async def test_a_row_the_sink_did_not_take_is_sent_again_and_the_source_key_keeps_it_once() -> None:
    time, intake = Time(), Intake()
    store = LeasedStore([1, 2, 3])
    first = _loop(store, intake, time, gap_seconds=0)
    intake.away = True
    with pytest.raises(ConnectionError):
        await first.tick()
    assert store.position == 0  # never past a row the sink did not take
    intake.away = False
    store.fail_advance = True  # sent, then the replica dies before recording its position
    with pytest.raises(ConnectionError):
        await first.tick()
    store.fail_advance = False
    time.seconds += LEASE.total_seconds() + 1  # its lease lapses
    store.rows += [Row(4)]
    second = _loop(store, intake, time, gap_seconds=0)
    assert await second.relay_once() == 4
    assert intake.sent == [1, 2, 3, 1, 2, 3, 4]  # at least once ...
    assert intake.log == [1, 2, 3, 4] and store.position == 4  # ... and once in the log, in order


async def test_only_the_lease_holder_relays_and_the_next_holder_carries_on_from_its_position() -> None:
    time, intake = Time(), Intake()
    store = LeasedStore([1, 2])
    first, second = _loop(store, intake, time, gap_seconds=0), _loop(store, intake, time, gap_seconds=0)
    assert await first.relay_once() == 2
    store.rows.append(Row(3))
    assert await second.relay_once() == 0  # held by the first
    time.seconds += 6  # past half the lease: the first renews it as it relays
    assert await first.relay_once() == 1
    time.seconds += 6
    assert await second.relay_once() == 0  # renewed: still the first's
    store.rows.append(Row(4))
    time.seconds += LEASE.total_seconds() + 1  # the first replica died: its lease lapses
    assert await second.relay_once() == 1
    assert intake.sent == [1, 2, 3, 4]  # nothing again: the second started from the recorded position
    store.rows.append(Row(5))
    assert await first.relay_once() == 0  # back, it cannot relay over the new holder
    assert store.position == 4 and intake.log == [1, 2, 3, 4]


async def test_retention_purges_with_the_periods_cutoff_and_a_loop_without_it_purges_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    time, cutoffs = Time(), []

    async def purge(recorded_before: dt.datetime) -> int:
        cutoffs.append(recorded_before)
        return 2

    caplog.set_level(logging.INFO, logger="meshlib.outbox")
    retained = _loop(LeasedStore([]), Intake(), time, retention=Retention(dt.timedelta(days=30), purge))
    await retained.start()  # the retention job runs at once, then hourly
    await asyncio.sleep(0.05)
    await retained.stop()
    assert cutoffs == [NOW - dt.timedelta(days=30)]
    assert [r.getMessage() for r in caplog.records] == ["purged relayed payment events"]
    kept = _loop(LeasedStore([]), Intake(), time)
    await kept.start()
    await asyncio.sleep(0.05)
    await kept.stop()
    assert await kept.purge_once() == 0 and cutoffs == [NOW - dt.timedelta(days=30)]


async def test_a_loop_without_a_sink_relays_nothing_but_still_runs_its_other_tick() -> None:
    time, ticks = Time(), []

    async def tail() -> None:
        ticks.append(1)

    store = LeasedStore([1])
    loop = RelayLoop("payment-events", store, None, clock=time.now, interval_seconds=0.01, each_tick=tail)
    await loop.start()
    await asyncio.sleep(0.1)
    await loop.stop()
    assert ticks and store.position == 0 and store.owner is None
