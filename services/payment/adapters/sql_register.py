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
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from meshlib.audit import Actor
from meshlib.errors import FailedPrecondition, MeshError, NotFound
from meshlib.idempotency import SavedAnswer
from meshlib.mandates import Mandate
from meshlib.storage import Codec, IdempotencyKey, Transactions, retry_on_conflict
from services.payment.adapters.audit import SAGA, audit_payment, partner_of
from services.payment.domain import checks, isolation, mandates, refunds
from services.payment.domain.checks import CustomerHistory
from services.payment.domain.payments import Payment, PaymentState
from services.payment.domain.risk import RiskDecision, RiskOutcome, RiskRules, RiskSignals
from services.payment.domain.saga import Outcome, RecordedStep, Step, StepRecord
from services.payment.domain.step_up import Waiting
from services.payment.isolation_repository import PaymentGate
from services.payment.metrics import record_payment_state, record_risk_outcome
from services.payment.ports import Clock, RefundRegistration, Registration, utc_now
from services.payment.unit_of_work import PaymentUnitOfWork

UnitOfWorkFactory = Callable[..., PaymentUnitOfWork]
K = TypeVar("K")
V = TypeVar("V")
Recorded = tuple[Payment, bool]
# The saved answer of a cancel: the payment's id (the payment is read as it is now).
PAYMENT_ID: Codec[str] = Codec(encode=str.encode, decode=bytes.decode)


class _CarriedFacts:
    """What the payments recorded together are checked against, read once and carried forward.

    The database part (spent sums, customer histories, saved request ids) is read on first
    use; the payments accepted earlier in the group, not written yet, are added in memory.
    """

    def __init__(self, uow: PaymentUnitOfWork, rules: RiskRules, now: dt.datetime) -> None:
        self._uow = uow
        self._rules = rules
        self._now = now
        self._saved: dict[tuple[str, str, str], SavedAnswer] = {}
        self._replayable: dict[str, Payment] = {}
        # Each read once, then carried forward: (the value, how many accepted payments it includes).
        self._sums: dict[tuple[str, str, str, dt.datetime], tuple[int, int]] = {}
        self._histories: dict[tuple[str, str, str, str | None], tuple[CustomerHistory, int]] = {}
        self._accepted: list[Payment] = []
        self._answers: dict[tuple[str, str], list[tuple[str, str, bytes]]] = {}
        # Dynamic isolation: the customers' capabilities (read once per group), and what the
        # accepted payments used (a payment's uses wait in _using until it is accepted).
        self.capabilities: dict[str, dict[str, PaymentGate]] = {}
        self._capabilities_read: set[str] = set()
        self._using: dict[str, tuple[str, ...]] = {}
        self.uses: dict[str, set[str]] = {}

    async def load_capabilities(self, customer_ids: Sequence[str]) -> None:
        """The capabilities of the group's customers, in one statement."""
        wanted = {c for c in customer_ids if c and c not in self._capabilities_read}
        if wanted:
            self.capabilities.update(await self._uow.isolation.gates(wanted, self._now))
            self._capabilities_read |= wanted

    async def load_saved(self, registrations: Sequence[Registration]) -> None:
        """The saved answers of the group's request ids (a statement per partner), and their payments."""
        scopes: dict[tuple[str, str], list[str]] = {}
        for registration in registrations:
            key = registration.key
            scopes.setdefault((key.scope, key.method), []).append(key.request_id)
        for (scope, method), request_ids in scopes.items():
            found = await self._uow.idempotency.lookup_many(scope, method, request_ids)
            self._saved.update({(scope, method, request_id): answer for request_id, answer in found.items()})
        if self._saved:
            ids = sorted({answer.response.decode() for answer in self._saved.values()})
            self._replayable.update(await self._uow.payments.get_many(ids))

    def replay(self, key: IdempotencyKey) -> Payment | None:
        """The payment a request_id seen before answers (REQUEST_ID_REUSED for another payload)."""
        saved = self._saved.get((key.scope, key.method, key.request_id))
        if saved is None:
            return None
        payment = self._replayable.get(saved.answer_for(key.fingerprint).decode())
        assert payment is not None, "a saved CreatePayment answer names a stored payment"
        return payment

    async def check(self, registration: Registration, payment: Payment) -> RiskDecision:
        """The consent's and partner's limits, then the risk decision, given everything before it."""
        consent, limits, amount = registration.consent, registration.limits, payment.amount
        spent = 0
        # A sum is read only when a limit needs it (day rows of the running sums: at most 31).
        if consent.period_limit_minor is not None:
            since = checks.period_start(consent.period, self._now)
            spent = await self._spent("consent_id", payment.consent_id, amount.currency, since)
        checks.check_consent_limits(consent, amount, spent)
        if consent.mandate is not None:
            # Here, where the writers queue, so payments racing for a period's last allowance
            # are counted one after the other (the earlier ones of the group carried forward).
            mandates.check_payment(
                consent.mandate, payment.creditor_account_id, payment.creditor_wallet_partner_id, amount, self._now
            )
            mandates.check_periods(
                consent.mandate, amount, await self.mandate_usage(consent.consent_id, consent.mandate)
            )
        spent_today = 0
        if limits.daily_minor is not None:
            since = checks.day_start(self._now)
            spent_today = await self._spent("partner_id", payment.partner_id, amount.currency, since)
        checks.check_partner_limits(limits, amount, spent_today)
        history = await self._history(payment)
        if payment.customer_id:
            await self._check_isolation(payment, not history.paid_beneficiary_before)
        signals = RiskSignals(
            payment.partner_id,
            amount.minor_units,
            history,
            self._now,
            registration.psu,
            registration.identity,
            limits.risk_tier,
        )
        decision = self._rules.decide(signals)
        if decision.outcome is RiskOutcome.REFUSE:
            raise RiskRefused(decision)
        return decision

    async def _check_isolation(self, payment: Payment, new_creditor: bool) -> None:
        """The customer's paused capabilities and lowered daily limit (dynamic isolation), before
        the risk decision: a refusal here is the customer's own setting, not a risk."""
        await self.load_capabilities([payment.customer_id])
        states = self.capabilities.get(payment.customer_id, {})
        amount = payment.amount
        spent_today = 0
        if isolation.needs_spent_today(states):
            since = checks.day_start(self._now)
            spent_today = await self._spent("customer_id", payment.customer_id, amount.currency, since)
        isolation.check_payment(
            states,
            payment_type=payment.payment_type,
            new_creditor=new_creditor,
            amount_minor=amount.minor_units,
            currency=amount.currency,
            spent_today_minor=spent_today,
        )
        self._using[payment.payment_id] = isolation.used_by(payment.payment_type, new_creditor)

    async def mandate_usage(self, consent_id: str, mandate: Mandate) -> list[mandates.PeriodUsage]:
        """What the mandate's payments add up to in each periodic limit's current period."""
        return [
            mandates.PeriodUsage(
                limit, start, end, await self._spent("consent_id", consent_id, mandate.currency, start)
            )
            for limit, start, end in mandates.windows(mandate, self._now)
        ]

    def accept(self, key: IdempotencyKey, stored: Payment) -> None:
        """Count an accepted payment for the ones after it, and save its answer with the group."""
        self._accepted.append(stored)
        self._replayable[stored.payment_id] = stored
        used = self._using.pop(stored.payment_id, ())
        if used:
            self.uses.setdefault(stored.customer_id, set()).update(used)
        answer = SavedAnswer(key.request_id, key.fingerprint, stored.payment_id.encode())
        self._saved[(key.scope, key.method, key.request_id)] = answer
        self._answers.setdefault((key.scope, key.method), []).append(
            (answer.request_id, answer.fingerprint, answer.response)
        )

    def new_answers(self) -> dict[tuple[str, str], list[tuple[str, str, bytes]]]:
        """The accepted payments' idempotency answers, by (scope, method)."""
        return self._answers

    async def _spent(self, column: str, value: str, currency: str, since: dt.datetime) -> int:
        def plus(total: int, earlier: Payment) -> int:
            counts = getattr(earlier, column) == value and earlier.amount.currency == currency
            return total + earlier.amount.minor_units if counts and earlier.created_at >= since else total

        return await self._carried(
            self._sums,
            (column, value, currency, since),
            lambda: self._uow.limits.spent(column, value, currency, since.date()),
            plus,
        )

    async def _history(self, payment: Payment) -> CustomerHistory:
        def plus(history: CustomerHistory, earlier: Payment) -> CustomerHistory:
            if earlier.customer_id != payment.customer_id:
                return history
            same_currency = earlier.amount.currency == payment.amount.currency
            return history.plus_new_payment(earlier.amount.minor_units, same_currency=same_currency)

        key = (
            payment.customer_id,
            payment.amount.currency,
            payment.creditor_account_id or "",
            payment.creditor_wallet_partner_id,
        )
        return await self._carried(
            self._histories,
            key,
            lambda: self._uow.limits.customer_history(payment.customer_id, payment, self._rules.windows, self._now),
            plus,
        )

    async def _carried(
        self,
        cache: dict[K, tuple[V, int]],
        key: K,
        read: Callable[[], Awaitable[V]],
        plus: Callable[[V, Payment], V],
    ) -> V:
        """A value read once per group (``read``), with each payment accepted since folded in
        (``plus``); the cache remembers how many accepted payments the value includes."""
        value, applied = cache[key] if key in cache else (await read(), 0)
        for earlier in self._accepted[applied:]:
            value = plus(value, earlier)
        cache[key] = (value, len(self._accepted))
        return value


class RiskRefused(FailedPrecondition):
    """The risk decision refused the payment outright (its reason and rules for the partner)."""

    def __init__(self, decision: RiskDecision) -> None:
        super().__init__(
            "the payment was refused by the bank's risk rules", reason=decision.reason, metadata=decision.metadata()
        )
        self.decision = decision


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
        facts = _CarriedFacts(uow, self._rules(), now)
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
                _audit_refusal(uow, registration, refused.decision)
                outcomes.append(refused)
                continue
            except MeshError as refused:
                if refused.reason in isolation.REFUSALS:
                    _audit_isolation_refusal(uow, registration, refused)
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
            facts = _CarriedFacts(uow, self._rules(), now)
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


def _audit_refusal(uow: PaymentUnitOfWork, registration: Registration, decision: RiskDecision) -> None:
    """A payment the risk rules refused is never stored; the audit trail keeps why."""
    payment = registration.payment
    uow.audit.record(
        "payment.risk_refuse",
        f"partners/{payment.partner_id}/requests/{registration.key.request_id}",
        outcome="REFUSED",
        actor=registration.actor or partner_of(payment),
        partner_id=payment.partner_id,
        consent_id=payment.consent_id,
        customer_id=payment.customer_id or None,
        trace_id=registration.trace_id or None,
        details={"reason": decision.reason, **decision.audit_details()},
    )


def _audit_isolation_refusal(uow: PaymentUnitOfWork, registration: Registration, refused: MeshError) -> None:
    """A payment refused for a capability the customer's isolation paused: never stored, the
    audit trail keeps the attempt (what was paused, whose request)."""
    payment = registration.payment
    uow.audit.record(
        "payment.isolation_refuse",
        f"partners/{payment.partner_id}/requests/{registration.key.request_id}",
        outcome="REFUSED",
        actor=registration.actor or partner_of(payment),
        partner_id=payment.partner_id,
        consent_id=payment.consent_id,
        customer_id=payment.customer_id or None,
        trace_id=registration.trace_id or None,
        details={"reason": refused.reason, **refused.metadata},
    )


async def _refund_facts(uow: PaymentUnitOfWork, original_id: str) -> tuple[Payment, int] | None:
    original = await uow.payments.get(original_id)
    if original is None:
        return None
    links = (await uow.refunds.of([original_id])).get(original_id, ())
    return original, refunds.refundable_minor(original, [(link.state, link.amount_minor) for link in links])
