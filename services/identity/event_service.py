"""The partner event log's use cases: stream, aggregated polling, the intake of other
services' outboxes, consents' expiry events, and retention.

A stream reads the database after its own position and, once it has read everything, waits on
the fan-out (meshlib.fanout) for a sign that its partner's log grew. The sign only says "look";
the read decides what is sent, so every event is sent once and in order on any replica.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from meshlib.errors import InvalidArgument
from meshlib.fanout import NewEventSignal, Subscription
from meshlib.storage import Codec, IdempotencyKey, Transactions
from services.identity.common import Clock, Saved, UnitOfWorkFactory
from services.identity.domain.events import (
    EventFilter,
    EventType,
    NewEvent,
    PartnerEvent,
    check_not_purged,
    check_page_size,
    expiry_event,
    movement_events,
    parse_cursor,
)
from services.identity.unit_of_work import IdentityUnitOfWork

log = logging.getLogger("identity.events")

# Consents expired longer ago than this are never told CONSENT_EXPIRED any more (a mesh
# started after a long stop does not flood partners with old news).
EXPIRED_LOOKBACK = dt.timedelta(days=1)
SWEEP_BATCH = 500


@dataclass(frozen=True)
class EventPage:
    """A poll's answer: the events, whether more wait, the acknowledged position."""

    events: list[PartnerEvent]
    more_available: bool
    acknowledged_seq: int


@dataclass(frozen=True)
class EventLogSettings:
    """Retention and the consents' expiry notice."""

    retention: dt.timedelta = dt.timedelta(days=30)
    expiry_notice: dt.timedelta = dt.timedelta(days=7)
    stream_batch: int = 200


class PartnerEventLog:
    """Read, append and keep the partners' event logs."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        clock: Clock,
        signal: NewEventSignal,
        settings: EventLogSettings | None = None,
    ) -> None:
        self._uow = uow
        self._tx = Transactions(uow, clock=clock)
        self._clock = clock
        self._signal = signal
        self._settings = settings or EventLogSettings()

    async def open_stream(self, partner_id: str, after_cursor: str, chosen: EventFilter) -> EventStream:
        """A stream of the partner's events after the cursor (empty: from now on), then live,
        each once; checked and subscribed before it is returned, so the caller may tell the
        partner that the stream is open."""
        requested = parse_cursor(after_cursor, "after_cursor") if after_cursor else None
        subscription = self._signal.subscribe(partner_id)  # before the first read: no sign missed
        try:
            async with self._uow(read_only=True) as uow:
                last, _, purged = await uow.partner_events.head(partner_id)
            position = last if requested is None else _resumable(requested, last, purged, "after_cursor")
        except BaseException:
            subscription.close()
            raise
        return EventStream(self._uow, partner_id, position, chosen, subscription, self._settings.stream_batch)

    async def poll(
        self,
        key: IdempotencyKey,
        codec: Codec[EventPage | Saved],
        partner_id: str,
        *,
        ack_cursor: str,
        after_cursor: str,
        max_events: int,
        chosen: EventFilter,
    ) -> EventPage | Saved:
        """Acknowledge up to ``ack_cursor``, then a page after the acknowledged position (or
        after ``after_cursor``); a retry of ``key`` answers the same page."""
        size = check_page_size(max_events)
        ack = parse_cursor(ack_cursor, "ack_cursor") if ack_cursor else None
        after = parse_cursor(after_cursor, "after_cursor") if after_cursor else None

        async def operation(uow: IdentityUnitOfWork) -> EventPage:
            last, acknowledged, purged = await uow.partner_events.head(partner_id)
            if ack is not None:
                if ack > last:
                    raise InvalidArgument.field("ack_cursor", "not a cursor of this partner's events")
                acknowledged = await uow.partner_events.acknowledge(partner_id, ack)
            start = acknowledged if after is None else _resumable(after, last, purged, "after_cursor")
            check_not_purged(start, purged)
            found = await uow.partner_events.after(partner_id, start, size + 1, chosen)
            return EventPage(found[:size], len(found) > size, acknowledged)

        return await self._tx.run(operation, key=key, codec=codec)

    async def append(self, events: list[NewEvent]) -> int:
        """Append other services' outbox events in order, each source_key once; how many were
        new. An account movement (``customer_id`` set) joins the log of each consent covering
        its account (:func:`movement_events`), as the consents stand now."""
        for event in events:
            if not event.source_key:
                raise InvalidArgument.field("events.source_key", "required")
        customers = {event.customer_id for event in events if event.customer_id}

        async def operation(uow: IdentityUnitOfWork) -> int:
            covering = await uow.partner_events.consents_covering(customers)
            expanded: list[NewEvent] = []
            for event in events:
                if event.customer_id:
                    expanded += movement_events(event, covering.get(event.customer_id, ()))
                else:
                    expanded.append(event)
            return await uow.partner_events.append(expanded)

        return await self._tx.run(operation)

    async def notify_expiries_once(self) -> int:
        """CONSENT_EXPIRING_SOON for authorised consents within the notice, CONSENT_EXPIRED for
        those past their expiry: each once per expire time; how many events."""
        now = self._clock()
        due = [
            (EventType.CONSENT_EXPIRED, now, now - EXPIRED_LOOKBACK),
            (EventType.CONSENT_EXPIRING_SOON, now + self._settings.expiry_notice, now),
        ]

        async def operation(uow: IdentityUnitOfWork) -> int:
            told = 0
            for kind, before, not_before in due:
                for consent_id, partner_id, expires_at in await uow.partner_events.consents_to_notify(
                    kind, before, not_before, SWEEP_BATCH
                ):
                    await uow.partner_events.mark_notified(consent_id, kind, expires_at)
                    uow.partner_events.record(expiry_event(kind, consent_id, partner_id, expires_at, now))
                    told += 1
            return told

        return await self._tx.run(operation)

    async def purge_once(self) -> int:
        """Delete the events older than the retention period; how many went."""
        cutoff = self._clock() - self._settings.retention

        async def operation(uow: IdentityUnitOfWork) -> int:
            return await uow.partner_events.purge(cutoff)

        return await self._tx.run(operation)

    async def housekeeping_once(self) -> None:
        """Expiry events, then retention (the periodic job of every replica: both are
        idempotent, so replicas racing each other is harmless)."""
        told = await self.notify_expiries_once()
        removed = await self.purge_once()
        if told or removed:
            log.info("partner events housekeeping", extra={"expiry_events": told, "purged": removed})


class EventStream:
    """An open stream: read after the position, send, wait for a sign, read again."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        partner_id: str,
        position: int,
        chosen: EventFilter,
        subscription: Subscription,
        batch: int,
    ) -> None:
        self._uow = uow
        self._partner_id = partner_id
        self._position = position
        self._chosen = chosen
        self._subscription = subscription
        self._batch = batch

    async def events(self) -> AsyncIterator[PartnerEvent]:
        """The events, for as long as the caller reads."""
        position = self._position
        try:
            while True:
                async with self._uow(read_only=True) as uow:
                    # The head first: every event up to it is committed, so the read below
                    # sees them all, and the stream has looked through the head (filtered or not).
                    last, _, _ = await uow.partner_events.head(self._partner_id)
                    events = await uow.partner_events.after(self._partner_id, position, self._batch, self._chosen)
                for event in events:
                    position = event.seq
                    yield event
                if len(events) == self._batch:
                    continue
                position = max(position, last)
                await self._subscription.wait(position)
        finally:
            self._subscription.close()


def _resumable(after: int, last: int, purged: int, field_name: str) -> int:
    """A cursor the partner may resume after: one of its own, not purged."""
    if after > last:
        raise InvalidArgument.field(field_name, "not a cursor of this partner's events")
    check_not_purged(after, purged)
    return after
