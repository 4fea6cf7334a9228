"""New payments into the payment database: limits checked in the writers' critical section.

``record_many`` records the payments created together in one transaction (the group-commit
adapter feeds it; the plain path records a group of one): the saved request ids, each spent
sum and each customer history are read once, and each payment is checked in order as if the
ones before it were stored (their amounts and counts carried forward in memory), so limits
and velocity rules stay exact. A refused payment writes nothing; the accepted ones are
written with a statement per table.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Sequence

from meshlib.audit import Actor
from meshlib.errors import FailedPrecondition, MeshError, NotFound
from meshlib.storage import Codec, IdempotencyKey, Transactions, retry_on_conflict
from services.payment.adapters.audit import SAGA, audit_payment, partner_of
from services.payment.adapters.register_facts import CarriedFacts, RiskRefused
from services.payment.domain import isolation, refunds
from services.payment.domain.payments import Payment, PaymentState
from services.payment.domain.risk import RiskDecision, RiskOutcome, RiskRules
from services.payment.domain.saga import Outcome, RecordedStep, Step, StepRecord
from services.payment.domain.step_up import Waiting
from services.payment.metrics import record_payment_state, record_risk_outcome
from services.payment.ports import Clock, RefundRegistration, Registration, utc_now
from services.payment.unit_of_work import PaymentUnitOfWork

UnitOfWorkFactory = Callable[..., PaymentUnitOfWork]
Recorded = tuple[Payment, bool]
# The saved answer of a cancel: the payment's id (the payment is read as it is now).
PAYMENT_ID: Codec[str] = Codec(encode=str.encode, decode=bytes.decode)


class SqlPaymentRegister:
    """Records new payments and cancels them, with their idempotency keys, on the payment database.

    ``rules``: the risk rules in force, read for every group (a reloaded file takes effect with
    the next group)."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        rules: Callable[[], RiskRules],
        *,
        lease: dt.timedelta,
        clock: Clock = utc_now,
        waiting: Waiting | None = None,
    ) -> None:
        self._uow = uow
        self._transactions = Transactions(uow, clock=clock)
        self._rules = rules
        self._waiting = waiting or Waiting()
        self._lease = lease
        self._clock = clock

    async def record(self, registration: Registration) -> Recorded:
        """Record one payment in its own transaction (retried on a conflict)."""
        (outcome,) = await retry_on_conflict(lambda: self.record_many([registration]))
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def record_many(self, registrations: Sequence[Registration]) -> list[Recorded | BaseException]:
        """Record payments created together in one transaction; each gets its own outcome."""
        async with self._uow() as uow:
            outcomes = await self._record_in(uow, registrations)
            await uow.commit()
        for registration, outcome in zip(registrations, outcomes, strict=True):
            if isinstance(outcome, RiskRefused):
                record_risk_outcome(registration.payment.partner_id, RiskOutcome.REFUSE.name)
            elif not isinstance(outcome, BaseException) and outcome[1]:
                record_payment_state(PaymentState.RECEIVED.name)
                record_payment_state(outcome[0].state.name)
                record_risk_outcome(outcome[0].partner_id, _OUTCOME_OF_STATE.get(outcome[0].state, "ALLOW"))
        return outcomes

    async def _record_in(
        self, uow: PaymentUnitOfWork, registrations: Sequence[Registration]
    ) -> list[Recorded | BaseException]:
        """Checks in order, then the rows: each payment stored ACCEPTED with its opening records
        (validated, first calls started: its money is asked for), both events, its key. All are
        stamped with one time, the moment they are recorded."""
        now = self._clock()
        facts = CarriedFacts(uow, self._rules(), now)
        await facts.load_saved(registrations)
        await facts.load_capabilities([r.payment.customer_id for r in registrations])
        outcomes: list[Recorded | BaseException] = []
        accepted: list[tuple[Registration, Payment]] = []
        waiting: list[tuple[Registration, Payment, RiskDecision]] = []
        for registration in registrations:
            try:
                replayed = facts.replay(registration.key)
                if replayed is not None:
                    outcomes.append((replayed, False))
                    continue
                received = registration.payment.recorded_at(now)
                decision = await facts.check(registration, received)
            except RiskRefused as refused:
                details = {"reason": refused.decision.reason, **refused.decision.audit_details()}
                _audit_refused_request(uow, registration, "payment.risk_refuse", details)
                outcomes.append(refused)
                continue
            except MeshError as refused:
                if refused.reason in isolation.REFUSALS:
                    details = {"reason": refused.reason, **refused.metadata}
                    _audit_refused_request(uow, registration, "payment.isolation_refuse", details)
                outcomes.append(refused)
                continue
            state = _waiting_state(decision, registration.payment)
            stored = received.moved(state, now, "" if state is PaymentState.ACCEPTED else decision.reason)
            facts.accept(registration.key, stored)
            if state is PaymentState.ACCEPTED:
                accepted.append((registration, stored))
            else:
                waiting.append((registration, stored, decision))
            outcomes.append((stored, True))
        if not accepted and not waiting:
            return outcomes
        await uow.payments.add_many(
            [payment for _, payment in accepted], lease_until=now + self._lease, hold_requested=True
        )
        await uow.payments.add_many([payment for _, payment, _ in waiting])  # nothing held; counted
        await uow.steps.add_many(
            [
                RecordedStep(payment.payment_id, record, registration.trace_id, now)
                for registration, payment in accepted
                for record in registration.opening
            ]
        )
        await uow.events.add_many(
            [
                change
                for payment in [p for _, p in accepted] + [p for _, p, _ in waiting]
                for change in (
                    (payment, None, PaymentState.RECEIVED, ""),
                    (payment, PaymentState.RECEIVED, payment.state, payment.status_reason),
                )
            ],
            now,
        )
        for _, payment, decision in waiting:
            wait = self._waiting.step_up if decision.outcome is RiskOutcome.STEP_UP else self._waiting.review
            await uow.risk.add(payment.payment_id, payment.partner_id, decision, now, now + wait)
        for (scope, method), answers in facts.new_answers().items():
            await uow.idempotency.save_many(scope, method, answers, now)
        if facts.uses:
            await uow.isolation.touch(facts.uses, facts.capabilities, now)
        for registration, payment in accepted:
            who = registration.actor or partner_of(payment)
            audit_payment(uow, "payment.create", payment, None, payment.state, registration.trace_id, actor=who)
        for registration, payment, decision in waiting:
            who = registration.actor or partner_of(payment)
            audit_payment(
                uow,
                "payment.create",
                payment,
                None,
                payment.state,
                registration.trace_id,
                reason=decision.reason,
                actor=who,
                extra=decision.audit_details(),
            )
        return outcomes

    async def replay(self, key: IdempotencyKey) -> Payment | None:
        """The payment a request id answered before (REQUEST_ID_REUSED for another payload)."""
        async with self._uow(read_only=True) as uow:
            saved = await uow.idempotency.lookup(key.scope, key.method, key.request_id, key.fingerprint)
            return await uow.payments.get(saved.decode()) if saved is not None else None

    async def cancel(
        self, payment_id: str, partner_id: str, consent_id: str, key: IdempotencyKey, trace_id: str
    ) -> Payment:
        """CANCELLED unless its money was asked for; an already cancelled payment is returned as is."""
        moved: list[bool] = []

        async def change(uow: PaymentUnitOfWork) -> str:
            moved.clear()
            payment = await uow.payments.get(payment_id)
            if payment is None or payment.partner_id != partner_id or payment.consent_id != consent_id:
                raise NotFound("payment not found")
            if payment.state is not PaymentState.CANCELLED:
                now = self._clock()
                if not await uow.payments.cancel(payment_id, now):
                    raise FailedPrecondition(
                        "funds are already held or the payment is final", reason="PAYMENT_NOT_CANCELLABLE"
                    )
                record = StepRecord(Step.CANCEL, Outcome.SUCCEEDED)
                await uow.steps.add_many([RecordedStep(payment_id, record, trace_id, now)])
                # A payment waiting for the customer or a review leaves the queue with it.
                await uow.risk.resolve(payment_id, "cancelled", f"partner:{partner_id}", now)
                await uow.events.add(payment, payment.state, PaymentState.CANCELLED, "", now)
                audit_payment(uow, "payment.cancel", payment, payment.state, PaymentState.CANCELLED, trace_id)
                moved.append(True)
            return payment_id

        cancelled = await self._transactions.run(change, key=key, codec=PAYMENT_ID)
        if moved:
            record_payment_state(PaymentState.CANCELLED.name)
        stored = await self._transactions.read(lambda uow: uow.payments.get(cancelled))
        assert stored is not None
        return stored

    async def record_scheduled(
        self, payment: Payment, key: IdempotencyKey, trace_id: str, actor: Actor | None
    ) -> Recorded:
        """Store a future-dated payment SCHEDULED, with its event, key and audit record."""
        created: list[bool] = []

        async def change(uow: PaymentUnitOfWork) -> str:
            created.clear()
            now = self._clock()
            stored = payment.recorded_at(now)
            await uow.payments.add_many([stored])  # SCHEDULED counts against nothing yet
            await uow.events.add_many([(stored, None, PaymentState.SCHEDULED, "")], now)
            audit_payment(
                uow, "payment.schedule", stored, None, stored.state, trace_id, actor=actor or partner_of(stored)
            )
            created.append(True)
            return stored.payment_id

        payment_id = await self._transactions.run(change, key=key, codec=PAYMENT_ID)
        if created:
            record_payment_state(PaymentState.SCHEDULED.name)
        return await self._stored(payment_id), bool(created)

    async def execute_scheduled(self, registration: Registration) -> Recorded:
        """Check a due SCHEDULED payment against the limits as they are now, where the writers
        queue: ACCEPTED with its opening records (True), or REJECTED with the refusal (False)."""
        payment = registration.payment

        async def change(uow: PaymentUnitOfWork) -> bool:
            now = self._clock()
            facts = CarriedFacts(uow, self._rules(), now)
            try:
                await facts.check(registration, payment)
            except MeshError as refused:
                reason = refused.reason or "FAILED_PRECONDITION"
                await self._leave_schedule(uow, payment, reason, str(refused), registration.trace_id, now)
                return False
            if not await uow.payments.execute_scheduled(payment, now, self._lease):
                return False  # cancelled meanwhile
            await uow.steps.add_many(
                [
                    RecordedStep(payment.payment_id, record, registration.trace_id, now)
                    for record in registration.opening
                ]
            )
            await uow.events.add_many([(payment, PaymentState.SCHEDULED, PaymentState.ACCEPTED, "")], now)
            audit_payment(
                uow, "payment.state", payment, PaymentState.SCHEDULED, PaymentState.ACCEPTED, registration.trace_id
            )
            return True

        accepted = await self._transactions.run(change)
        if accepted:
            record_payment_state(PaymentState.ACCEPTED.name)
        return await self._stored(payment.payment_id), accepted

    async def refuse_scheduled(self, payment_id: str, reason: str, message: str, trace_id: str) -> Payment:
        """A SCHEDULED payment that will not execute: REJECTED with the reason."""

        async def change(uow: PaymentUnitOfWork) -> None:
            payment = await uow.payments.get(payment_id)
            if payment is not None and payment.state is PaymentState.SCHEDULED:
                await self._leave_schedule(uow, payment, reason, message, trace_id, self._clock())

        await self._transactions.run(change)
        return await self._stored(payment_id)

    async def _leave_schedule(
        self, uow: PaymentUnitOfWork, payment: Payment, reason: str, message: str, trace_id: str, now: dt.datetime
    ) -> None:
        if await uow.payments.leave_schedule(payment.payment_id, PaymentState.REJECTED, now, reason, message):
            await uow.events.add_many([(payment, PaymentState.SCHEDULED, PaymentState.REJECTED, reason)], now)
            audit_payment(
                uow, "payment.state", payment, PaymentState.SCHEDULED, PaymentState.REJECTED, trace_id, reason=reason
            )
            record_payment_state(PaymentState.REJECTED.name)

    async def record_refused(
        self, payment: Payment, key: IdempotencyKey, reason: str, message: str, trace_id: str
    ) -> Payment:
        """A standing order's execution its checks refused, stored REJECTED with the reason."""

        async def change(uow: PaymentUnitOfWork) -> str:
            now = self._clock()
            received = payment.recorded_at(now)
            rejected = received.moved(PaymentState.REJECTED, now, reason, message)
            await uow.payments.add_many([rejected])  # REJECTED counts against nothing
            await uow.events.add_many(
                [
                    (rejected, None, PaymentState.RECEIVED, ""),
                    (rejected, PaymentState.RECEIVED, PaymentState.REJECTED, reason),
                ],
                now,
            )
            audit_payment(
                uow, "payment.create", rejected, None, PaymentState.REJECTED, trace_id, reason=reason, actor=SAGA
            )
            return rejected.payment_id

        return await self._stored(await self._transactions.run(change, key=key, codec=PAYMENT_ID))

    async def _stored(self, payment_id: str) -> Payment:
        stored = await self._transactions.read(lambda uow: uow.payments.get(payment_id))
        assert stored is not None
        return stored

    async def refund_facts(self, original_id: str) -> tuple[Payment, int] | None:
        """A payment and what is left to refund of it (None: no such payment)."""

        async def read(uow: PaymentUnitOfWork) -> tuple[Payment, int] | None:
            return await _refund_facts(uow, original_id)

        return await self._transactions.read(read)

    async def record_refund(self, registration: RefundRegistration) -> Recorded:
        """Check the refund against its original as it is now and store it ACCEPTED with its
        opening records, its events, its key and its audit record; a replay answers its refund.
        Writers commit one at a time (the unit of work's writer lock), so two refunds of one
        payment are checked one after the other: together they never exceed it."""
        created: list[bool] = []

        async def change(uow: PaymentUnitOfWork) -> str:
            created.clear()
            refund = registration.refund
            facts = await _refund_facts(uow, refund.original_payment_id)
            if facts is None:
                raise NotFound("payment not found")
            original, refundable = facts
            request = dataclasses.replace(registration.request, amount=refund.amount)
            refunds.check_refundable(original, request, refundable)
            now = self._clock()
            stored = refund.recorded_at(now).moved(PaymentState.ACCEPTED, now)
            await uow.payments.add_many([stored], lease_until=now + self._lease, hold_requested=True)
            await uow.steps.add_many(
                [RecordedStep(stored.payment_id, record, registration.trace_id, now) for record in registration.opening]
            )
            await uow.events.add_many(
                [(stored, None, PaymentState.RECEIVED, ""), (stored, PaymentState.RECEIVED, PaymentState.ACCEPTED, "")],
                now,
            )
            audit_payment(
                uow,
                "payment.refund",
                stored,
                None,
                stored.state,
                registration.trace_id,
                actor=registration.actor or partner_of(stored),
            )
            created.append(True)
            return stored.payment_id

        refund_id = await self._transactions.run(change, key=registration.key, codec=PAYMENT_ID)
        if created:
            record_payment_state(PaymentState.RECEIVED.name)
            record_payment_state(PaymentState.ACCEPTED.name)
        stored = await self._transactions.read(lambda uow: uow.payments.get(refund_id))
        assert stored is not None
        return stored, bool(created)


_OUTCOME_OF_STATE = {
    PaymentState.AWAITING_AUTHORISATION: RiskOutcome.STEP_UP.name,
    PaymentState.PENDING_REVIEW: RiskOutcome.REVIEW.name,
}


def _waiting_state(decision: RiskDecision, payment: Payment) -> PaymentState:
    """Where a payment the rules did not refuse goes. A standing order's execution has no
    customer present to confirm it and was agreed by the customer as a series (PSD2 RTS art. 14):
    only a refusal applies to it."""
    if payment.standing_order_id:
        return PaymentState.ACCEPTED
    if decision.outcome is RiskOutcome.STEP_UP:
        return PaymentState.AWAITING_AUTHORISATION
    if decision.outcome is RiskOutcome.REVIEW:
        return PaymentState.PENDING_REVIEW
    return PaymentState.ACCEPTED


def _audit_refused_request(
    uow: PaymentUnitOfWork, registration: Registration, action: str, details: dict[str, object]
) -> None:
    """A payment refused before it was stored (the risk rules, or a capability the customer's
    isolation paused): nothing is written but the audit record of the attempt and why."""
    payment = registration.payment
    uow.audit.record(
        action,
        f"partners/{payment.partner_id}/requests/{registration.key.request_id}",
        outcome="REFUSED",
        actor=registration.actor or partner_of(payment),
        partner_id=payment.partner_id,
        consent_id=payment.consent_id,
        customer_id=payment.customer_id or None,
        trace_id=registration.trace_id or None,
        details=details,
    )


async def _refund_facts(uow: PaymentUnitOfWork, original_id: str) -> tuple[Payment, int] | None:
    original = await uow.payments.get(original_id)
    if original is None:
        return None
    links = (await uow.refunds.of([original_id])).get(original_id, ())
    return original, refunds.refundable_minor(original, [(link.state, link.amount_minor) for link in links])
