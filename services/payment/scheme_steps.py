"""The saga's steps of a payment to another bank, over the outbound clearing connector.

``submit`` sends the credit transfer (pacs.008) whose message id is the payment id, written
ahead by the saga before the call, so it is the same message whenever it is sent again and the
scheme never clears it twice; ``await_clearing`` asks its status (pacs.002); ``probe`` answers
the pivot's probe from that status (``domain.clearing.read_status``). The transfer is made from
the stored payment alone, so a resubmission after a crash is the same message byte for byte.
"""

from __future__ import annotations

from meshlib.errors import FailedPrecondition, Unavailable
from services.payment.adapters.clearing import (
    AccountKind,
    ClearingConnector,
    ClearingReport,
    ClearingStatus,
    OutboundCreditTransfer,
    SchemeAccount,
)
from services.payment.domain import clearing
from services.payment.domain.payments import Payment
from services.payment.domain.saga import CLEARING_PENDING, History, ProbeAnswer, Step

# ISO 20022's end-to-end id when the partner gave none.
NOT_PROVIDED = "NOTPROVIDED"


def outbound_transfer(payment: Payment, bank_bic: str) -> OutboundCreditTransfer:
    """The pacs.008 of a payment to another bank (message id = payment id)."""
    creditor = payment.external_creditor
    if creditor is None:
        raise ValueError(f"payment {payment.payment_id} is not to another bank")
    kind = AccountKind.IBAN if creditor.account_kind == "IBAN" else AccountKind.SCHEME
    return OutboundCreditTransfer(
        message_id=payment.payment_id,
        end_to_end_id=payment.end_to_end_id or NOT_PROVIDED,
        amount=payment.amount,
        debtor_name=f"customer {payment.customer_id}" if payment.customer_id else "customer",
        debtor_account=SchemeAccount.scheme_id(payment.debtor_account_id),
        debtor_agent=bank_bic,
        creditor_name=creditor.name,
        creditor_account=SchemeAccount(creditor.account, kind),
        creditor_agent=creditor.agent_bic,
        remittance_information=payment.remittance_information,
    )


class SchemeSteps:
    """SUBMIT_TRANSFER, AWAIT_CLEARING and the scheme's probe of the pivot."""

    def __init__(self, connector: ClearingConnector, bank_bic: str) -> None:
        self._connector = connector
        self._bank_bic = bank_bic

    async def submit(self, payment: Payment) -> None:
        """Send the transfer: accepted or settled is done; rejected is a refusal (the reason
        mapped, the ISO code in the message); no answer raises ClearingOutcomeUnknown."""
        report = await self._connector.submit(outbound_transfer(payment, self._bank_bic))
        _refuse_if_rejected(report)

    async def await_clearing(self, payment: Payment) -> None:
        """Done once the scheme settled the transfer; rejected is a refusal; still accepted (or
        not there, which the probe sorts out) raises CLEARING_PENDING: ask again later."""
        report = await self._connector.status(payment.payment_id)
        _refuse_if_rejected(report)
        if report.status is not ClearingStatus.SETTLED:
            raise Unavailable("the scheme has not settled the transfer yet", reason=CLEARING_PENDING)

    async def probe(self, payment: Payment, history: History) -> ProbeAnswer:
        """The pivot's probe: the transfer's status in the scheme, read by the domain's rule."""
        report = await self._connector.status(payment.payment_id)
        return clearing.read_status(report.status.value, report.reason_code, report.reason_message, history)


def _refuse_if_rejected(report: ClearingReport) -> None:
    if report.status is ClearingStatus.REJECTED:
        record = clearing.rejected(Step.AWAIT_CLEARING, report.reason_code, report.reason_message)
        raise FailedPrecondition(record.message, reason=record.reason, metadata={"iso_reason": report.reason_code})
