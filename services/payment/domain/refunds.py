"""Refunds: which payments may be refunded, how much is left, and the refund payment itself.

A refund is a payment of its own (type REFUND) running the same saga as any payment, with
the money going back: its debtor is the original's creditor account (a wallet's settlement
account for a top-up), its creditor the original debtor account, and its settlement payer
and payee are the original's swapped. The refunds of a payment never add up to more than
it; refunds that were rejected or cancelled moved nothing and do not count.

Plain Python: no gRPC, no SQL.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from meshlib.errors import FailedPrecondition, InvalidArgument
from meshlib.money import Amount
from services.payment.domain.payments import Payment, PaymentState

REFUND_TYPE = "REFUND"
# The payment types a partner may refund itself: the money comes back out of its own wallet.
PARTNER_REFUNDABLE_TYPES = frozenset({"WALLET_TOP_UP"})
# ISO 20022 ExternalReturnReason1Code values a refund may carry.
RETURN_REASONS: dict[str, str] = {
    "CUST": "requested by the customer",
    "DUPL": "duplicate payment",
    "FRAD": "fraudulent origin",
    "TECH": "technical problem",
    "UPAY": "undue payment",
    "AM05": "duplication",
    "MD06": "refund requested by the end customer",
    "FOCR": "following a cancellation request",
}
# Refunds in these states moved no money and never will: they leave the amount refundable.
_NOT_COUNTED = frozenset({PaymentState.REJECTED, PaymentState.CANCELLED})


def counts_against_original(refund_state: PaymentState) -> bool:
    """A refund in flight or settled uses up part of what may be refunded."""
    return refund_state not in _NOT_COUNTED


def refundable_minor(original: Payment, refund_amounts: Iterable[tuple[PaymentState, int]]) -> int:
    """What is left to refund of ``original``, given its refunds' states and amounts."""
    used = sum(amount for state, amount in refund_amounts if counts_against_original(state))
    return max(0, original.amount.minor_units - used)


def check_return_reason(reason: str, *, from_scheme: bool = False) -> None:
    """INVALID_ARGUMENT naming ``reason`` unless it is a known return reason code (a return from
    the clearing scheme, pacs.004, carries the scheme's own code: any ISO 20022 code shape)."""
    if from_scheme and len(reason) == 4 and reason.isalnum() and reason.isupper():
        return
    if reason not in RETURN_REASONS:
        raise InvalidArgument.field("reason", f"must be one of {', '.join(sorted(RETURN_REASONS))}")


@dataclass(frozen=True, slots=True)
class RefundSource:
    """Where a refund's money comes from instead of the original's creditor: an accepted
    dispute's share (services/payment/disputes.py), out of the partner's wallet settlement
    account (payer the wallet, payee the bank: an obligation in the settlement window) or out
    of the bank's dispute-loss account (no participants: no obligation)."""

    debtor_account_id: str
    payer_participant_id: str = ""
    payee_participant_id: str = ""
    # The kind of the refund's settlement obligation (LOSS_SHARE: the partner's share).
    obligation_kind: str = "PAYMENT"


@dataclass(frozen=True)
class RefundRequest:
    """What a refund asks for: ``amount`` None means all that is left."""

    original_payment_id: str
    amount: Amount | None
    reason: str
    remittance_information: str = ""
    # None: the bank's operator (any type of payment); else the partner asking (its own).
    partner_id: str | None = None
    # None: back the way the money came (the original's creditor pays).
    source: RefundSource | None = None


def check_refundable(original: Payment, request: RefundRequest, refundable: int) -> Amount:
    """The amount to refund, or why ``original`` cannot be refunded so."""
    if original.state is not PaymentState.SETTLED or original.is_refund:
        raise FailedPrecondition(
            "only a settled payment that is not itself a refund can be refunded",
            reason="PAYMENT_NOT_REFUNDABLE",
            metadata={"state": original.state.name},
        )
    if request.partner_id is not None and original.payment_type not in PARTNER_REFUNDABLE_TYPES:
        raise FailedPrecondition(
            "a partner refunds payments to its own wallet; the bank refunds payments to its accounts",
            reason="PAYMENT_NOT_REFUNDABLE",
            metadata={"state": original.state.name},
        )
    amount = request.amount or Amount(original.amount.currency, refundable)
    if amount.currency != original.amount.currency:
        raise InvalidArgument.field(
            "amount.currency_code", "must be the payment's currency", reason="CURRENCY_MISMATCH"
        )
    if amount.minor_units <= 0 or amount.minor_units > refundable:
        raise FailedPrecondition(
            f"at most {refundable} minor units are left to refund",
            reason="REFUND_AMOUNT_EXCEEDED",
            metadata={"refundable_minor": str(refundable)},
        )
    return amount


def refund_of(original: Payment, request: RefundRequest, amount: Amount, refund_id: str, now: dt.datetime) -> Payment:
    """The refund payment, RECEIVED: the original's money going back the way it came (or out
    of the request's source)."""
    source = request.source or RefundSource(
        original.creditor_ledger_account_id, original.payee_participant_id, original.payer_participant_id
    )
    return Payment(
        payment_id=refund_id,
        partner_id=original.partner_id,
        consent_id=original.consent_id,
        debtor_account_id=source.debtor_account_id,
        creditor_account_id=original.debtor_account_id,
        creditor_wallet_partner_id=None,
        amount=amount,
        payment_type=REFUND_TYPE,
        state=PaymentState.RECEIVED,
        created_at=now,
        updated_at=now,
        remittance_information=request.remittance_information,
        customer_id=original.customer_id,
        creditor_ledger_account_id=original.debtor_account_id,
        payer_participant_id=source.payer_participant_id,
        payee_participant_id=source.payee_participant_id,
        original_payment_id=original.payment_id,
        return_reason=request.reason,
        obligation_kind=source.obligation_kind,
    )
