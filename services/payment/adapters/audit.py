"""Payments in the audit trail (meshlib.audit): created, cancelled, every state change, each
written in the transaction that makes it, with the payment, partner, consent and customer."""

from __future__ import annotations

from meshlib.audit import Actor
from services.payment.domain.payments import Payment, PaymentState
from services.payment.unit_of_work import PaymentUnitOfWork

# The saga moves payments on its own (for the caller, in a recovery pass, on a peer's answer).
SAGA = Actor("system", "system:payment")


def partner_of(payment: Payment) -> Actor:
    """The partner that initiated ``payment`` (its id comes from the verified token)."""
    return Actor(
        "partner",
        payment.partner_id,
        partner_id=payment.partner_id,
        customer_id=payment.customer_id or None,
        consent_id=payment.consent_id,
    )


def audit_payment(
    uow: PaymentUnitOfWork,
    action: str,
    payment: Payment,
    from_state: PaymentState | None,
    to_state: PaymentState,
    trace_id: str,
    *,
    reason: str = "",
    actor: Actor | None = None,
    extra: dict[str, object] | None = None,
) -> None:
    """Record ``payment`` moving from ``from_state`` (None: created) to ``to_state``."""
    details: dict[str, object] = {
        "amount_minor": payment.amount.minor_units,
        "currency": payment.amount.currency,
        "debtor_account": payment.debtor_account_id,
        "creditor_account": payment.creditor_account_id or "",
        "creditor_wallet": payment.creditor_wallet_partner_id or "",
        "to": to_state.name,
    }
    if from_state is not None:
        details["from"] = from_state.name
    if reason:
        details["reason"] = reason
    if extra:
        details.update(extra)
    uow.audit.record(
        action,
        f"payments/{payment.payment_id}",
        outcome=to_state.name,
        actor=actor,
        partner_id=payment.partner_id,
        consent_id=payment.consent_id,
        customer_id=payment.customer_id or None,
        payment_id=payment.payment_id,
        trace_id=trace_id or None,
        details=details,
    )
