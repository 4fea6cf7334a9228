"""The ports payment's use cases call: interfaces they own, implemented by adapters.

The plain adapters (one call, one transaction per payment) and the fast ones (batch rpcs,
group commit, waves) implement the same ports; ``bootstrap.py`` chooses. Tests use
in-memory fakes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from meshlib.audit import Actor
from meshlib.auth.consent import ConsentView
from meshlib.storage import IdempotencyKey
from services.payment.domain.checks import LedgerAccountInfo, PartnerLimits
from services.payment.domain.payments import ParticipantInfo, Payment, PaymentState
from services.payment.domain.refunds import RefundRequest
from services.payment.domain.risk import IdentitySignals, PsuContext
from services.payment.domain.saga import History, StepRecord
from services.payment.domain.schedules import StandingOrder

Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    """The wall clock, in UTC."""
    return dt.datetime.now(dt.UTC)


class Ledger(Protocol):
    """The account service's ledger: the debtor's account, and the hold on its funds."""

    async def describe_account(self, account_id: str) -> LedgerAccountInfo: ...
    async def hold(self, payment: Payment) -> None: ...
    async def post(self, payment: Payment) -> None: ...
    async def void(self, payment: Payment) -> None: ...
    async def hold_state(self, payment: Payment) -> str | None: ...


class Positions(Protocol):
    """Settlement: the payment's obligation between participants, and its fee's (``{payment}-fee``,
    the wallet owes the bank), reserved, committed and released together; a refused reservation
    leaves neither reserved."""

    async def reserve(self, payment: Payment) -> None: ...
    async def commit(self, payment: Payment) -> None: ...
    async def release(self, payment: Payment) -> None: ...


class Participants(Protocol):
    """Settlement participants: the bank and the partners' wallets."""

    async def bank(self) -> ParticipantInfo: ...
    async def wallet(self, partner_id: str) -> ParticipantInfo: ...
    async def scheme(self) -> ParticipantInfo: ...


class IdentityRiskSignals(Protocol):
    """What identity knows of the customer lately (failed sign-ins, consent changes), for the
    risk decision. Answers within its deadline, or IdentitySignals() (unknown) by its fail policy."""

    async def recent(self, customer_id: str, consent_id: str) -> IdentitySignals: ...


class PartnerDirectory(Protocol):
    """Where a partner's payment limits come from (identity)."""

    async def limits(self, partner_id: str) -> PartnerLimits: ...


@dataclass(frozen=True, slots=True)
class Move:
    """A state change, guarded: it happens only if the payment is still in ``from_state``."""

    from_state: PaymentState
    to_state: PaymentState
    reason: str = ""
    message: str = ""


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """Saga progress of one payment, written in one go: step records, then state changes."""

    payment_id: str
    records: tuple[StepRecord, ...]
    moves: tuple[Move, ...] = ()
    trace_id: str = ""


class PaymentJournal(Protocol):
    """Where the saga's progress is kept: step records, state changes with their events, leases."""

    async def record(self, entry: JournalEntry) -> Payment:
        """Write the entry (and renew the driver's lease); the payment as stored."""
        ...

    async def request_funds(self, entry: JournalEntry) -> Payment | None:
        """Write the entry that asks for the payment's first money; None if it was cancelled first."""
        ...

    async def load(self, payment_id: str) -> tuple[Payment, History]:
        """A payment and its recorded steps."""
        ...

    async def claim(self, payment_id: str) -> bool:
        """Take over driving a payment whose driver's lease expired; False if someone drives it."""
        ...

    async def due_for_recovery(self, older_than: dt.timedelta | None, limit: int) -> list[str]:
        """Unfinished payments whose lease expired (optionally idle ``older_than``), oldest first."""
        ...

    async def park(self, payment_id: str, delay: dt.timedelta) -> None:
        """Let the payment's lease run out ``delay`` from now (a payment waiting for the scheme is
        asked again then), instead of the driver's whole lease."""
        ...

    async def awaiting_clearing(self, limit: int) -> list[str]:
        """Payments to other banks in flight whose lease expired (the status poller's), oldest first."""
        ...


# The methods whose request ids the register keeps (the scope of a key is the partner).
CREATE_METHOD = "CreatePayment"
CANCEL_METHOD = "CancelPayment"
REFUND_METHOD = "RefundPayment"
# A standing order's executions: the scheduler's keys, never a partner's (see domain.schedules).
STANDING_ORDER_METHOD = "StandingOrderExecution"
CREATE_STANDING_ORDER_METHOD = "CreateStandingOrder"
CANCEL_STANDING_ORDER_METHOD = "CancelStandingOrder"
OPERATOR_REFUND_METHOD = "OperatorRefundPayment"


@dataclass(frozen=True)
class Registration:
    """A new payment past the checks that need no database, ready to be recorded."""

    payment: Payment
    key: IdempotencyKey
    consent: ConsentView
    limits: PartnerLimits
    opening: tuple[StepRecord, ...]
    trace_id: str
    # Who asks (from the verified token): recorded in the audit trail by the group commit,
    # which writes many callers' payments in one transaction.
    actor: Actor | None = None
    # The risk signals gathered before the writers' queue (the customer's history is read in it).
    psu: PsuContext = field(default_factory=PsuContext)
    identity: IdentitySignals = field(default_factory=IdentitySignals)


@dataclass(frozen=True)
class RefundRegistration:
    """A refund checked against its original as read before, ready to be checked again and recorded."""

    refund: Payment
    request: RefundRequest
    key: IdempotencyKey
    opening: tuple[StepRecord, ...]
    trace_id: str
    actor: Actor | None = None


class PaymentRegister(Protocol):
    """Records new payments (limits checked in the writers' critical section) and cancels them."""

    async def record(self, registration: Registration) -> tuple[Payment, bool]:
        """Store the payment ACCEPTED with its opening records; (payment, created). A request id
        seen before answers its payment (created False); a limit refuses with a MeshError."""
        ...

    async def replay(self, key: IdempotencyKey) -> Payment | None:
        """The payment a CreatePayment request id answered before (REQUEST_ID_REUSED for another payload)."""
        ...

    async def cancel(
        self, payment_id: str, partner_id: str, consent_id: str, key: IdempotencyKey, trace_id: str
    ) -> Payment:
        """CANCELLED unless funds were asked for; a replay answers the same payment."""
        ...

    async def record_scheduled(
        self, payment: Payment, key: IdempotencyKey, trace_id: str, actor: Actor | None
    ) -> tuple[Payment, bool]:
        """Store a future-dated payment SCHEDULED (counted against nothing yet); a request id seen
        before answers its payment (created False)."""
        ...

    async def execute_scheduled(self, registration: Registration) -> tuple[Payment, bool]:
        """A due SCHEDULED payment, checked against the limits as they are now (where the writers
        queue): ACCEPTED with its opening records (True), or REJECTED with the refusal (False)."""
        ...

    async def refuse_scheduled(self, payment_id: str, reason: str, message: str, trace_id: str) -> Payment:
        """A SCHEDULED payment that will not execute (its consent ended, it was missed): REJECTED."""
        ...

    async def record_refused(
        self, payment: Payment, key: IdempotencyKey, reason: str, message: str, trace_id: str
    ) -> Payment:
        """A standing order's execution refused by its checks, stored REJECTED with the reason; a
        key seen before answers its payment."""
        ...

    async def refund_facts(self, original_id: str) -> tuple[Payment, int] | None:
        """A payment and what is left to refund of it; None when there is no such payment."""
        ...

    async def record_refund(self, registration: RefundRegistration) -> tuple[Payment, bool]:
        """Check the refund again against its original as it is now (refunds recorded meanwhile
        count) and store it ACCEPTED with its opening records; (refund, created). A request id
        seen before answers its refund (created False)."""
        ...


class Schedules(Protocol):
    """Standing orders, and what the scheduler finds due and takes (leases: one replica each)."""

    async def add_order(self, order: StandingOrder, key: IdempotencyKey, actor: Actor | None) -> StandingOrder:
        """Store a new order (a request id seen before answers its order)."""
        ...

    async def order(self, order_id: str) -> StandingOrder | None:
        """One order."""
        ...

    async def replay_order(self, key: IdempotencyKey) -> StandingOrder | None:
        """The order a CreateStandingOrder request id made before (REQUEST_ID_REUSED for another payload)."""
        ...

    async def orders_for_consent(
        self, partner_id: str, consent_id: str, before: tuple[dt.datetime, str] | None, limit: int
    ) -> list[StandingOrder]:
        """A consent's orders, newest first."""
        ...

    async def cancel_order(
        self, order_id: str, partner_id: str, consent_id: str, key: IdempotencyKey, actor: Actor | None
    ) -> StandingOrder:
        """CANCELLED (a cancelled one as it is; a completed one PAYMENT_NOT_CANCELLABLE)."""
        ...

    async def due_orders(self, now: dt.datetime, limit: int) -> list[str]:
        """Active orders with an execution due that no replica holds."""
        ...

    async def claim_order(self, order_id: str, now: dt.datetime, lease: dt.timedelta) -> bool:
        """Take an order's due execution for ``lease``."""
        ...

    async def advance_order(self, order: StandingOrder, executions_before: int) -> bool:
        """Save the order after its execution (unless another run did); frees the lease."""
        ...

    async def due_payments(self, now: dt.datetime, limit: int) -> list[str]:
        """SCHEDULED payments whose time has come that no replica holds."""
        ...

    async def claim_payment(self, payment_id: str, now: dt.datetime, lease: dt.timedelta) -> bool:
        """Take a due SCHEDULED payment's execution for ``lease``."""
        ...

    async def payment(self, payment_id: str) -> Payment | None:
        """One payment."""
        ...
