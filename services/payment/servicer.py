"""gRPC servicers for payments: protobuf in, protobuf out, nothing else."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Protocol

import grpc

from meshlib.auth.context import require_caller
from meshlib.errors import FieldCollector
from meshlib.idempotency import fingerprint, validate_request_id
from meshlib.names import parse_name
from meshlib.storage import IdempotencyKey
from openbank.payment.v1 import payment_admin_pb2, payment_admin_pb2_grpc, payment_pb2, payment_pb2_grpc
from services.payment import converters
from services.payment.commands import CancelPayment, RecoverPayments
from services.payment.create_payment import CreatePaymentHandler
from services.payment.ports import (
    CANCEL_METHOD,
    CANCEL_STANDING_ORDER_METHOD,
    OPERATOR_REFUND_METHOD,
    REFUND_METHOD,
)
from services.payment.queries import PaymentEvents, PaymentQueries
from services.payment.refund_payment import RefundPayment
from services.payment.standing_orders import StandingOrders

DEFAULT_STUCK_AFTER = dt.timedelta(seconds=30)


class PaymentUseCases(Protocol):
    """What the servicers call (``bootstrap.PaymentComponents`` has them all)."""

    queries: PaymentQueries
    create: CreatePaymentHandler
    cancel: CancelPayment
    refund: RefundPayment
    standing_orders: StandingOrders
    recover: RecoverPayments
    events: PaymentEvents


class PaymentServicer(payment_pb2_grpc.PaymentServiceServicer):
    """Partner-facing payments."""

    def __init__(self, components: PaymentUseCases) -> None:
        self._queries = components.queries
        self._create = components.create
        self._cancel = components.cancel
        self._refund = components.refund
        self._events = components.events
        self._orders = components.standing_orders

    async def CreatePayment(
        self, request: payment_pb2.CreatePaymentRequest, context: grpc.aio.ServicerContext
    ) -> payment_pb2.CreatePaymentResponse:
        """Check and run a payment (see the proto for the errors)."""
        caller = require_caller()
        partner_id, consent_id = caller.require_partner(), caller.require_consent()
        new = converters.new_payment(request)
        payment = await self._create(partner_id, consent_id, new)
        return payment_pb2.CreatePaymentResponse(payment=converters.payment_message(payment))

    async def GetPayment(
        self, request: payment_pb2.GetPaymentRequest, context: grpc.aio.ServicerContext
    ) -> payment_pb2.GetPaymentResponse:
        """A payment of the caller's consent."""
        caller = require_caller()
        partner_id, consent_id = caller.require_partner(), caller.require_consent()
        payment = await self._queries.get_for_consent(parse_name(request.name, "payments"), partner_id, consent_id)
        return payment_pb2.GetPaymentResponse(payment=converters.payment_message(payment))

    async def ListPayments(
        self, request: payment_pb2.ListPaymentsRequest, context: grpc.aio.ServicerContext
    ) -> payment_pb2.ListPaymentsResponse:
        """The payments of the caller's consent, newest first."""
        caller = require_caller()
        partner_id, consent_id = caller.require_partner(), caller.require_consent()
        page, token = await self._queries.list_for_consent(
            partner_id,
            consent_id,
            state=converters.state_filter(request.state),
            from_time=request.from_create_time.ToDatetime(dt.UTC) if request.HasField("from_create_time") else None,
            to_time=request.to_create_time.ToDatetime(dt.UTC) if request.HasField("to_create_time") else None,
            requested_page_size=request.page_size,
            page_token=request.page_token,
        )
        return payment_pb2.ListPaymentsResponse(
            payments=[converters.payment_message(p) for p in page], next_page_token=token
        )

    async def CancelPayment(
        self, request: payment_pb2.CancelPaymentRequest, context: grpc.aio.ServicerContext
    ) -> payment_pb2.CancelPaymentResponse:
        """Cancel before funds are held."""
        caller = require_caller()
        partner_id, consent_id = caller.require_partner(), caller.require_consent()
        validate_request_id(request.request_id)
        payment_id = parse_name(request.name, "payments")
        key = IdempotencyKey(partner_id, CANCEL_METHOD, request.request_id, fingerprint(request))
        payment = await self._cancel(partner_id, consent_id, payment_id, key)
        return payment_pb2.CancelPaymentResponse(payment=converters.payment_message(payment))

    async def CreateStandingOrder(
        self, request: payment_pb2.CreateStandingOrderRequest, context: grpc.aio.ServicerContext
    ) -> payment_pb2.CreateStandingOrderResponse:
        """A payment executed on a schedule under the caller's consent."""
        caller = require_caller()
        partner_id, consent_id = caller.require_partner(), caller.require_consent()
        order = await self._orders.create(partner_id, consent_id, converters.new_standing_order(request))
        return payment_pb2.CreateStandingOrderResponse(standing_order=converters.standing_order_message(order))

    async def GetStandingOrder(
        self, request: payment_pb2.GetStandingOrderRequest, context: grpc.aio.ServicerContext
    ) -> payment_pb2.GetStandingOrderResponse:
        """A standing order of the caller's consent."""
        caller = require_caller()
        partner_id, consent_id = caller.require_partner(), caller.require_consent()
        order = await self._orders.get(parse_name(request.name, "standingOrders"), partner_id, consent_id)
        return payment_pb2.GetStandingOrderResponse(standing_order=converters.standing_order_message(order))

    async def ListStandingOrders(
        self, request: payment_pb2.ListStandingOrdersRequest, context: grpc.aio.ServicerContext
    ) -> payment_pb2.ListStandingOrdersResponse:
        """The caller's consent's standing orders, newest first."""
        caller = require_caller()
        partner_id, consent_id = caller.require_partner(), caller.require_consent()
        page, token = await self._orders.list(partner_id, consent_id, request.page_size, request.page_token)
        return payment_pb2.ListStandingOrdersResponse(
            standing_orders=[converters.standing_order_message(o) for o in page], next_page_token=token
        )

    async def CancelStandingOrder(
        self, request: payment_pb2.CancelStandingOrderRequest, context: grpc.aio.ServicerContext
    ) -> payment_pb2.CancelStandingOrderResponse:
        """No execution of the order starts after this."""
        caller = require_caller()
        partner_id, consent_id = caller.require_partner(), caller.require_consent()
        validate_request_id(request.request_id)
        order_id = parse_name(request.name, "standingOrders")
        key = IdempotencyKey(partner_id, CANCEL_STANDING_ORDER_METHOD, request.request_id, fingerprint(request))
        order = await self._orders.cancel(partner_id, consent_id, order_id, key)
        return payment_pb2.CancelStandingOrderResponse(standing_order=converters.standing_order_message(order))

    async def RefundPayment(
        self, request: payment_pb2.RefundPaymentRequest, context: grpc.aio.ServicerContext
    ) -> payment_pb2.RefundPaymentResponse:
        """Refund a settled payment to the partner's wallet, in full or in part."""
        partner_id = require_caller().require_partner()
        refund_request = converters.refund_request(request, partner_id)
        key = IdempotencyKey(partner_id, REFUND_METHOD, request.request_id, fingerprint(request))
        refund = await self._refund(refund_request, key)
        return payment_pb2.RefundPaymentResponse(refund=converters.payment_message(refund))

    async def WatchPayments(
        self, request: payment_pb2.WatchPaymentsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[payment_pb2.WatchPaymentsResponse]:
        """The partner's payment events after the cursor, then live."""
        partner_id = require_caller().require_partner()
        async for event in self._events.watch(partner_id, request.after_cursor):
            snapshot = await self._queries.get(event.payment_id) if request.include_snapshot else None
            yield payment_pb2.WatchPaymentsResponse(event=converters.event_message(event, snapshot))


class PaymentAdminServicer(payment_admin_pb2_grpc.PaymentAdminServiceServicer):
    """Operator view of payments."""

    def __init__(self, components: PaymentUseCases) -> None:
        self._queries = components.queries
        self._recover = components.recover
        self._refund = components.refund

    async def GetPaymentAuditTrail(
        self, request: payment_admin_pb2.GetPaymentAuditTrailRequest, context: grpc.aio.ServicerContext
    ) -> payment_admin_pb2.GetPaymentAuditTrailResponse:
        """Every recorded saga step of a payment, oldest first."""
        payment_id = parse_name(request.name, "payments")
        steps = await self._queries.audit_trail(payment_id)
        return payment_admin_pb2.GetPaymentAuditTrailResponse(
            payment=request.name, entries=[converters.audit_entry(s) for s in steps]
        )

    async def ListStuckPayments(
        self, request: payment_admin_pb2.ListStuckPaymentsRequest, context: grpc.aio.ServicerContext
    ) -> payment_admin_pb2.ListStuckPaymentsResponse:
        """Payments that have sat mid-saga longer than ``older_than`` (default 30 s)."""
        older_than = request.older_than.ToTimedelta() if request.HasField("older_than") else DEFAULT_STUCK_AFTER
        page, token = await self._queries.stuck(older_than, request.page_size, request.page_token)
        return payment_admin_pb2.ListStuckPaymentsResponse(
            payments=[converters.payment_message(p) for p in page], next_page_token=token
        )

    async def RecoverPayments(
        self, request: payment_admin_pb2.RecoverPaymentsRequest, context: grpc.aio.ServicerContext
    ) -> payment_admin_pb2.RecoverPaymentsResponse:
        """One recovery pass now, over payments idle longer than ``older_than`` (default 30 s)."""
        validate_request_id(request.request_id)
        older_than = request.older_than.ToTimedelta() if request.HasField("older_than") else DEFAULT_STUCK_AFTER
        result = await self._recover(request.request_id, fingerprint(request), older_than)
        return payment_admin_pb2.RecoverPaymentsResponse(
            examined_count=result.examined,
            completed_count=result.completed,
            compensated_count=result.compensated,
            pending_count=result.pending,
        )

    async def SearchPayments(
        self, request: payment_admin_pb2.SearchPaymentsRequest, context: grpc.aio.ServicerContext
    ) -> payment_admin_pb2.SearchPaymentsResponse:
        """Payments by id, end-to-end id, partner and state, newest first."""
        errors = FieldCollector()
        payment_id = parse_name(request.name, "payments", "name", errors) if request.name else None
        partner_id = parse_name(request.partner, "partners", "partner", errors) if request.partner else None
        errors.check(len(request.end_to_end_id) <= 35, "end_to_end_id", "at most 35 characters")
        errors.raise_if_any()
        page, token = await self._queries.search(
            payment_id=payment_id,
            end_to_end_id=request.end_to_end_id or None,
            partner_id=partner_id,
            state=converters.state_filter(request.state),
            requested_page_size=request.page_size,
            page_token=request.page_token,
        )
        return payment_admin_pb2.SearchPaymentsResponse(
            payments=[converters.payment_message(p) for p in page], next_page_token=token
        )

    async def OperatorRefundPayment(
        self, request: payment_admin_pb2.OperatorRefundPaymentRequest, context: grpc.aio.ServicerContext
    ) -> payment_admin_pb2.OperatorRefundPaymentResponse:
        """Refund any settled payment on the bank's authority (the operator is in the audit trail)."""
        operator = require_caller().subject
        refund_request = converters.refund_request(request, None)
        key = IdempotencyKey(f"operator:{operator}", OPERATOR_REFUND_METHOD, request.request_id, fingerprint(request))
        refund = await self._refund(refund_request, key)
        return payment_admin_pb2.OperatorRefundPaymentResponse(refund=converters.payment_message(refund))
