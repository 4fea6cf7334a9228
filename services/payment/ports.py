"""The ports payment's use cases call: interfaces they own, implemented by adapters.

The plain adapters (one call, one transaction per payment) and the fast ones (batch rpcs,
group commit, waves) implement the same ports; ``bootstrap.py`` chooses. Tests use
in-memory fakes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from meshlib.audit import Actor
from meshlib.auth.consent import ConsentView
from meshlib.storage import IdempotencyKey
from services.payment.domain.checks import LedgerAccountInfo, PartnerLimits
from services.payment.domain.payments import ParticipantInfo, Payment, PaymentState
from services.payment.domain.refunds import RefundRequest
from services.payment.domain.saga import History, StepRecord

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
    """Settlement: the payment's obligation between participants."""

    async def reserve(self, payment: Payment) -> None: ...
    async def commit(self, payment: Payment) -> None: ...
    async def release(self, payment: Payment) -> None: ...


class Participants(Protocol):
    """Settlement participants: the bank and the partners' wallets."""

    async def bank(self) -> ParticipantInfo: ...
    async def wallet(self, partner_id: str) -> ParticipantInfo: ...


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


# The methods whose request ids the register keeps (the scope of a key is the partner).
CREATE_METHOD = "CreatePayment"
CANCEL_METHOD = "CancelPayment"
REFUND_METHOD = "RefundPayment"
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

    async def refund_facts(self, original_id: str) -> tuple[Payment, int] | None:
        """A payment and what is left to refund of it; None when there is no such payment."""
        ...

    async def record_refund(self, registration: RefundRegistration) -> tuple[Payment, bool]:
        """Check the refund again against its original as it is now (refunds recorded meanwhile
        count) and store it ACCEPTED with its opening records; (refund, created). A request id
        seen before answers its refund (created False)."""
        ...
