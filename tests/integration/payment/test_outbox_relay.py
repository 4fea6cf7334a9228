"""The payment outbox relay on SQLite and PostgreSQL: two replicas, one relays (the lease),
the other takes over when the lease lapses and sends nothing twice; the tail wakes streams;
retention purges only relayed rows, and WatchPayments
from a purged cursor is CURSOR_EXPIRED."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable
from functools import partial

import pytest

from meshlib.errors import OutOfRange
from meshlib.fanout import Fanout
from meshlib.outbox import RelayLoop, Retention
from meshlib.storage import Database
from meshlib.storage.migrations import upgrade_to_head
from services.payment.bootstrap import VERSIONS_DIR
from services.payment.event_relay import OutboxRow, OutboxTail, SqlOutbox
from services.payment.queries import PaymentEvents
from services.payment.tables import payment_events
from services.payment.unit_of_work import PaymentUnitOfWork

NOW = dt.datetime.now(dt.UTC)
LEASE = dt.timedelta(seconds=10)


class Intake:
    """identity's intake: each source key once."""

    def __init__(self) -> None:
        self.log: list[int] = []

    async def append(self, rows: list[OutboxRow]) -> None:
        self.log.extend(r.seq for r in rows if r.seq not in self.log)


def _relay(outbox: SqlOutbox, intake: Intake, clock: Callable[[], dt.datetime]) -> RelayLoop[OutboxRow]:
    retention = Retention(dt.timedelta(days=30), outbox.purge)
    return RelayLoop("payment-events", outbox, intake, clock=clock, lease=LEASE, gap_seconds=0, retention=retention)


@pytest.fixture
async def outbox(database_url: str) -> AsyncIterator[SqlOutbox]:
    database = Database(database_url)
    await upgrade_to_head(database, VERSIONS_DIR, "payment")
    try:
        yield SqlOutbox(partial(PaymentUnitOfWork, database))
    finally:
        await database.dispose()


async def _write(outbox: SqlOutbox, count: int, *, when: dt.datetime = NOW, partner: str = "partner-1") -> None:
    async with outbox._uow() as uow:
        await uow.connection.execute(
            payment_events.insert(),
            [
                {
                    "payment_id": f"p{i}",
                    "partner_id": partner,
                    "previous_state": "",
                    "state": "RECEIVED",
                    "event_time": when,
                }
                for i in range(count)
            ],
        )
        await uow.commit()


async def test_one_replica_relays_and_another_takes_over_without_repeating(outbox: SqlOutbox) -> None:
    intake = Intake()
    clock = [NOW]
    first = _relay(outbox, intake, lambda: clock[0])
    second = _relay(outbox, intake, lambda: clock[0])
    await _write(outbox, 3)
    assert await first.relay_once() == 3
    await _write(outbox, 2)
    assert await second.relay_once() == 0  # the lease is the first's
    clock[0] += dt.timedelta(seconds=11)  # the first replica died: its lease lapses
    assert await second.relay_once() == 2
    assert intake.log == [1, 2, 3, 4, 5]
    assert await first.relay_once() == 0  # back, it cannot relay over the new holder


async def test_the_tail_wakes_streams_and_retention_keeps_unrelayed_rows(outbox: SqlOutbox) -> None:
    fanout = Fanout()
    relay, tail = _relay(outbox, Intake(), lambda: NOW), OutboxTail(outbox, fanout)
    await _write(outbox, 2, when=NOW - dt.timedelta(days=40))
    await tail.tail_once()
    subscription = fanout.subscribe("partner-2")
    await _write(outbox, 1, partner="partner-2")
    await tail.tail_once()
    await subscription.wait(2)  # woken: partner-2 has row 3
    assert await relay.relay_once() == 3
    await _write(outbox, 1, when=NOW - dt.timedelta(days=40))  # old but not relayed yet
    assert await relay.purge_once() == 2
    assert [r.seq for r in await outbox.rows_after(0, 10)] == [3, 4]
    # WatchPayments from a purged cursor: CURSOR_EXPIRED naming the oldest one kept.
    watch = PaymentEvents(outbox._uow).watch("partner-1", "1")
    with pytest.raises(OutOfRange) as expired:
        await anext(watch)
    assert expired.value.reason == "CURSOR_EXPIRED" and expired.value.metadata == {"oldest_cursor": "2"}
    assert (await anext(PaymentEvents(outbox._uow).watch("partner-2", "2"))).seq == 3
