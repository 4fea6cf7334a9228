"""The saga's journal tables: the recorded steps (the audit trail) and the event outbox."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from meshlib.storage import BulkInsert, as_utc
from services.payment.domain.payments import Payment, PaymentState
from services.payment.domain.saga import Outcome, PaymentEvent, RecordedStep, Step, StepRecord
from services.payment.repository import typed_param
from services.payment.tables import outbox_relays, payment_events, payment_steps

_INSERT_STEPS = BulkInsert(payment_steps, ("payment_id", "step", "outcome", "detail", "trace_id", "recorded_at"))
_INSERT_EVENTS = BulkInsert(
    payment_events, ("payment_id", "partner_id", "previous_state", "state", "status_reason", "event_time")
)
_STEPS_FOR_PAYMENT = (
    sa.select(payment_steps)
    .where(payment_steps.c.payment_id == typed_param("pid", payment_steps.c.payment_id))
    .order_by(payment_steps.c.step_id)
)
# The outbox_relays row that records how far retention purged the outbox.
PURGED_MARK = "purged"
_LAST_SEQ = sa.select(sa.func.coalesce(sa.func.max(payment_events.c.seq), 0))


def _step_row(step: RecordedStep) -> tuple[Any, ...]:
    record = step.record
    return (
        step.payment_id,
        record.step.value,
        record.outcome.value,
        record.detail[:256],
        step.trace_id,
        step.recorded_at,
    )


class StepRepository:
    """The saga's recorded steps (the audit trail)."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def add_many(self, steps: list[RecordedStep]) -> None:
        """Record several step outcomes (one executemany)."""
        await _INSERT_STEPS.execute(self._connection, [_step_row(step) for step in steps])

    async def for_payment(self, payment_id: str) -> list[RecordedStep]:
        """Every step of a payment, oldest first."""
        rows = await self._connection.execute(_STEPS_FOR_PAYMENT, {"pid": payment_id})
        return [
            RecordedStep(
                r.payment_id, StepRecord(Step(r.step), Outcome(r.outcome), r.detail), r.trace_id, as_utc(r.recorded_at)
            )
            for r in rows
        ]


def _event_row(
    payment: Payment, previous: PaymentState | None, state: PaymentState, reason: str, now: dt.datetime
) -> tuple[Any, ...]:
    return (payment.payment_id, payment.partner_id, previous.name if previous else "", state.name, reason, now)


class EventRepository:
    """The outbox of state changes that feeds WatchPayments."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def add(
        self, payment: Payment, previous: PaymentState | None, state: PaymentState, reason: str, now: dt.datetime
    ) -> None:
        """Record a state change (same transaction as the change)."""
        await self.add_many([(payment, previous, state, reason)], now)

    async def add_many(
        self, changes: list[tuple[Payment, PaymentState | None, PaymentState, str]], now: dt.datetime
    ) -> None:
        """Record several state changes (payment, previous, state, reason), in order (one executemany)."""
        await _INSERT_EVENTS.execute(
            self._connection,
            [_event_row(payment, previous, state, reason, now) for payment, previous, state, reason in changes],
        )

    async def after(self, partner_id: str, seq: int, limit: int) -> list[PaymentEvent]:
        """The partner's events after ``seq``, in cursor order."""
        rows = await self._connection.execute(
            sa.select(payment_events)
            .where(payment_events.c.partner_id == partner_id, payment_events.c.seq > seq)
            .order_by(payment_events.c.seq)
            .limit(limit)
        )
        return [
            PaymentEvent(
                r.seq,
                r.payment_id,
                r.partner_id,
                PaymentState[r.previous_state] if r.previous_state else None,
                PaymentState[r.state],
                r.status_reason,
                as_utc(r.event_time),
            )
            for r in rows
        ]

    async def last_seq(self) -> int:
        """The newest cursor (0 when there is no event yet)."""
        return int(await self._connection.scalar(_LAST_SEQ))

    async def purged_through(self) -> int:
        """Every event up to this cursor was purged (retention; 0: none)."""
        purged = await self._connection.scalar(
            sa.select(outbox_relays.c.position).where(outbox_relays.c.name == PURGED_MARK)
        )
        return int(purged or 0)
