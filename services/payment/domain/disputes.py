"""Disputes of settled payments and the split of their loss between the bank and a partner.

A customer (or the bank's operator for them) disputes a settled payment that is not itself a
refund, in one category. The dispute goes OPENED -> INVESTIGATING -> ACCEPTED | REJECTED
(OPENED may be decided at once); ACCEPTED and REJECTED are final.

Deadlines (the stated rule): a payment may be disputed up to ``filing_period`` after it was
settled; the bank decides within ``decision_period`` of the opening. A dispute nobody decided
by then is ACCEPTED: the customer is never left waiting on the bank.

An accepted dispute refunds the customer its disputed amount (the whole payment, or less for
a wrong amount). The loss is split by the partner's risk-sharing agreement: the partner bears
``share_bps`` basis points of the amount, rounded down, and the bank the rest, so the
rounding remainder is always the bank's and the partner never pays more than it agreed.

Plain Python: no gRPC, no SQL.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from dataclasses import dataclass

from meshlib.errors import FailedPrecondition, InvalidArgument
from meshlib.money import Amount
from services.payment.domain.payments import Payment, PaymentState

BASIS_POINTS = 10_000
DEFAULT_FILING_PERIOD = dt.timedelta(days=120)
DEFAULT_DECISION_PERIOD = dt.timedelta(days=30)
# The ISO 20022 return reason each category's refund carries.
RETURN_REASON_BY_CATEGORY = {"FRAUD": "FRAD", "NOT_RECEIVED": "UPAY", "WRONG_AMOUNT": "CUST"}


class DisputeCategory(enum.Enum):
    """Why the customer disputes the payment."""

    FRAUD = "FRAUD"
    NOT_RECEIVED = "NOT_RECEIVED"
    WRONG_AMOUNT = "WRONG_AMOUNT"


class DisputeState(enum.Enum):
    """Where the dispute is."""

    OPENED = "OPENED"
    INVESTIGATING = "INVESTIGATING"
    ACCEPTED = "ACCEPTED"
    REJECTED = "REJECTED"

    @property
    def final(self) -> bool:
        """Decided: nothing changes any more."""
        return self in (DisputeState.ACCEPTED, DisputeState.REJECTED)


_TRANSITIONS = {
    DisputeState.OPENED: frozenset({DisputeState.INVESTIGATING, DisputeState.ACCEPTED, DisputeState.REJECTED}),
    DisputeState.INVESTIGATING: frozenset({DisputeState.ACCEPTED, DisputeState.REJECTED}),
    DisputeState.ACCEPTED: frozenset(),
    DisputeState.REJECTED: frozenset(),
}


@dataclass(frozen=True, slots=True)
class RiskSharing:
    """A partner's risk-sharing agreement: its share of an accepted dispute's loss, per category,
    in basis points (0..10000). No agreement: the bank bears every loss."""

    fraud_bps: int = 0
    not_received_bps: int = 0
    wrong_amount_bps: int = 0

    def share_bps(self, category: DisputeCategory) -> int:
        """The partner's share of a loss in ``category``."""
        return {
            DisputeCategory.FRAUD: self.fraud_bps,
            DisputeCategory.NOT_RECEIVED: self.not_received_bps,
            DisputeCategory.WRONG_AMOUNT: self.wrong_amount_bps,
        }[category]


@dataclass(frozen=True, slots=True)
class LossSplit:
    """Who bears an accepted dispute's amount, in minor units; the two add up to it exactly."""

    partner_minor: int
    bank_minor: int


def split_loss(amount_minor: int, share_bps: int) -> LossSplit:
    """The partner's ``share_bps`` of ``amount_minor`` rounded down; the bank the remainder."""
    if amount_minor < 0 or not 0 <= share_bps <= BASIS_POINTS:
        raise ValueError("amount must not be negative and the share must be 0..10000 basis points")
    partner = amount_minor * share_bps // BASIS_POINTS
    return LossSplit(partner_minor=partner, bank_minor=amount_minor - partner)


@dataclass(frozen=True)
class Dispute:
    """A dispute of a settled payment."""

    dispute_id: str
    payment_id: str
    partner_id: str
    customer_id: str
    category: DisputeCategory
    amount: Amount
    description: str
    state: DisputeState
    opened_by: str  # "customer" or "operator"
    created_at: dt.datetime
    updated_at: dt.datetime
    decide_by: dt.datetime
    decision_note: str = ""
    # Once accepted: the split, and the refunds that paid the customer (one per non-zero share).
    partner_share_minor: int = 0
    bank_share_minor: int = 0
    refund_payment_ids: tuple[str, ...] = ()

    def moved(self, to: DisputeState, now: dt.datetime, note: str = "") -> Dispute:
        """This dispute in ``to``; DISPUTE_ALREADY_DECIDED (or a wrong move) as a precondition."""
        if to not in _TRANSITIONS[self.state]:
            raise FailedPrecondition(
                f"the dispute is {self.state.name} and cannot become {to.name}",
                reason="DISPUTE_ALREADY_DECIDED" if self.state.final else "INVALID_STATE_TRANSITION",
                metadata={"state": self.state.name},
            )
        return dataclasses.replace(self, state=to, updated_at=now, decision_note=note[:500] or self.decision_note)

    def overdue(self, now: dt.datetime) -> bool:
        """Undecided past its decision deadline (then it is accepted)."""
        return not self.state.final and now >= self.decide_by


@dataclass(frozen=True)
class DisputeRequest:
    """What opening a dispute asks for: ``amount`` None means the whole payment."""

    payment_id: str
    category: DisputeCategory
    amount: Amount | None
    description: str
    opened_by: str
    # The customer disputing (their own payments only); None: the bank's operator.
    customer_id: str | None = None


@dataclass(frozen=True, slots=True)
class DisputeDeadlines:
    """The filing and decision periods (settings)."""

    filing_period: dt.timedelta = DEFAULT_FILING_PERIOD
    decision_period: dt.timedelta = DEFAULT_DECISION_PERIOD


def open_dispute(
    payment: Payment,
    request: DisputeRequest,
    refundable_minor: int,
    deadlines: DisputeDeadlines,
    dispute_id: str,
    now: dt.datetime,
) -> Dispute:
    """The new OPENED dispute of ``payment``, or why it cannot be disputed."""
    if payment.state is not PaymentState.SETTLED or payment.is_refund:
        raise FailedPrecondition(
            "only a settled payment that is not a refund can be disputed",
            reason="PAYMENT_NOT_DISPUTABLE",
            metadata={"state": payment.state.name},
        )
    if now - payment.updated_at > deadlines.filing_period:
        raise FailedPrecondition(
            f"a payment can be disputed up to {deadlines.filing_period.days} days after it settled",
            reason="DISPUTE_FILING_PERIOD_OVER",
        )
    amount = request.amount or Amount(payment.amount.currency, refundable_minor)
    if amount.currency != payment.amount.currency:
        raise InvalidArgument.field(
            "amount.currency_code", "must be the payment's currency", reason="CURRENCY_MISMATCH"
        )
    if request.category is not DisputeCategory.WRONG_AMOUNT and request.amount is not None:
        if amount.minor_units != payment.amount.minor_units:
            raise InvalidArgument.field("amount", "only a WRONG_AMOUNT dispute disputes less than the payment")
    if amount.minor_units <= 0 or amount.minor_units > refundable_minor:
        raise FailedPrecondition(
            f"at most {refundable_minor} minor units of the payment are left to dispute",
            reason="REFUND_AMOUNT_EXCEEDED",
            metadata={"refundable_minor": str(refundable_minor)},
        )
    return Dispute(
        dispute_id=dispute_id,
        payment_id=payment.payment_id,
        partner_id=payment.partner_id,
        customer_id=payment.customer_id,
        category=request.category,
        amount=amount,
        description=request.description[:500],
        state=DisputeState.OPENED,
        opened_by=request.opened_by,
        created_at=now,
        updated_at=now,
        decide_by=now + deadlines.decision_period,
    )


def accepted(dispute: Dispute, agreement: RiskSharing, now: dt.datetime, note: str = "") -> Dispute:
    """``dispute`` ACCEPTED with its loss split by ``agreement`` (the refunds come after)."""
    split = split_loss(dispute.amount.minor_units, agreement.share_bps(dispute.category))
    moved = dispute.moved(DisputeState.ACCEPTED, now, note)
    return dataclasses.replace(moved, partner_share_minor=split.partner_minor, bank_share_minor=split.bank_minor)


def refund_key(dispute_id: str, bearer: str) -> str:
    """The request id of the refund that pays the customer ``bearer``'s share ("partner" or
    "bank"): derived from the dispute, so a decision retried after a crash refunds once."""
    return f"dispute-{dispute_id}-{bearer}"
