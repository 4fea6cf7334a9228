"""Payments as the domain sees them: ISO 20022 states and the transitions between them."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from dataclasses import dataclass

from meshlib.money import Amount


class PaymentState(enum.Enum):
    """ISO 20022 payment status, with the code partners see."""

    RECEIVED = "RCVD"
    ACCEPTED = "ACTC"
    SETTLEMENT_IN_PROCESS = "ACSP"
    SETTLED = "ACSC"
    REJECTED = "RJCT"
    CANCELLED = "CANC"
    # A future-dated payment waiting for its time (ISO 20022 "pending").
    SCHEDULED = "PDNG"
    # The risk decision asked the customer to confirm it (step-up): ISO 20022 "partially
    # accepted technical correct", as the Berlin Group uses it for "awaiting authorisation".
    AWAITING_AUTHORISATION = "PATC"
    # The risk decision held it for the bank's operators (no ISO 20022 code of its own).
    PENDING_REVIEW = "RVWP"

    @property
    def final(self) -> bool:
        """No further change can happen."""
        return self in _FINAL

    @property
    def waiting(self) -> bool:
        """Not in the saga: waiting for its time, the customer or an operator (nothing held)."""
        return self in WAITING


_FINAL = frozenset({PaymentState.SETTLED, PaymentState.REJECTED, PaymentState.CANCELLED})
WAITING = frozenset({PaymentState.SCHEDULED, PaymentState.AWAITING_AUTHORISATION, PaymentState.PENDING_REVIEW})

# Allowed transitions of the saga; anything else is a bug, not a state.
TRANSITIONS: dict[PaymentState, frozenset[PaymentState]] = {
    PaymentState.SCHEDULED: frozenset({PaymentState.ACCEPTED, PaymentState.REJECTED, PaymentState.CANCELLED}),
    PaymentState.RECEIVED: frozenset(
        {
            PaymentState.ACCEPTED,
            PaymentState.REJECTED,
            PaymentState.CANCELLED,
            PaymentState.AWAITING_AUTHORISATION,
            PaymentState.PENDING_REVIEW,
        }
    ),
    # Confirmed (or approved): the saga starts; refused, or not confirmed in time: no money moved.
    PaymentState.AWAITING_AUTHORISATION: frozenset(
        {PaymentState.ACCEPTED, PaymentState.REJECTED, PaymentState.CANCELLED}
    ),
    PaymentState.PENDING_REVIEW: frozenset({PaymentState.ACCEPTED, PaymentState.REJECTED, PaymentState.CANCELLED}),
    PaymentState.ACCEPTED: frozenset(
        {PaymentState.SETTLEMENT_IN_PROCESS, PaymentState.REJECTED, PaymentState.CANCELLED}
    ),
    PaymentState.SETTLEMENT_IN_PROCESS: frozenset({PaymentState.SETTLED, PaymentState.REJECTED}),
    PaymentState.SETTLED: frozenset(),
    PaymentState.REJECTED: frozenset(),
    PaymentState.CANCELLED: frozenset(),
}


def can_move(current: PaymentState, target: PaymentState) -> bool:
    """True when the saga may move a payment from ``current`` to ``target``."""
    return target in TRANSITIONS[current]


class IllegalTransition(Exception):
    """A move the state machine does not have: a bug, never a partner's mistake."""


@dataclass(frozen=True, slots=True)
class ExternalCreditor:
    """The creditor of a payment to another bank: its account in the scheme (an IBAN in
    electronic format, or an identifier of the scheme's own), its name and its bank's BIC."""

    account: str
    account_kind: str  # "IBAN" or "SCHEME"
    name: str
    agent_bic: str


EXTERNAL_TRANSFER_TYPE = "EXTERNAL_TRANSFER"


@dataclass(frozen=True)
class Payment:
    """A payment initiated by a partner under a consent."""

    payment_id: str
    partner_id: str
    consent_id: str
    debtor_account_id: str
    creditor_account_id: str | None
    creditor_wallet_partner_id: str | None
    amount: Amount
    payment_type: str
    state: PaymentState
    created_at: dt.datetime
    updated_at: dt.datetime
    status_reason: str = ""
    status_reason_message: str = ""
    remittance_information: str = ""
    end_to_end_id: str = ""
    customer_id: str = ""
    # Where the ledger credits the money: the creditor account, or the wallet's settlement account.
    creditor_ledger_account_id: str = ""
    # Settlement participants (payer = the bank, payee = the wallet) when money crosses to a
    # partner; both empty when the payment stays inside the bank (no obligation).
    payer_participant_id: str = ""
    payee_participant_id: str = ""
    # A refund: the payment it refunds and its ISO 20022 return reason code.
    original_payment_id: str = ""
    return_reason: str = ""
    # A future-dated payment: when it was asked to execute (it counts against the limits of
    # that moment's day and period).
    requested_execution_at: dt.datetime | None = None
    # An execution of a standing order: the order and which execution (1 for the first).
    standing_order_id: str = ""
    execution_number: int = 0
    # The fee the partner pays the bank for this payment (same currency; 0: none), fixed when
    # the payment is created and never recomputed: a ledger leg from the partner's wallet
    # settlement account to the bank's fee-income account, held, posted and voided linked with
    # the payment's own, and an obligation wallet -> bank committed with the payment's.
    fee_minor: int = 0
    fee_debit_account_id: str = ""
    fee_credit_account_id: str = ""
    fee_payer_participant_id: str = ""
    fee_payee_participant_id: str = ""
    # A payment to another bank (EXTERNAL_TRANSFER): its creditor there. The ledger credits the
    # bank's clearing account at the scheme; the bank owes the scheme participant in settlement.
    external_creditor: ExternalCreditor | None = None
    # The kind of its settlement obligation: PAYMENT, or LOSS_SHARE for an accepted dispute's
    # share the partner bears (a refund out of its wallet; the report shows it apart).
    obligation_kind: str = "PAYMENT"
    # Read models only (GetPayment, ListPayments): this payment's refunds, oldest first.
    refunds: tuple[RefundLink, ...] = ()

    @property
    def is_refund(self) -> bool:
        """A refund of an earlier payment (it counts against no limit)."""
        return bool(self.original_payment_id)

    @property
    def needs_settlement(self) -> bool:
        """True when the payment moves value between settlement participants."""
        return bool(self.payer_participant_id and self.payee_participant_id)

    @property
    def has_fee(self) -> bool:
        """True when the payment carries a fee leg (and the fee's obligation)."""
        return self.fee_minor > 0

    @property
    def fee(self) -> Amount:
        """The fee, in the payment's currency."""
        return Amount(self.amount.currency, self.fee_minor)

    @property
    def is_external(self) -> bool:
        """A payment to another bank, through the clearing scheme."""
        return self.external_creditor is not None

    @property
    def beneficiary(self) -> str:
        """A stable key of who receives the money (for the new-beneficiary rule)."""
        if self.external_creditor is not None:
            return f"scheme/{self.external_creditor.account}"
        if self.creditor_account_id:
            return f"accounts/{self.creditor_account_id}"
        return f"partners/{self.creditor_wallet_partner_id}"

    def recorded_at(self, now: dt.datetime) -> Payment:
        """This new payment stamped with the moment it is recorded."""
        return dataclasses.replace(self, created_at=now, updated_at=now)

    def moved(self, to: PaymentState, now: dt.datetime, reason: str = "", message: str = "") -> Payment:
        """This payment in state ``to`` (with the status reason of a rejection)."""
        if not can_move(self.state, to):
            raise IllegalTransition(f"{self.state.name} -> {to.name}")
        return dataclasses.replace(
            self, state=to, updated_at=now, status_reason=reason, status_reason_message=message[:256]
        )

    def stuck(self, now: dt.datetime, older_than: dt.timedelta) -> bool:
        """In the middle of the saga for longer than ``older_than`` (a scheduled one is waiting)."""
        in_saga = not self.state.final and not self.state.waiting
        return in_saga and now - self.updated_at >= older_than

    @property
    def spending_moment(self) -> dt.datetime:
        """The moment whose day and period the payment counts against."""
        return self.requested_execution_at or self.created_at


@dataclass(frozen=True, slots=True)
class RefundLink:
    """A refund as its original shows it."""

    payment_id: str
    state: PaymentState
    amount_minor: int


@dataclass(frozen=True)
class ParticipantInfo:
    """A settlement participant as the payment service needs it."""

    participant_id: str
    partner_id: str
    is_bank: bool
    settlement_account_id: str
    is_scheme: bool = False
