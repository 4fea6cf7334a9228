"""The payment journal on the payment database: one transaction per entry (or per group of them)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence

from meshlib.storage import retry_on_conflict
from services.payment.adapters.audit import SAGA, audit_payment
from services.payment.domain.payments import Payment, PaymentState
from services.payment.domain.saga import History, RecordedStep
from services.payment.metrics import record_payment_state
from services.payment.ports import Clock, JournalEntry, utc_now
from services.payment.unit_of_work import PaymentUnitOfWork

UnitOfWorkFactory = Callable[..., PaymentUnitOfWork]
StateChange = tuple[Payment, PaymentState | None, PaymentState, str]


class SqlPaymentJournal:
    """Step records, guarded state changes with their outbox events, and the driver's lease."""

    def __init__(self, uow: UnitOfWorkFactory, *, lease: dt.timedelta, clock: Clock = utc_now) -> None:
        self._uow = uow
        self._lease = lease
        self._clock = clock

    async def record(self, entry: JournalEntry) -> Payment:
        """Write one entry in its own transaction (retried on a conflict)."""
        (outcome,) = await retry_on_conflict(lambda: self.record_many([entry]))
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def record_many(self, entries: Sequence[JournalEntry]) -> list[Payment | BaseException]:
        """Write entries of distinct payments in one transaction, a statement per kind of row."""
        async with self._uow() as uow:
            stored, changes = await self._write_in(uow, entries, self._clock())
            await uow.commit()
        _count_states(changes)
        return [
            stored[entry.payment_id]
            if entry.payment_id in stored
            else LookupError(f"payment {entry.payment_id} not found")
            for entry in entries
        ]

    async def request_funds(self, entry: JournalEntry) -> Payment | None:
        """Write the entry only if the payment can still ask for money (not cancelled)."""

        async def attempt() -> Payment | None:
            async with self._uow() as uow:
                now = self._clock()
                if not await uow.payments.request_hold(entry.payment_id, now):
                    return None
                stored, changes = await self._write_in(uow, [entry], now)
                await uow.commit()
            _count_states(changes)
            return stored[entry.payment_id]

        return await retry_on_conflict(attempt)

    async def load(self, payment_id: str) -> tuple[Payment, History]:
        """The payment and its recorded steps."""
        async with self._uow(read_only=True) as uow:
            payment = await uow.payments.get(payment_id)
            steps = await uow.steps.for_payment(payment_id)
        if payment is None:
            raise LookupError(f"payment {payment_id} not found")
        return payment, History(tuple(step.record for step in steps))

    async def claim(self, payment_id: str) -> bool:
        """Take the lease of a payment whose driver's lease expired."""

        async def attempt() -> bool:
            async with self._uow() as uow:
                claimed = await uow.payments.claim(payment_id, self._clock(), self._lease)
                await uow.commit()
            return claimed

        return await retry_on_conflict(attempt)

    async def due_for_recovery(self, older_than: dt.timedelta | None, limit: int) -> list[str]:
        """Unfinished payments whose lease expired (and idle ``older_than``, if given)."""
        now = self._clock()
        async with self._uow(read_only=True) as uow:
            ids = await uow.payments.unfinished_with_expired_lease(now, limit)
            if older_than is not None:
                stale = {p.payment_id for p in await uow.payments.stuck(now - older_than, None, limit)}
                ids = [i for i in ids if i in stale]
        return ids

    async def park(self, payment_id: str, delay: dt.timedelta) -> None:
        """The payment's lease runs out ``delay`` from now."""

        async def attempt() -> None:
            async with self._uow() as uow:
                await uow.payments.renew(payment_id, self._clock(), delay)
                await uow.commit()

        await retry_on_conflict(attempt)

    async def awaiting_clearing(self, limit: int) -> list[str]:
        """Payments to other banks in flight whose lease expired."""
        async with self._uow(read_only=True) as uow:
            return await uow.payments.awaiting_clearing(self._clock(), limit)

    async def _write_in(
        self, uow: PaymentUnitOfWork, entries: Sequence[JournalEntry], now: dt.datetime
    ) -> tuple[dict[str, Payment], list[StateChange]]:
        """The entries' step rows, their moves (one guarded update per kind of move and stage)
        with an event each, and the leases renewed. A payment that is not there is left out."""
        before = await uow.payments.get_many([entry.payment_id for entry in entries])
        present = [entry for entry in entries if entry.payment_id in before]
        await uow.steps.add_many(
            [
                RecordedStep(entry.payment_id, record, entry.trace_id, now)
                for entry in present
                for record in entry.records
            ]
        )
        stored = dict(before)
        changes: list[StateChange] = []
        moved: set[str] = set()
        lease_until = now + self._lease
        for stage in range(max((len(entry.moves) for entry in present), default=0)):
            # One guarded update per kind of move: the payments in flight mostly make the same one.
            by_move: dict[tuple[PaymentState, PaymentState, str, str], list[str]] = {}
            for entry in present:
                if stage < len(entry.moves):
                    move = entry.moves[stage]
                    by_move.setdefault((move.from_state, move.to_state, move.reason, move.message), []).append(
                        entry.payment_id
                    )
            for (from_state, to_state, reason, message), payment_ids in by_move.items():
                if reason or message:
                    done = {
                        payment_id
                        for payment_id in payment_ids
                        if await uow.payments.move(
                            payment_id, [from_state], to_state, now, reason=reason, message=message
                        )
                    }
                    if done:
                        await uow.payments.renew_many(sorted(done), now, self._lease)
                else:
                    done = await uow.payments.move_many(
                        payment_ids, [from_state], to_state, now, lease_until=lease_until
                    )
                for payment_id in payment_ids:
                    if payment_id in done:
                        current = stored[payment_id]
                        changes.append((current, current.state, to_state, reason))
                        stored[payment_id] = current.moved(to_state, now, reason, message)
                moved |= done
        await uow.events.add_many(changes, now)
        traces = {entry.payment_id: entry.trace_id for entry in present}
        for payment, from_state, to_state, reason in changes:
            # The saga's own work (run for the caller, a recovery pass or a peer's answer).
            trace_id = traces.get(payment.payment_id, "")
            audit_payment(uow, "payment.state", payment, from_state, to_state, trace_id, reason=reason, actor=SAGA)
        unrenewed = [entry.payment_id for entry in present if entry.payment_id not in moved]
        if unrenewed:
            await uow.payments.renew_many(unrenewed, now, self._lease)
        return stored, changes


def _count_states(changes: list[StateChange]) -> None:
    """Count the committed state changes in the payments-by-state metric."""
    for _, _, state, _ in changes:
        record_payment_state(state.name)
