"""The scheduler: runs due future-dated payments and standing orders' executions.

Each pass finds what is due, takes each item with a lease (so of several replicas one runs
it), and executes it:

- a SCHEDULED payment is checked as a new payment would be (the consent still authorised and
  granting SCHEDULE_PAYMENTS, the debtor account, the limits as they are now) and goes on to
  ACCEPTED and its saga, or to REJECTED with the reason;
- a standing order's next execution becomes a payment made through CreatePayment with the
  key ``so-<order>-<n>``: whoever runs execution ``n``, and however often after a crash, it
  makes one payment; only then is the order advanced (a guarded update), and a run that died
  in between makes the same payment again (its key) and advances then.

An execution found more than the catch-up window late does not run: it is recorded REJECTED
``EXECUTION_WINDOW_MISSED``. A failure that says nothing (a peer down) leaves the item to the
next pass once the lease runs out.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import logging
from dataclasses import dataclass

from meshlib.auth.consent import ConsentLookup
from meshlib.errors import MeshError
from meshlib.periodic import Periodic
from meshlib.storage import IdempotencyKey
from services.payment.adapters.audit import SAGA
from services.payment.create_payment import CreatePaymentHandler, NewPayment, refused_execution
from services.payment.domain import checks, schedules
from services.payment.domain.payments import PaymentState
from services.payment.domain.saga import TRANSIENT_REASONS, History, opening, plan_for
from services.payment.domain.schedules import OrderState, StandingOrder
from services.payment.ports import Clock, Ledger, PartnerDirectory, PaymentRegister, Registration, Schedules, utc_now
from services.payment.saga import Failpoint, SagaRunner, current_trace_id, traced

log = logging.getLogger("services.payment.scheduler")
EXECUTE_METHOD = "ScheduledExecution"


def _transient(error: MeshError) -> bool:
    return error.reason in TRANSIENT_REASONS or error.reason == ""


@dataclass
class SchedulerPass:
    """What one pass did."""

    payments: int = 0
    executions: int = 0
    missed: int = 0


class Scheduler:
    """Executes what is due; the same code on every replica (leases keep them apart)."""

    def __init__(
        self,
        *,
        store: Schedules,
        create: CreatePaymentHandler,
        consents: ConsentLookup,
        ledger: Ledger,
        partners: PartnerDirectory,
        register: PaymentRegister,
        saga: SagaRunner,
        lease: dt.timedelta,
        catch_up: dt.timedelta = schedules.DEFAULT_CATCH_UP,
        clock: Clock = utc_now,
        failpoint: Failpoint | None = None,
    ) -> None:
        self._store = store
        self._create = create
        self._consents = consents
        self._ledger = ledger
        self._partners = partners
        self._register = register
        self._saga = saga
        self._lease = lease
        self._catch_up = catch_up
        self._clock = clock
        self._failpoint = failpoint or (lambda point: None)

    def with_clock(self, clock: Clock, failpoint: Failpoint | None = None) -> Scheduler:
        """The same scheduler on another clock (a sandbox's, a test's)."""
        twin = copy.copy(self)
        twin._clock = clock
        if failpoint is not None:
            twin._failpoint = failpoint
        return twin

    async def run_pass(self, batch: int = 100) -> SchedulerPass:
        """Every due item once (those another replica holds are left to it)."""
        done = SchedulerPass()
        now = self._clock()
        for payment_id in await self._store.due_payments(now, batch):
            if await self._store.claim_payment(payment_id, now, self._lease):
                self._failpoint("after_execution_claimed")
                await self._execute_payment(payment_id, done)
        for order_id in await self._store.due_orders(now, batch):
            # An order with several executions due (after downtime) runs them in order, one a claim.
            while await self._store.claim_order(order_id, self._clock(), self._lease):
                self._failpoint("after_execution_claimed")
                if not await self._execute_order(order_id, done):
                    break
        return done

    async def _execute_payment(self, payment_id: str, done: SchedulerPass) -> None:
        payment = await self._store.payment(payment_id)
        if payment is None or payment.state is not PaymentState.SCHEDULED:
            return
        assert payment.requested_execution_at is not None
        now = self._clock()
        trace = current_trace_id()
        if schedules.missed(payment.requested_execution_at, now, self._catch_up):
            await self._register.refuse_scheduled(payment_id, schedules.MISSED_REASON, "executed too late", trace)
            done.missed += 1
            return
        try:
            consent = await self._consents.get(payment.consent_id, partner_id=payment.partner_id)
            checks.check_consent(consent, payment.debtor_account_id, now)
            checks.check_schedule_permission(consent, now)
            debtor = await self._ledger.describe_account(payment.debtor_account_id)
            checks.check_debtor_account(debtor, consent, payment.amount)
            limits = await self._partners.limits(payment.partner_id)
        except MeshError as refused:
            if _transient(refused):
                raise
            await self._register.refuse_scheduled(payment_id, refused.reason, str(refused), trace)
            done.payments += 1
            return
        with traced("payment.saga", payment_id):
            records = opening(plan_for(payment))
            key = IdempotencyKey(payment.partner_id, EXECUTE_METHOD, payment_id, payment_id)
            registration = Registration(payment, key, consent, limits, records, current_trace_id(), SAGA)
            stored, accepted = await self._register.execute_scheduled(registration)
            self._failpoint("after_execution_made")
            done.payments += 1
            if accepted:
                await self._saga.drive(stored, History(records))

    async def _execute_order(self, order_id: str, done: SchedulerPass) -> bool:
        """Run the order's next execution and advance it; False when nothing more is due."""
        order = await self._store.order(order_id)
        if order is None or order.state is not OrderState.ACTIVE:
            return False
        number, due = order.next_number, order.next_execution_at
        now = self._clock()
        if due is None or due > now:
            return False
        new = _execution(order, number)
        if schedules.missed(due, now, self._catch_up):
            await self._register.record_refused(
                refused_execution(order.partner_id, order.consent_id, new, now),
                IdempotencyKey(order.partner_id, new.method, new.request_id, new.fingerprint),
                schedules.MISSED_REASON,
                "executed too late",
                current_trace_id(),
            )
            done.missed += 1
        else:
            payment = await self._create(order.partner_id, order.consent_id, new)
            log.info(
                "standing order executed",
                extra={"standing_order": order_id, "execution": number, "state": payment.state.name},
            )
            done.executions += 1
        self._failpoint("after_execution_made")
        return await self._store.advance_order(order.executed(number, self._clock()), number - 1)


def _execution(order: StandingOrder, number: int) -> NewPayment:
    """Execution ``number`` of ``order`` as a CreatePayment request with the order's key."""
    request_id = schedules.execution_request_id(order.order_id, number)
    return NewPayment(
        request_id=request_id,
        fingerprint=request_id,
        debtor_account_id=order.debtor_account_id,
        creditor_account_id=order.creditor_account_id,
        creditor_wallet_partner_id=order.creditor_wallet_partner_id,
        amount=order.amount,
        payment_type=order.payment_type,
        remittance_information=order.remittance_information,
        standing_order_id=order.order_id,
        execution_number=number,
        customer_id=order.customer_id,
    )


class SchedulerLoop:
    """Runs the scheduler every ``interval`` seconds (0: never)."""

    def __init__(self, scheduler: Scheduler, interval_seconds: float) -> None:
        self._scheduler = scheduler
        self._periodic = Periodic("payment-scheduler", interval_seconds, self._pass)

    async def start(self) -> None:
        """Start the loop."""
        await self._periodic.start()

    async def stop(self) -> None:
        """Stop; an interrupted execution is taken again once its lease runs out."""
        await self._periodic.stop()

    async def _pass(self) -> None:
        try:
            result = await self._scheduler.run_pass()
        except MeshError as error:  # a peer down: the items' leases run out, the next pass retries
            log.warning("scheduler pass failed", extra={"reason": error.reason})
            return
        if result.payments or result.executions or result.missed:
            log.info("scheduler pass", extra=dataclasses.asdict(result))
