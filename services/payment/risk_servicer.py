"""gRPC: the customer's step-up (PaymentAuthorisationService) and the operators' review queue
(RiskAdminService). Thin: converters in, the use case (risk_review.RiskReview), converters out."""

from __future__ import annotations

import grpc
from google.protobuf import timestamp_pb2

from meshlib.audit import Actor, actor_of
from meshlib.auth.context import require_caller
from meshlib.errors import FieldCollector
from meshlib.idempotency import validate_request_id
from meshlib.names import parse_name, resource_name
from openbank.payment.v1 import risk_pb2, risk_pb2_grpc
from services.payment import converters
from services.payment.domain import step_up
from services.payment.risk_review import HeldPayment, RiskReview

MAX_PAGE = 200
MAX_TO_AUTHORISE = 100


def _stamp(value) -> timestamp_pb2.Timestamp:  # type: ignore[no-untyped-def]
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def held_message(held: HeldPayment) -> risk_pb2.HeldPayment:
    """A payment with its decision, as operators see it."""
    stored, decision = held.decision, held.decision.decision
    message = risk_pb2.RiskDecision(
        payment=resource_name("payments", stored.payment_id),
        outcome=risk_pb2.RiskOutcome.Value(f"RISK_OUTCOME_{decision.outcome.name}"),
        score=decision.score,
        rules_fired=list(decision.fired),
        rules_version=decision.rules_version,
        signals=decision.signals,
        decide_time=_stamp(stored.decided_at),
        expire_time=_stamp(stored.expires_at),
        resolution=stored.resolution,
        resolved_by=stored.resolved_by,
        note=stored.note,
    )
    if stored.resolved_at is not None:
        message.resolve_time.CopyFrom(_stamp(stored.resolved_at))
    return risk_pb2.HeldPayment(payment=converters.payment_message(held.payment), decision=message)


def _operator() -> Actor:
    return actor_of(require_caller(), "payment")


def _decision_request(request: risk_pb2.ApproveHeldPaymentRequest | risk_pb2.RefuseHeldPaymentRequest) -> str:
    validate_request_id(request.request_id)
    errors = FieldCollector()
    payment_id = parse_name(request.name, "payments", "name", errors)
    errors.check(len(request.note) <= 500, "note", "at most 500 characters")
    errors.raise_if_any()
    return payment_id


class PaymentAuthorisationServicer(risk_pb2_grpc.PaymentAuthorisationServiceServicer):
    """The bank's customer app confirms a payment with the customer's one-time code."""

    def __init__(self, review: RiskReview) -> None:
        self._review = review

    async def ConfirmPayment(
        self, request: risk_pb2.ConfirmPaymentRequest, context: grpc.aio.ServicerContext
    ) -> risk_pb2.ConfirmPaymentResponse:
        """Check the code against the payment's amount and payee; the saga runs on success."""
        validate_request_id(request.request_id)
        errors = FieldCollector()
        payment_id = parse_name(request.name, "payments", "name", errors)
        customer_id = parse_name(request.customer, "customers", "customer", errors)
        code = request.authentication_code
        errors.check(code.isdigit() and 4 <= len(code) <= 10, "authentication_code", "the 6 digits of the code")
        errors.raise_if_any()
        actor = Actor("customer", customer_id, client_id=require_caller().client_id, customer_id=customer_id)
        payment = await self._review.confirm(payment_id, customer_id, code, actor)
        return risk_pb2.ConfirmPaymentResponse(payment=converters.payment_message(payment))

    async def ListPaymentsToAuthorise(
        self, request: risk_pb2.ListPaymentsToAuthoriseRequest, context: grpc.aio.ServicerContext
    ) -> risk_pb2.ListPaymentsToAuthoriseResponse:
        """The customer's payments awaiting their code, with what the code is bound to."""
        errors = FieldCollector()
        customer_id = parse_name(request.customer, "customers", "customer", errors)
        errors.check(0 <= request.page_size <= MAX_TO_AUTHORISE, "page_size", f"0..{MAX_TO_AUTHORISE}")
        errors.raise_if_any()
        size = request.page_size or 50
        after = parse_name(request.page_token, "payments", "page_token") if request.page_token else ""
        waiting = await self._review.to_authorise(customer_id, after, size)
        token = resource_name("payments", waiting[-1].payment.payment_id) if len(waiting) == size else ""
        return risk_pb2.ListPaymentsToAuthoriseResponse(
            next_page_token=token,
            payments=[
                risk_pb2.PaymentToAuthorise(
                    payment=converters.payment_message(held.payment),
                    expire_time=_stamp(held.decision.expires_at),
                    attempts_left=max(0, step_up.MAX_ATTEMPTS - held.decision.failed_attempts),
                )
                for held in waiting
            ],
        )

    async def DeclinePayment(
        self, request: risk_pb2.DeclinePaymentRequest, context: grpc.aio.ServicerContext
    ) -> risk_pb2.DeclinePaymentResponse:
        """The customer declines: CANCELLED AUTHORISATION_DECLINED."""
        validate_request_id(request.request_id)
        errors = FieldCollector()
        payment_id = parse_name(request.name, "payments", "name", errors)
        customer_id = parse_name(request.customer, "customers", "customer", errors)
        errors.raise_if_any()
        actor = Actor("customer", customer_id, client_id=require_caller().client_id, customer_id=customer_id)
        payment = await self._review.decline(payment_id, customer_id, actor)
        return risk_pb2.DeclinePaymentResponse(payment=converters.payment_message(payment))


class RiskAdminServicer(risk_pb2_grpc.RiskAdminServiceServicer):
    """The operators' review queue."""

    def __init__(self, review: RiskReview) -> None:
        self._review = review

    async def ListHeldPayments(
        self, request: risk_pb2.ListHeldPaymentsRequest, context: grpc.aio.ServicerContext
    ) -> risk_pb2.ListHeldPaymentsResponse:
        """Held payments, oldest first; the page token is the last payment id of the page."""
        errors = FieldCollector()
        errors.check(0 <= request.page_size <= MAX_PAGE, "page_size", f"0..{MAX_PAGE}")
        errors.raise_if_any()
        size = request.page_size or 50
        after = parse_name(request.page_token, "payments", "page_token") if request.page_token else ""
        page = await self._review.queue(after, size)
        token = resource_name("payments", page[-1].payment.payment_id) if len(page) == size else ""
        return risk_pb2.ListHeldPaymentsResponse(held_payments=[held_message(h) for h in page], next_page_token=token)

    async def GetRiskDecision(
        self, request: risk_pb2.GetRiskDecisionRequest, context: grpc.aio.ServicerContext
    ) -> risk_pb2.GetRiskDecisionResponse:
        """A payment and its decision."""
        held = await self._review.held(parse_name(request.name, "payments"))
        return risk_pb2.GetRiskDecisionResponse(held_payment=held_message(held))

    async def ApproveHeldPayment(
        self, request: risk_pb2.ApproveHeldPaymentRequest, context: grpc.aio.ServicerContext
    ) -> risk_pb2.ApproveHeldPaymentResponse:
        """Approve: the saga runs now."""
        payment = await self._review.approve(_decision_request(request), _operator(), request.note)
        return risk_pb2.ApproveHeldPaymentResponse(payment=converters.payment_message(payment))

    async def RefuseHeldPayment(
        self, request: risk_pb2.RefuseHeldPaymentRequest, context: grpc.aio.ServicerContext
    ) -> risk_pb2.RefuseHeldPaymentResponse:
        """Refuse: REJECTED REVIEW_REFUSED."""
        payment = await self._review.refuse(_decision_request(request), _operator(), request.note)
        return risk_pb2.RefuseHeldPaymentResponse(payment=converters.payment_message(payment))
