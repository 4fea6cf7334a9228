"""Payment's PaymentAuthorisationService for the step-up pages, with the web app's own
token (consents:authorise): the customer's payments to confirm, the confirmation with the
one-time code, the refusal."""

from __future__ import annotations

import datetime as dt
import uuid

import grpc

from bankweb.grpc_bank import CALL_DEADLINE_SECONDS, money_words
from bankweb.step_up import Confirmed, PaymentToConfirm
from meshlib.auth.service_tokens import ServiceTokenSource
from meshlib.clients import PeerCaller
from openbank.payment.v1 import payment_pb2, risk_pb2, risk_pb2_grpc

# Confirming runs the payment's saga (hold, positions, posting) before it answers.
CONFIRM_DEADLINE_SECONDS = 15.0


def payee_words(payment: payment_pb2.Payment) -> tuple[str, str]:
    """Who receives the money, as the one-time code is bound to it: a name and its account."""
    if payment.HasField("creditor_external"):
        external = payment.creditor_external
        account = external.iban or external.scheme_account_id
        return external.name, f"{account} at {external.agent_bic}"
    if payment.creditor_account:
        return f"Account {payment.creditor_account.removeprefix('accounts/')}", "at this bank"
    return "The app's own wallet", payment.creditor_wallet.removeprefix("partners/")


def to_confirm(waiting: risk_pb2.PaymentToAuthorise) -> PaymentToConfirm:
    """The payment as the page shows it."""
    payment = waiting.payment
    payee, detail = payee_words(payment)
    return PaymentToConfirm(
        payment_id=payment.name.removeprefix("payments/"),
        partner=payment.partner,
        consent_id=payment.consent.removeprefix("consents/"),
        amount=money_words(payment.amount),
        payee=payee,
        payee_detail=detail,
        remittance=payment.remittance_information,
        expire_time=waiting.expire_time.ToDatetime(tzinfo=dt.UTC),
        attempts_left=waiting.attempts_left,
    )


class GrpcStepUp:
    """The step-up rpcs of the payment service."""

    def __init__(self, payment: grpc.aio.Channel, tokens: ServiceTokenSource) -> None:
        self._stub = risk_pb2_grpc.PaymentAuthorisationServiceStub(payment)
        self._call = PeerCaller(tokens.token, deadline_seconds=CALL_DEADLINE_SECONDS)
        # One attempt: a confirmation whose answer was lost is not sent again blindly (the
        # customer sees the page again, and the payment as it is then).
        self._confirm = PeerCaller(tokens.token, deadline_seconds=CONFIRM_DEADLINE_SECONDS, attempts=1)

    async def payments_to_confirm(self, customer: str) -> list[PaymentToConfirm]:
        """The customer's payments awaiting their code, oldest first."""
        request = risk_pb2.ListPaymentsToAuthoriseRequest(customer=customer, page_size=50)
        answer = await self._call(self._stub.ListPaymentsToAuthorise, request, "payment.ListPaymentsToAuthorise")
        return [to_confirm(waiting) for waiting in answer.payments]

    async def confirm_payment(self, payment_id: str, customer: str, code: str) -> Confirmed:
        """ConfirmPayment with the customer's code; the payment as its saga left it."""
        request = risk_pb2.ConfirmPaymentRequest(
            request_id=uuid.uuid4().hex, name=f"payments/{payment_id}", customer=customer, authentication_code=code
        )
        answer = await self._confirm(self._stub.ConfirmPayment, request, "payment.ConfirmPayment")
        payment = answer.payment
        return Confirmed(
            payment_id=payment_id,
            state=payment_pb2.PaymentState.Name(payment.state).removeprefix("PAYMENT_STATE_"),
            amount=money_words(payment.amount),
            payee=payee_words(payment)[0],
        )

    async def decline_payment(self, payment_id: str, customer: str) -> None:
        """DeclinePayment for the customer."""
        request = risk_pb2.DeclinePaymentRequest(
            request_id=uuid.uuid4().hex, name=f"payments/{payment_id}", customer=customer
        )
        await self._call(self._stub.DeclinePayment, request, "payment.DeclinePayment")
