"""The payment outbox (``payment_events``) after commit: its tail wakes this replica's open
WatchPayments streams, and its relay hands every event to the partner event log in identity.

* The **tail** runs on every replica: one query per interval asks which partners' outbox rows
  are new (whatever the number of open streams) and wakes their streams (meshlib.fanout).
* The **relay** runs on one replica at a time, the holder of a lease row
  (``outbox_relays``; meshlib.outbox, as account's movements): it appends the rows in order
  to identity (``EventIntakeService.AppendEvents``, each once by its source key
  ``payment:{seq}``).
* **Retention**: rows older than the retention period are deleted once relayed.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import sqlalchemy as sa

from meshlib.clients import PeerCaller
from meshlib.fanout import Fanout
from meshlib.outbox import BATCH, LeasedRelay, advance_lease, claim_lease, contiguous, run_ticks
from meshlib.periodic import Periodic
from meshlib.storage import as_utc
from openbank.events.v1 import events_pb2, events_pb2_grpc
from services.payment.journal_repository import PURGED_MARK
from services.payment.tables import outbox_relays, payment_events, payments
from services.payment.unit_of_work import PaymentUnitOfWork

log = logging.getLogger("payment.events")

RELAY_NAME = "partner-events"
RETENTION_INTERVAL_SECONDS = 3600.0
__all__ = ["BATCH", "IdentityEventSink", "OutboxRelay", "OutboxRow", "SqlOutbox", "contiguous"]


@dataclass(frozen=True)
class OutboxRow:
    """One state change as the relay hands it over."""

    seq: int
    payment_id: str
    partner_id: str
    consent_id: str
    previous_state: str
    state: str
    status_reason: str
    event_time: dt.datetime


class EventSink(Protocol):
    """Where relayed events go (identity's intake; a fake in unit tests)."""

    async def append(self, rows: list[OutboxRow]) -> None:
        """Append each row once, in order (a row sent again is ignored)."""


def _state(name: str) -> str:
    return f"PAYMENT_STATE_{name}" if name else ""


class IdentityEventSink:
    """identity's EventIntakeService over gRPC."""

    def __init__(self, channel: object, call: PeerCaller) -> None:
        self._stub = events_pb2_grpc.EventIntakeServiceStub(channel)
        self._call = call

    async def append(self, rows: list[OutboxRow]) -> None:
        """One AppendEvents for the rows."""
        events = []
        for row in rows:
            event = events_pb2.Event(
                type=events_pb2.EVENT_TYPE_PAYMENT_STATE_CHANGED,
                resource=f"payments/{row.payment_id}",
                consent=f"consents/{row.consent_id}" if row.consent_id else "",
                payment=events_pb2.PaymentStateChange(
                    previous_state=_state(row.previous_state),
                    state=_state(row.state),
                    status_reason=row.status_reason,
                ),
            )
            event.event_time.FromDatetime(row.event_time)
            events.append(
                events_pb2.IntakeEvent(
                    source_key=f"payment:{row.seq}", partner=f"partners/{row.partner_id}", event=event
                )
            )
        request = events_pb2.AppendEventsRequest(request_id=uuid.uuid4().hex, events=events)
        await self._call(self._stub.AppendEvents, request, "events.AppendEvents")


class SqlOutbox:
    """The outbox and the relay's lease row in payment's database."""

    def __init__(self, uow: Callable[..., PaymentUnitOfWork]) -> None:
        self._uow = uow

    async def last_seq(self) -> int:
        """The newest outbox number (0 when empty)."""
        async with self._uow(read_only=True) as uow:
            return int(await uow.connection.scalar(sa.select(sa.func.coalesce(sa.func.max(payment_events.c.seq), 0))))

    async def heads_after(self, seq: int) -> dict[str, int]:
        """Each partner with rows after ``seq`` and its newest number (one query)."""
        query = (
            sa.select(payment_events.c.partner_id, sa.func.max(payment_events.c.seq).label("head"))
            .where(payment_events.c.seq > seq)
            .group_by(payment_events.c.partner_id)
        )
        async with self._uow(read_only=True) as uow:
            return {r.partner_id: int(r.head) for r in await uow.connection.execute(query)}

    async def claim(self, owner: str, now: dt.datetime, lease: dt.timedelta) -> int | None:
        """Take or renew the relay's lease; its position when this replica holds it."""
        async with self._uow() as uow:
            position = await claim_lease(uow.connection, outbox_relays, RELAY_NAME, owner, now, lease)
            await uow.commit()
            return position

    async def rows_after(self, seq: int, limit: int) -> list[OutboxRow]:
        """Outbox rows after ``seq`` with their payment's consent, in order."""
        query = (
            sa.select(payment_events, payments.c.consent_id)
            .select_from(payment_events.outerjoin(payments, payments.c.payment_id == payment_events.c.payment_id))
            .where(payment_events.c.seq > seq)
            .order_by(payment_events.c.seq)
            .limit(limit)
        )
        async with self._uow(read_only=True) as uow:
            rows = await uow.connection.execute(query)
            return [
                OutboxRow(
                    int(r.seq),
                    r.payment_id,
                    r.partner_id,
                    r.consent_id or "",
                    r.previous_state,
                    r.state,
                    r.status_reason,
                    as_utc(r.event_time) or dt.datetime.now(dt.UTC),
                )
                for r in rows
            ]

    async def advance(self, owner: str, position: int) -> bool:
        """Record the relayed position, if this replica still holds the lease."""
        async with self._uow() as uow:
            moved = await advance_lease(uow.connection, outbox_relays, RELAY_NAME, owner, position)
            await uow.commit()
            return moved

    async def purge(self, recorded_before: dt.datetime) -> int:
        """Delete relayed rows older than the cutoff (never a row not yet relayed)."""
        async with self._uow() as uow:
            relayed = await uow.connection.scalar(
                sa.select(outbox_relays.c.position).where(outbox_relays.c.name == RELAY_NAME)
            )
            old = (payment_events.c.event_time < recorded_before, payment_events.c.seq <= int(relayed or 0))
            upto = await uow.connection.scalar(sa.select(sa.func.max(payment_events.c.seq)).where(*old))
            if upto is None:
                return 0
            # First the mark (a WatchPayments cursor before it is refused, never short), then the rows.
            marked = await uow.connection.execute(
                outbox_relays.update()
                .where(outbox_relays.c.name == PURGED_MARK, outbox_relays.c.position < upto)
                .values(position=upto)
            )
            if not marked.rowcount and await uow.events.purged_through() == 0:
                await uow.connection.execute(outbox_relays.insert().values(name=PURGED_MARK, position=upto))
            deleted = await uow.connection.execute(payment_events.delete().where(payment_events.c.seq <= upto))
            await uow.commit()
            return deleted.rowcount or 0


class OutboxRelay:
    """The tail (every replica) and the relay (the lease holder, meshlib.outbox), one tick at a time."""

    def __init__(
        self,
        outbox: SqlOutbox,
        sink: EventSink | None,
        fanout: Fanout | None,
        *,
        clock: Callable[[], dt.datetime],
        lease: dt.timedelta = dt.timedelta(seconds=10),
        gap_seconds: float = 3.0,
        retention: dt.timedelta = dt.timedelta(days=30),
        interval_seconds: float = 0.1,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._outbox = outbox
        self._sink = sink
        self.fanout = fanout  # what WatchPayments streams wait on (None: they poll)
        self._interval = interval_seconds
        self._task: asyncio.Task[None] | None = None
        self._retention_job = Periodic("payment-events-retention", RETENTION_INTERVAL_SECONDS, self._purge)
        self._clock = clock
        self._retention = retention
        self._seen: int | None = None  # the tail's newest outbox number
        self._relay = (
            None
            if sink is None
            else LeasedRelay(
                outbox,
                sink,
                clock=clock,
                lease=lease,
                gap_seconds=gap_seconds,
                interval_seconds=interval_seconds,
                monotonic=monotonic,
            )
        )

    async def tail_once(self) -> None:
        """Wake this replica's streams whose partner has new rows (one query; none while no
        stream is open here)."""
        if self.fanout is None:
            return
        if not self.fanout.open_keys():
            self._seen = None
            return
        if self._seen is None:
            # (Re)starting: every open stream reads once, so nothing committed before the
            # tail's first look is left unannounced.
            self._seen = await self._outbox.last_seq()
            self.fanout.resync()
            return
        heads = await self._outbox.heads_after(self._seen)
        for partner_id, head in heads.items():
            self.fanout.announce(partner_id, head)
            self._seen = max(self._seen, head)

    async def relay_once(self) -> int:
        """Relay what follows the recorded position when this replica holds the lease; how many."""
        return 0 if self._relay is None else await self._relay.relay_once()

    async def tick(self) -> None:
        """One round: tail, then relay until caught up (an idle relay looks less often)."""
        await self.tail_once()
        if self._relay is not None:
            await self._relay.relay_due()

    async def purge_once(self) -> int:
        """Retention: relayed rows older than the period go."""
        return await self._outbox.purge(self._clock() - self._retention)

    async def _purge(self) -> None:
        removed = await self.purge_once()
        if removed:
            log.info("purged relayed payment events", extra={"rows": removed})

    async def start(self) -> None:
        """Begin ticking, and the hourly retention."""
        if self._sink is not None or self.fanout is not None:
            self._task = asyncio.create_task(self.run_forever(self._interval), name="payment-events-relay")
        await self._retention_job.start()

    async def stop(self) -> None:
        """Stop both."""
        await self._retention_job.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def run_forever(self, interval_seconds: float) -> None:
        """Tick every interval; a failing round (identity away) backs off up to 5 s."""
        await run_ticks("payment events relay", self.tick, interval_seconds)
