"""Payments the risk decision did not let through at once: the customer's step-up, the
operators' review, and the expiry of both.

- A payment AWAITING_AUTHORISATION goes on when its customer gives the one-time code bound to
  its amount and payee (domain.step_up); after ``MAX_ATTEMPTS`` wrong codes it is REJECTED.
- A payment PENDING_REVIEW goes on when an operator approves it, and is REJECTED when one
  refuses it; every decision is audited with the operator's identity.
- Whatever nobody decided in time is ended by a sweep: a step-up CANCELLED
  (AUTHORISATION_EXPIRED), a review REJECTED (REVIEW_EXPIRED). Every replica may sweep: each
  end is a guarded update of the decision and of the payment in one transaction, so a payment
  ends once, and the loser of a race changes nothing.

A waiting payment holds no money and reserves no position (nothing to undo when it ends);
it counts against the limits from the moment it was asked for, so racing payments cannot use
its allowance, and leaves them when it ends. Going on is the saga from its start (its hold is
asked for then; the funds may have gone meanwhile, and it is REJECTED as any payment would be).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from meshlib.audit import Actor
from meshlib.errors import FailedPrecondition, MeshError, NotFound
from meshlib.periodic import Periodic
from meshlib.storage import Transactions
from services.payment.adapters.audit import SAGA, audit_payment
from services.payment.domain import step_up
from services.payment.domain.payments import Payment, PaymentState
from services.payment.domain.risk import RiskOutcome
from services.payment.domain.saga import History, Outcome, RecordedStep, Step, StepRecord, opening, plan_for
from services.payment.metrics import record_payment_state, record_risk_resolution
from services.payment.ports import Clock, utc_now
from services.payment.risk_repository import StoredDecision
from services.payment.saga import SagaRunner, current_trace_id, traced
from services.payment.unit_of_work import PaymentUnitOfWork

log = logging.getLogger("services.payment.risk_review")

EXPIRED_STEP_UP = "AUTHORISATION_EXPIRED"
FAILED_STEP_UP = "AUTHORISATION_FAILED"
DECLINED_STEP_UP = "AUTHORISATION_DECLINED"
REFUSED_REVIEW = "REVIEW_REFUSED"
EXPIRED_REVIEW = "REVIEW_EXPIRED"


@dataclass(frozen=True)
class HeldPayment:
    """A payment and its risk decision (the review queue's and GetRiskDecision's answer)."""

    payment: Payment
    decision: StoredDecision


class RiskReview:
    """Confirm, approve, refuse, list and expire waiting payments."""

    def __init__(
        self,
        uow: type[PaymentUnitOfWork] | object,
        saga: SagaRunner,
        *,
        step_up_secret: bytes,
        lease: dt.timedelta,
        clock: Clock = utc_now,
    ) -> None:
        self._transactions = Transactions(uow, clock=clock)  # type: ignore[arg-type]
        self._saga = saga
        self._secret = step_up_secret
        self._lease = lease
        self._clock = clock

    # -- reading --------------------------------------------------------------------------

    async def held(self, payment_id: str) -> HeldPayment:
        """A payment with its risk decision (NOT_FOUND when it has none)."""

        async def read(uow: PaymentUnitOfWork) -> HeldPayment | None:
            payment, decision = await uow.payments.get(payment_id), await uow.risk.get(payment_id)
            return HeldPayment(payment, decision) if payment is not None and decision is not None else None

        found = await self._transactions.read(read)
        if found is None:
            raise NotFound("payment not found", metadata={"resource_name": f"payments/{payment_id}"})
        return found

    async def queue(self, after_id: str = "", limit: int = 50) -> list[HeldPayment]:
        """Payments held for review, oldest first."""

        async def read(uow: PaymentUnitOfWork) -> list[HeldPayment]:
            decisions = await uow.risk.waiting(RiskOutcome.REVIEW, after_id, limit)
            found = await uow.payments.get_many([d.payment_id for d in decisions])
            return [HeldPayment(found[d.payment_id], d) for d in decisions if d.payment_id in found]

        return await self._transactions.read(read)

    # -- the customer's step-up -----------------------------------------------------------

    async def confirm(self, payment_id: str, customer_id: str, code: str, actor: Actor) -> Payment:
        """The customer's one-time code: right, the payment goes on (its saga runs now); wrong,
        AUTHORISATION_CODE_INVALID (after MAX_ATTEMPTS wrong ones the payment is REJECTED)."""
        trace = current_trace_id()

        async def change(uow: PaymentUnitOfWork) -> tuple[str, Payment | None, int]:
            payment, decision = await uow.payments.get(payment_id), await uow.risk.get(payment_id)
            if payment is None or decision is None or payment.customer_id != customer_id:
                raise NotFound("payment not found", metadata={"resource_name": f"payments/{payment_id}"})
            if payment.state is not PaymentState.AWAITING_AUTHORISATION:
                return "not_waiting", payment, 0
            now = self._clock()
            if decision.expires_at <= now:
                return "expired", payment, 0
            if not step_up.code_matches(self._secret, payment, code):
                attempts = await uow.risk.count_failed_attempt(payment_id)
                if attempts >= step_up.MAX_ATTEMPTS:
                    await self._end(uow, payment, PaymentState.REJECTED, FAILED_STEP_UP, "failed", actor, trace, now)
                    return "failed", None, attempts
                return "wrong", None, attempts
            released = await self._release(uow, payment, "confirmed", actor, trace, now)
            return "released", released, 0

        with traced("payment.saga", payment_id):
            result, payment, attempts = await self._transactions.run(change)
            if result == "released":
                record_risk_resolution(payment.partner_id, "confirmed")  # type: ignore[union-attr]
                return await self._drive(payment)  # type: ignore[arg-type]
        if result == "wrong":
            raise FailedPrecondition(
                "the code does not match this payment",
                reason="AUTHORISATION_CODE_INVALID",
                metadata={"attempts_left": str(step_up.MAX_ATTEMPTS - attempts)},
            )
        if result == "failed":
            raise FailedPrecondition("too many wrong codes: the payment is rejected", reason=FAILED_STEP_UP)
        if result == "expired":
            raise FailedPrecondition("the time to confirm the payment is over", reason=EXPIRED_STEP_UP)
        assert payment is not None
        if payment.state is PaymentState.AWAITING_AUTHORISATION or payment.state.final or payment.state.waiting:
            raise FailedPrecondition("the payment is not awaiting authorisation", reason="PAYMENT_NOT_AWAITING")
        return payment  # confirmed before (a retry): as it is now

    async def to_authorise(self, customer_id: str, after_id: str = "", limit: int = 50) -> list[HeldPayment]:
        """The customer's payments awaiting their code, oldest first (what the bank's pages show)."""

        async def read(uow: PaymentUnitOfWork) -> list[HeldPayment]:
            decisions = await uow.risk.awaiting_customer(customer_id, after_id, limit)
            found = await uow.payments.get_many([d.payment_id for d in decisions])
            return [HeldPayment(found[d.payment_id], d) for d in decisions if d.payment_id in found]

        return await self._transactions.read(read)

    async def decline(self, payment_id: str, customer_id: str, actor: Actor) -> Payment:
        """The customer says no: CANCELLED AUTHORISATION_DECLINED (nothing was held). A payment
        declined before answers as it is; one that ended otherwise is PAYMENT_NOT_AWAITING."""
        trace = current_trace_id()

        async def change(uow: PaymentUnitOfWork) -> tuple[Payment, bool]:
            payment, decision = await uow.payments.get(payment_id), await uow.risk.get(payment_id)
            if payment is None or decision is None or payment.customer_id != customer_id:
                raise NotFound("payment not found", metadata={"resource_name": f"payments/{payment_id}"})
            if payment.state is not PaymentState.AWAITING_AUTHORISATION:
                return payment, False
            cancelled, now = PaymentState.CANCELLED, self._clock()
            return payment, await self._end(uow, payment, cancelled, DECLINED_STEP_UP, "declined", actor, trace, now)

        payment, ended = await self._transactions.run(change)
        if ended:
            record_risk_resolution(payment.partner_id, "declined")
            return (await self.held(payment_id)).payment
        if payment.status_reason == DECLINED_STEP_UP:
            return payment  # declined before: a retry
        raise FailedPrecondition(
            "the payment is not awaiting authorisation",
            reason="PAYMENT_NOT_AWAITING",
            metadata={"state": payment.state.name},
        )

    # -- the operators' review ------------------------------------------------------------

    async def approve(self, payment_id: str, operator: Actor, note: str = "") -> Payment:
        """The payment goes on: its saga runs now."""
        trace = current_trace_id()

        async def change(uow: PaymentUnitOfWork) -> Payment | None:
            payment = await self._reviewable(uow, payment_id, "approved")
            if payment is None:
                return None  # approved before: a retry
            return await self._release(uow, payment, "approved", operator, trace, self._clock(), note)

        with traced("payment.saga", payment_id):
            released = await self._transactions.run(change)
            if released is None:
                return (await self.held(payment_id)).payment
            record_risk_resolution(released.partner_id, "approved")
            return await self._drive(released)

    async def refuse(self, payment_id: str, operator: Actor, note: str = "") -> Payment:
        """The payment is REJECTED (REVIEW_REFUSED); nothing was held."""
        trace = current_trace_id()

        async def change(uow: PaymentUnitOfWork) -> str:
            payment = await self._reviewable(uow, payment_id, "refused")
            if payment is None:
                return ""  # refused before: a retry
            now = self._clock()
            await self._end(uow, payment, PaymentState.REJECTED, REFUSED_REVIEW, "refused", operator, trace, now, note)
            return payment.partner_id

        partner_id = await self._transactions.run(change)
        if partner_id:
            record_risk_resolution(partner_id, "refused")
        return (await self.held(payment_id)).payment

    async def _reviewable(self, uow: PaymentUnitOfWork, payment_id: str, resolution: str) -> Payment | None:
        """The held payment (None: it was decided ``resolution`` before)."""
        payment, decision = await uow.payments.get(payment_id), await uow.risk.get(payment_id)
        if payment is None or decision is None:
            raise NotFound("payment not found", metadata={"resource_name": f"payments/{payment_id}"})
        if decision.resolution == resolution and decision.decision.outcome is RiskOutcome.REVIEW:
            return None
        if payment.state is not PaymentState.PENDING_REVIEW or decision.resolution:
            raise FailedPrecondition(
                "the payment is not held for review",
                reason="PAYMENT_NOT_AWAITING",
                metadata={"state": payment.state.name},
            )
        return payment

    # -- expiry ---------------------------------------------------------------------------

    async def expire(self, limit: int = 100) -> int:
        """End what nobody decided in time; how many ended here."""
        trace = current_trace_id()
        ended: list[tuple[str, str]] = []

        async def change(uow: PaymentUnitOfWork) -> None:
            ended.clear()
            now = self._clock()
            for decision in await uow.risk.expired(now, limit):
                payment = await uow.payments.get(decision.payment_id)
                if payment is None:
                    continue
                if payment.state is PaymentState.AWAITING_AUTHORISATION:
                    to, reason, resolution = PaymentState.CANCELLED, EXPIRED_STEP_UP, "expired"
                elif payment.state is PaymentState.PENDING_REVIEW:
                    to, reason, resolution = PaymentState.REJECTED, EXPIRED_REVIEW, "expired"
                else:  # it ended otherwise (the partner cancelled it): the wait is over too
                    await uow.risk.resolve(payment.payment_id, payment.state.name.lower(), SAGA.subject, now)
                    continue
                if await self._end(uow, payment, to, reason, resolution, SAGA, trace, now):
                    ended.append((payment.partner_id, resolution))

        await self._transactions.run(change)
        for partner_id, resolution in ended:
            record_risk_resolution(partner_id, resolution)
        return len(ended)

    # -- the moves ------------------------------------------------------------------------

    async def _release(
        self,
        uow: PaymentUnitOfWork,
        payment: Payment,
        resolution: str,
        actor: Actor,
        trace: str,
        now: dt.datetime,
        note: str = "",
    ) -> Payment:
        """ACCEPTED with its opening records (its hold about to be asked for), the wait resolved."""
        if not await uow.risk.resolve(payment.payment_id, resolution, actor.subject, now, note):
            raise FailedPrecondition("the payment is not awaiting a decision", reason="PAYMENT_NOT_AWAITING")
        if not await uow.risk.release(payment.payment_id, payment.state, now, now + self._lease):
            raise FailedPrecondition("the payment is not awaiting a decision", reason="PAYMENT_NOT_AWAITING")
        records = opening(plan_for(payment))
        await uow.steps.add_many([RecordedStep(payment.payment_id, r, trace, now) for r in records])
        await uow.events.add_many([(payment, payment.state, PaymentState.ACCEPTED, "")], now)
        audit_payment(
            uow,
            f"payment.{resolution}",
            payment,
            payment.state,
            PaymentState.ACCEPTED,
            trace,
            actor=actor,
            extra={"note": note} if note else None,
        )
        stored = await uow.payments.get(payment.payment_id)
        assert stored is not None
        return stored

    async def _end(
        self,
        uow: PaymentUnitOfWork,
        payment: Payment,
        to: PaymentState,
        reason: str,
        resolution: str,
        actor: Actor,
        trace: str,
        now: dt.datetime,
        note: str = "",
    ) -> bool:
        """The wait ends without money moving: REJECTED or CANCELLED with ``reason``."""
        if not await uow.risk.resolve(payment.payment_id, resolution, actor.subject, now, note):
            return False
        if not await uow.payments.move(
            payment.payment_id, [payment.state], to, now, reason=reason, message=_MESSAGES[reason]
        ):
            raise FailedPrecondition("the payment is not awaiting a decision", reason="PAYMENT_NOT_AWAITING")
        await uow.steps.add_many(
            [RecordedStep(payment.payment_id, StepRecord(Step.CANCEL, Outcome.SUCCEEDED, reason), trace, now)]
        )
        await uow.events.add_many([(payment, payment.state, to, reason)], now)
        audit_payment(
            uow,
            f"payment.{resolution}",
            payment,
            payment.state,
            to,
            trace,
            reason=reason,
            actor=actor,
            extra={"note": note} if note else None,
        )
        record_payment_state(to.name)
        return True

    async def _drive(self, payment: Payment) -> Payment:
        """The released payment's saga, from its start (a lost driver is taken over by recovery)."""
        record_payment_state(PaymentState.ACCEPTED.name)
        try:
            return await self._saga.drive(payment, History(opening(plan_for(payment))))
        except MeshError:
            log.warning("a released payment's saga stopped; recovery takes it on", extra={"id": payment.payment_id})
            return (await self.held(payment.payment_id)).payment


_MESSAGES = {
    EXPIRED_STEP_UP: "the customer did not confirm the payment in time",
    FAILED_STEP_UP: "too many wrong authorisation codes",
    DECLINED_STEP_UP: "the customer declined the payment",
    REFUSED_REVIEW: "the bank refused the payment after review",
    EXPIRED_REVIEW: "the bank did not review the payment in time",
}


class RiskExpiryLoop:
    """Runs the expiry sweep every ``interval_seconds`` (0: never)."""

    def __init__(self, review: RiskReview, interval_seconds: float) -> None:
        self._review = review
        self._periodic = Periodic("payment-risk-expiry", interval_seconds, self._pass)

    async def start(self) -> None:
        """Start sweeping."""
        await self._periodic.start()

    async def stop(self) -> None:
        """Stop."""
        await self._periodic.stop()

    async def _pass(self) -> None:
        ended = await self._review.expire()
        if ended:
            log.info("waiting payments expired", extra={"count": ended})
