"""The payment outbox (``payment_events``) after commit: its tail wakes this replica's open
WatchPayments streams, and its relay (meshlib.outbox.RelayLoop, as account's outboxes) hands
every event to the partner event log in identity.

* The **tail** runs on every replica, each tick of the relay loop: one query per interval asks
  which partners' outbox rows are new (whatever the number of open streams) and wakes their
  streams (meshlib.fanout).
* The **relay** runs on one replica at a time, the holder of the ``partner-events`` row of
  ``outbox_relays``: it appends the rows in order to identity (meshlib.event_intake), each once
  by its source key ``payment:{seq}``.
* **Retention**: rows older than the retention period are deleted once relayed, after the
  ``purged`` mark records how far (WatchPayments refuses an older cursor, never answers short).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from meshlib.fanout import Fanout
from meshlib.outbox import SqlOutboxStore
from openbank.events.v1 import events_pb2
from services.payment.journal_repository import PURGED_MARK
from services.payment.tables import outbox_relays, payment_events, payments
from services.payment.unit_of_work import PaymentUnitOfWork

RELAY_NAME = "partner-events"


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


def _state(name: str) -> str:
    return f"PAYMENT_STATE_{name}" if name else ""


def intake_event(row: OutboxRow) -> events_pb2.IntakeEvent:
    """The row as identity's intake takes it: a state change for the payment's partner."""
    event = events_pb2.Event(
        type=events_pb2.EVENT_TYPE_PAYMENT_STATE_CHANGED,
        resource=f"payments/{row.payment_id}",
        consent=f"consents/{row.consent_id}" if row.consent_id else "",
        payment=events_pb2.PaymentStateChange(
            previous_state=_state(row.previous_state), state=_state(row.state), status_reason=row.status_reason
        ),
    )
    event.event_time.FromDatetime(row.event_time)
    return events_pb2.IntakeEvent(source_key=f"payment:{row.seq}", partner=f"partners/{row.partner_id}", event=event)


async def _mark_purged(connection: AsyncConnection, upto: int) -> None:
    """Record that every event up to ``upto`` is gone (the mark only moves forwards)."""
    marked = await connection.execute(
        outbox_relays.update()
        .where(outbox_relays.c.name == PURGED_MARK, outbox_relays.c.position < upto)
        .values(position=upto)
    )
    if marked.rowcount:
        return
    if await connection.scalar(sa.select(outbox_relays.c.name).where(outbox_relays.c.name == PURGED_MARK)) is None:
        await connection.execute(outbox_relays.insert().values(name=PURGED_MARK, position=upto))


class SqlOutbox(SqlOutboxStore[OutboxRow]):
    """The outbox (each row with its payment's consent) and the relay's lease row in payment's
    database; what the tail asks of it."""

    def __init__(self, uow: Callable[..., PaymentUnitOfWork]) -> None:
        consent_id = sa.func.coalesce(payments.c.consent_id, "").label("consent_id")
        query = sa.select(payment_events, consent_id).select_from(
            payment_events.outerjoin(payments, payments.c.payment_id == payment_events.c.payment_id)
        )
        super().__init__(
            uow, payment_events, outbox_relays, RELAY_NAME, OutboxRow, query=query, mark_purged=_mark_purged
        )

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


class OutboxTail:
    """Wakes this replica's WatchPayments streams whose partner has new outbox rows."""

    def __init__(self, outbox: SqlOutbox, fanout: Fanout) -> None:
        self._outbox = outbox
        self.fanout = fanout  # what WatchPayments streams wait on
        self._seen: int | None = None  # the newest outbox number looked at

    async def tail_once(self) -> None:
        """One query, none while no stream is open here."""
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
