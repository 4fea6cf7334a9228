"""Group commit: the journal writes, and the recordings of new payments, of the payments in
flight share one transaction. The same ports as the plain SQL adapters, and the same results:
each payment's write is exactly its write alone (if the shared transaction fails, each is
tried alone, retried on a conflict, so one bad write fails only its own payment)."""

from __future__ import annotations

import datetime as dt

from meshlib.audit import Actor
from meshlib.coalesce import Coalescer, together_or_alone
from meshlib.storage import IdempotencyKey
from services.payment.adapters.sql_journal import SqlPaymentJournal
from services.payment.adapters.sql_register import Recorded, SqlPaymentRegister
from services.payment.domain.payments import Payment
from services.payment.domain.saga import History
from services.payment.ports import JournalEntry, RefundRegistration, Registration


class GroupCommitJournal:
    """A :class:`~services.payment.ports.PaymentJournal` whose ``record`` calls share transactions."""

    def __init__(self, journal: SqlPaymentJournal) -> None:
        self._journal = journal
        self._writes: Coalescer[JournalEntry, Payment] = Coalescer(
            self._write_many, max_in_flight=1, name="payment.saga.group_commit"
        )

    async def record(self, entry: JournalEntry) -> Payment:
        """Write the entry with the others in flight."""
        return await self._writes.submit(entry)

    async def _write_many(self, entries: list[JournalEntry]) -> list[Payment | BaseException]:
        # Two entries of one payment (never in a live saga) go one by one, in order.
        unique = len({entry.payment_id for entry in entries}) == len(entries)
        return await together_or_alone(
            entries,
            self._journal.record_many if unique else None,
            self._journal.record,
            what="payment.saga.group_commit",
        )

    async def request_funds(self, entry: JournalEntry) -> Payment | None:
        """As the plain journal (a guarded write, rare: recovery of a payment never started)."""
        return await self._journal.request_funds(entry)

    async def load(self, payment_id: str) -> tuple[Payment, History]:
        """As the plain journal."""
        return await self._journal.load(payment_id)

    async def claim(self, payment_id: str) -> bool:
        """As the plain journal."""
        return await self._journal.claim(payment_id)

    async def due_for_recovery(self, older_than: dt.timedelta | None, limit: int) -> list[str]:
        """As the plain journal."""
        return await self._journal.due_for_recovery(older_than, limit)

    async def park(self, payment_id: str, delay: dt.timedelta) -> None:
        """As the plain journal."""
        await self._journal.park(payment_id, delay)

    async def awaiting_clearing(self, limit: int) -> list[str]:
        """As the plain journal."""
        return await self._journal.awaiting_clearing(limit)


class GroupCommitRegister:
    """A :class:`~services.payment.ports.PaymentRegister` whose recordings share transactions.

    The payments recorded together are checked in order, each as if the ones before it were
    stored (see :mod:`services.payment.adapters.sql_register`), so limits stay exact.
    """

    def __init__(self, register: SqlPaymentRegister) -> None:
        self._register = register
        self._recordings: Coalescer[Registration, Recorded] = Coalescer(
            self._record_many, max_in_flight=1, name="payment.create.group_commit"
        )

    async def record(self, registration: Registration) -> Recorded:
        """Record the payment with the others being created."""
        return await self._recordings.submit(registration)

    async def _record_many(self, registrations: list[Registration]) -> list[Recorded | BaseException]:
        return await together_or_alone(
            registrations,
            self._register.record_many,
            self._register.record,
            what="payment.create.group_commit",
        )

    async def replay(self, key: IdempotencyKey) -> Payment | None:
        """As the plain register."""
        return await self._register.replay(key)

    async def cancel(
        self, payment_id: str, partner_id: str, consent_id: str, key: IdempotencyKey, trace_id: str
    ) -> Payment:
        """As the plain register."""
        return await self._register.cancel(payment_id, partner_id, consent_id, key, trace_id)

    async def refund_facts(self, original_id: str) -> tuple[Payment, int] | None:
        """As the plain register."""
        return await self._register.refund_facts(original_id)

    async def record_refund(self, registration: RefundRegistration) -> Recorded:
        """As the plain register (refunds are rare: each in its own transaction)."""
        return await self._register.record_refund(registration)

    async def record_scheduled(
        self, payment: Payment, key: IdempotencyKey, trace_id: str, actor: Actor | None
    ) -> Recorded:
        """As the plain register."""
        return await self._register.record_scheduled(payment, key, trace_id, actor)

    async def execute_scheduled(self, registration: Registration) -> Recorded:
        """As the plain register."""
        return await self._register.execute_scheduled(registration)

    async def refuse_scheduled(self, payment_id: str, reason: str, message: str, trace_id: str) -> Payment:
        """As the plain register."""
        return await self._register.refuse_scheduled(payment_id, reason, message, trace_id)

    async def record_refused(
        self, payment: Payment, key: IdempotencyKey, reason: str, message: str, trace_id: str
    ) -> Payment:
        """As the plain register."""
        return await self._register.record_refused(payment, key, reason, message, trace_id)
