"""Payment's outbox relay (meshlib.outbox.RelayLoop over payment's rows) with fakes: it passes
a gap only after the grace period, relays each row once in order across a relay that died
before recording its position, and only the lease holder relays; the tail wakes streams; a row
becomes a state change for the payment's partner."""

from __future__ import annotations

import datetime as dt

from meshlib.outbox import RelayLoop, contiguous
from services.payment.event_relay import OutboxRow, OutboxTail, intake_event

NOW = dt.datetime(2026, 12, 7, tzinfo=dt.UTC)


def _row(seq: int) -> OutboxRow:
    return OutboxRow(seq, f"p{seq}", "partner-1", "c1", "", "RECEIVED", "", NOW)


def test_a_gap_holds_the_rows_after_it_until_the_grace_passes() -> None:
    gaps: dict[int, float] = {}
    rows = [_row(1), _row(2), _row(4)]
    assert [r.seq for r in contiguous(0, rows, gaps, now=10.0, grace=3.0)] == [1, 2]
    assert [r.seq for r in contiguous(2, rows[2:], gaps, now=12.0, grace=3.0)] == []
    # The slow transaction committed meanwhile: 3 arrives, nothing is skipped.
    assert [r.seq for r in contiguous(2, [_row(3), _row(4)], gaps, now=12.5, grace=3.0)] == [3, 4]
    assert gaps == {}
    # A gap that never fills (a rollback) is passed once it lasted the grace.
    assert [r.seq for r in contiguous(4, [_row(6)], gaps, now=20.0, grace=3.0)] == []
    assert [r.seq for r in contiguous(4, [_row(6)], gaps, now=23.0, grace=3.0)] == [6]


class FakeOutbox:
    def __init__(self, rows: list[OutboxRow]) -> None:
        self.rows = rows
        self.position = 0
        self.owner: str | None = None
        self.fail_advance = False

    async def last_seq(self) -> int:
        return max((r.seq for r in self.rows), default=0)

    async def heads_after(self, seq: int) -> dict[str, int]:
        heads: dict[str, int] = {}
        for row in self.rows:
            if row.seq > seq:
                heads[row.partner_id] = max(heads.get(row.partner_id, 0), row.seq)
        return heads

    async def claim(self, owner: str, now: dt.datetime, lease: dt.timedelta) -> int | None:
        if self.owner not in (None, owner):
            return None
        self.owner = owner
        return self.position

    async def rows_after(self, seq: int, limit: int) -> list[OutboxRow]:
        return [r for r in self.rows if r.seq > seq][:limit]

    async def advance(self, owner: str, position: int) -> bool:
        if self.fail_advance:
            raise ConnectionError("the relay died before recording its position")
        if owner != self.owner:
            return False
        self.position = position
        return True


class FakeIntake:
    """identity's intake: appends each source key once."""

    def __init__(self) -> None:
        self.log: list[int] = []

    async def append(self, rows: list[OutboxRow]) -> None:
        self.log.extend(r.seq for r in rows if r.seq not in self.log)


def _relay(outbox: FakeOutbox, intake: FakeIntake) -> RelayLoop[OutboxRow]:
    return RelayLoop("payment-events", outbox, intake, clock=lambda: NOW, gap_seconds=0.0)


async def test_each_row_reaches_the_log_once_in_order_across_a_relay_that_died() -> None:
    outbox, intake = FakeOutbox([_row(n) for n in range(1, 4)]), FakeIntake()
    first = _relay(outbox, intake)
    outbox.fail_advance = True
    try:
        await first.tick()
    except ConnectionError:
        pass
    outbox.fail_advance = False
    outbox.owner = None  # its lease lapsed
    outbox.rows += [_row(4), _row(5)]
    second = _relay(outbox, intake)
    await second.tick()
    assert intake.log == [1, 2, 3, 4, 5] and outbox.position == 5
    # The first relay cannot take over a held lease.
    assert await first.relay_once() == 0


async def test_the_tail_wakes_the_streams_of_partners_with_new_rows() -> None:
    from meshlib.fanout import Fanout

    fanout = Fanout()
    outbox = FakeOutbox([_row(1)])
    relay = OutboxTail(outbox, fanout)  # type: ignore[arg-type]
    await relay.tail_once()  # starts at the newest row
    subscription = fanout.subscribe("partner-1")
    outbox.rows.append(_row(2))
    await relay.tail_once()
    await subscription.wait(1)  # returns: woken past 1


def test_a_row_becomes_a_state_change_for_the_payments_partner() -> None:
    message = intake_event(OutboxRow(7, "p7", "partner-1", "c1", "ACCEPTED", "REJECTED", "LIMIT", NOW))
    assert (message.source_key, message.partner, message.customer) == ("payment:7", "partners/partner-1", "")
    event = message.event
    assert (event.resource, event.consent) == ("payments/p7", "consents/c1")
    change = event.payment
    assert (change.previous_state, change.state, change.status_reason) == (
        "PAYMENT_STATE_ACCEPTED",
        "PAYMENT_STATE_REJECTED",
        "LIMIT",
    )
    assert event.event_time.ToDatetime(tzinfo=dt.UTC) == NOW
    first = intake_event(OutboxRow(1, "p1", "partner-1", "", "", "RECEIVED", "", NOW))
    assert (first.event.consent, first.event.payment.previous_state) == ("", "")
