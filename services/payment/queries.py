"""Reads of payments: one payment, a consent's payments, stuck ones, the audit trail, and the
event stream (WatchPayments)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import Counter
from collections.abc import AsyncIterator, Callable

from meshlib.auth.consent import ConsentLookup
from meshlib.errors import InvalidArgument, NotFound, OutOfRange, ResourceExhausted
from meshlib.fanout import NewEventSignal, PollingSignal
from meshlib.pagination import decode_page_token, encode_page_token, filter_fingerprint, page_size, time_and_id
from services.payment.domain import checks
from services.payment.domain.payments import Payment, PaymentState
from services.payment.domain.saga import PaymentEvent, RecordedStep
from services.payment.ports import Clock, utc_now
from services.payment.unit_of_work import PaymentUnitOfWork

UnitOfWorkFactory = Callable[..., PaymentUnitOfWork]


async def require_usable_consent(consents: ConsentLookup, partner_id: str, consent_id: str, now: dt.datetime) -> None:
    """The caller's consent, live: authorised, unexpired, unpaused, granting INITIATE_PAYMENTS."""
    consent = await consents.get(consent_id, partner_id=partner_id)
    consent.require_usable(checks.PAYMENT_PERMISSION, now)


class PaymentQueries:
    """Read side of payments."""

    def __init__(self, uow: UnitOfWorkFactory, consents: ConsentLookup, clock: Clock = utc_now):
        self._uow = uow
        self._consents = consents
        self._clock = clock

    async def get_for_consent(self, payment_id: str, partner_id: str, consent_id: str) -> Payment:
        """A payment of the caller's consent; any other is NOT_FOUND, exactly like a missing one."""
        await require_usable_consent(self._consents, partner_id, consent_id, self._clock())
        async with self._uow(read_only=True) as uow:
            payment = await uow.payments.get(payment_id)
            if payment is None or payment.partner_id != partner_id or payment.consent_id != consent_id:
                raise NotFound("payment not found")
            (shown,) = await _with_refunds(uow, [payment])
        return shown

    async def get(self, payment_id: str) -> Payment:
        """Any payment (operators)."""
        async with self._uow(read_only=True) as uow:
            payment = await uow.payments.get(payment_id)
            if payment is None:
                raise NotFound("payment not found")
            (shown,) = await _with_refunds(uow, [payment])
        return shown

    async def list_for_consent(
        self,
        partner_id: str,
        consent_id: str,
        *,
        state: PaymentState | None,
        from_time: dt.datetime | None,
        to_time: dt.datetime | None,
        requested_page_size: int,
        page_token: str,
    ) -> tuple[list[Payment], str]:
        """The consent's payments, newest first, with the next page token."""
        await require_usable_consent(self._consents, partner_id, consent_id, self._clock())
        size = page_size(requested_page_size)
        filters = filter_fingerprint(
            partner=partner_id,
            consent=consent_id,
            state=state.name if state else "",
            start=from_time.isoformat() if from_time else "",
            end=to_time.isoformat() if to_time else "",
        )
        before = time_and_id(decode_page_token(page_token, filters))
        async with self._uow(read_only=True) as uow:
            found = await uow.search.list_for_consent(
                partner_id, consent_id, state=state, from_time=from_time, to_time=to_time, before=before, limit=size + 1
            )
            found = await _with_refunds(uow, found)
        page, more = found[:size], len(found) > size
        token = (
            encode_page_token({"t": page[-1].created_at.isoformat(), "id": page[-1].payment_id}, filters)
            if more
            else ""
        )
        return page, token

    async def search(
        self,
        *,
        payment_id: str | None,
        end_to_end_id: str | None,
        partner_id: str | None,
        state: PaymentState | None,
        requested_page_size: int,
        page_token: str,
    ) -> tuple[list[Payment], str]:
        """Operators' search (any partner), newest first, with the next page token."""
        size = page_size(requested_page_size)
        filters = filter_fingerprint(
            payment=payment_id or "",
            end_to_end_id=end_to_end_id or "",
            partner=partner_id or "",
            state=state.name if state else "",
        )
        before = time_and_id(decode_page_token(page_token, filters))
        async with self._uow(read_only=True) as uow:
            found = await uow.search.search(
                payment_id=payment_id,
                end_to_end_id=end_to_end_id,
                partner_id=partner_id,
                state=state,
                before=before,
                limit=size + 1,
            )
            found = await _with_refunds(uow, found)
        page, more = found[:size], len(found) > size
        token = (
            encode_page_token({"t": page[-1].created_at.isoformat(), "id": page[-1].payment_id}, filters)
            if more
            else ""
        )
        return page, token

    async def stuck(
        self, older_than: dt.timedelta, requested_page_size: int, page_token: str
    ) -> tuple[list[Payment], str]:
        """Payments stuck mid-saga, oldest id first, with the next page token."""
        size = page_size(requested_page_size)
        filters = filter_fingerprint(older_than=older_than.total_seconds())
        cursor = decode_page_token(page_token, filters) or {}
        async with self._uow(read_only=True) as uow:
            found = await uow.payments.stuck(self._clock() - older_than, cursor.get("after"), size + 1)
        page, more = found[:size], len(found) > size
        return page, encode_page_token({"after": page[-1].payment_id}, filters) if more else ""

    async def audit_trail(self, payment_id: str) -> list[RecordedStep]:
        """Every recorded step of a payment, oldest first."""
        async with self._uow(read_only=True) as uow:
            if await uow.payments.get(payment_id) is None:
                raise NotFound("payment not found")
            return await uow.steps.for_payment(payment_id)


async def _with_refunds(uow: PaymentUnitOfWork, found: list[Payment]) -> list[Payment]:
    """The payments with their refunds (one query for them all)."""
    links = await uow.refunds.of([payment.payment_id for payment in found if not payment.is_refund])
    return [dataclasses.replace(p, refunds=links[p.payment_id]) if p.payment_id in links else p for p in found]


def parse_cursor(cursor: str) -> int:
    """A stream cursor is the outbox sequence number, as decimal text."""
    if not cursor.isdigit() or len(cursor) > 18:
        raise InvalidArgument.field("after_cursor", "malformed cursor: resume with a cursor from an event")
    return int(cursor)


class PaymentEvents:
    """WatchPayments: replay the partner's outbox after a cursor, then wait for new rows.

    The wait is the ``signal`` port (meshlib.fanout): the outbox tail (services/payment/
    event_relay.py, one query per replica per interval) wakes the streams whose partner has
    new rows, or, plain, every stream polls the table. Either way the stream reads the table
    after its own cursor, so two replicas sharing one database serve the same events.
    """

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        *,
        poll_seconds: float = 0.1,
        max_streams_per_partner: int = 5,
        batch: int = 200,
        signal: NewEventSignal | None = None,
    ) -> None:
        self._uow = uow
        self._signal: NewEventSignal = signal or PollingSignal(poll_seconds)
        self._max_streams = max_streams_per_partner
        self._batch = batch
        self._open: Counter[str] = Counter()

    async def watch(self, partner_id: str, after_cursor: str) -> AsyncIterator[PaymentEvent]:
        """The partner's events after ``after_cursor`` (empty: from now on), for as long as the caller reads."""
        if self._open[partner_id] >= self._max_streams:
            raise ResourceExhausted("too many open streams", reason="TOO_MANY_STREAMS")
        subscription = self._signal.subscribe(partner_id)  # before the first read: no sign missed
        self._open[partner_id] += 1
        try:
            if after_cursor:
                position = parse_cursor(after_cursor)
                async with self._uow(read_only=True) as uow:
                    purged = await uow.events.purged_through()
                if position < purged:
                    raise OutOfRange(
                        "events after this cursor are no longer kept: read the payments again, then watch from now",
                        reason="CURSOR_EXPIRED",
                        metadata={"oldest_cursor": str(purged)},
                    )
            else:
                async with self._uow(read_only=True) as uow:
                    position = await uow.events.last_seq()
            while True:
                async with self._uow(read_only=True) as uow:
                    events = await uow.events.after(partner_id, position, self._batch)
                for event in events:
                    position = event.seq
                    yield event
                if len(events) < self._batch:
                    await subscription.wait(position)
        finally:
            subscription.close()
            self._open[partner_id] -= 1
