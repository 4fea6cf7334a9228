"""gRPC servicers for payments: protobuf in, protobuf out, nothing else."""

from __future__ import annotations

import datetime as dt

import grpc

from meshlib.auth.context import require_caller
from meshlib.names import parse_name
from openbank.payment.v1 import payment_admin_pb2, payment_admin_pb2_grpc, payment_pb2, payment_pb2_grpc
from services.payment import converters
from services.payment.payments_service import PaymentQueries

DEFAULT_STUCK_AFTER = dt.timedelta(seconds=30)


class PaymentServicer(payment_pb2_grpc.PaymentServiceServicer):
    """Partner-facing payments."""

    def __init__(self, queries: PaymentQueries) -> None:
        self._queries = queries

    async def GetPayment(
        self, request: payment_pb2.GetPaymentRequest, context: grpc.aio.ServicerContext
    ) -> payment_pb2.GetPaymentResponse:
        """One of the calling partner's payments."""
        partner_id = require_caller().require_partner()
        payment = await self._queries.get_for_partner(parse_name(request.name, "payments"), partner_id)
        return payment_pb2.GetPaymentResponse(payment=converters.payment_message(payment))


class PaymentAdminServicer(payment_admin_pb2_grpc.PaymentAdminServiceServicer):
    """Operator view of payments."""

    def __init__(self, queries: PaymentQueries) -> None:
        self._queries = queries

    async def ListStuckPayments(
        self, request: payment_admin_pb2.ListStuckPaymentsRequest, context: grpc.aio.ServicerContext
    ) -> payment_admin_pb2.ListStuckPaymentsResponse:
        """Payments that have sat mid-saga longer than ``older_than`` (default 30 s)."""
        older_than = request.older_than.ToTimedelta() if request.HasField("older_than") else DEFAULT_STUCK_AFTER
        page, token = await self._queries.stuck(older_than, request.page_size, request.page_token)
        return payment_admin_pb2.ListStuckPaymentsResponse(
            payments=[converters.payment_message(p) for p in page], next_page_token=token
        )
