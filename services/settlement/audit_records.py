"""Settlement's changes in the audit trail (meshlib.audit), each noted in the transaction that
makes it: participants and their caps, obligations (money reserved, committed, released) and
windows closed and settled. Who is the verified caller (an operator, or the payment service)."""

from __future__ import annotations

from services.settlement.domain.obligations import Obligation
from services.settlement.domain.participants import Participant
from services.settlement.unit_of_work import SettlementUnitOfWork


def audit_participant(uow: SettlementUnitOfWork, action: str, participant: Participant) -> None:
    """A participant registered, its cap changed, or its status."""
    uow.audit.record(
        action,
        f"participants/{participant.id}",
        outcome=participant.status.value,
        partner_id=participant.partner_id,
        details={
            "type": participant.type.value,
            "caps": {currency: cap.cap_minor for currency, cap in sorted(participant.caps.items())},
        },
    )


def audit_obligation(uow: SettlementUnitOfWork, action: str, obligation: Obligation) -> None:
    """An obligation reserved, committed into a window, or released (its id is the payment's)."""
    uow.audit.record(
        action,
        f"obligations/{obligation.id}",
        outcome=obligation.state.value,
        payment_id=obligation.id,
        details={
            "payer": obligation.payer_id,
            "payee": obligation.payee_id,
            "amount_minor": obligation.amount_minor,
            "currency": obligation.currency,
            "window": obligation.window_id or "",
        },
    )


def audit_window(
    uow: SettlementUnitOfWork, action: str, window_id: str, state: str, details: dict[str, object]
) -> None:
    """A window closed or settled."""
    uow.audit.record(action, f"windows/{window_id}", outcome=state, details=details)
