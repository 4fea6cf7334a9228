"""gRPC servicers of DisputeService (partners, the bank's app) and DisputeAdminService (the bank's
operators): protobuf in, protobuf out; the converters of disputes."""

from __future__ import annotations

import datetime as dt

import grpc
from google.protobuf import timestamp_pb2

from meshlib.auth.context import require_caller
from meshlib.errors import FieldCollector, InvalidArgument
from meshlib.idempotency import fingerprint, validate_request_id
from meshlib.money import amount_from_fields
from meshlib.names import parse_name
from meshlib.pagination import decode_page_token, encode_page_token, filter_fingerprint, page_size, time_and_id
from meshlib.storage import IdempotencyKey
from openbank.common.v1 import money_pb2
from openbank.payment.v1 import dispute_pb2, dispute_pb2_grpc
from services.payment.disputes import OPEN_DISPUTE_METHOD, Disputes
from services.payment.domain.disputes import Dispute, DisputeCategory, DisputeRequest, DisputeState

_CATEGORIES = {
    dispute_pb2.DISPUTE_CATEGORY_FRAUD: DisputeCategory.FRAUD,
    dispute_pb2.DISPUTE_CATEGORY_NOT_RECEIVED: DisputeCategory.NOT_RECEIVED,
    dispute_pb2.DISPUTE_CATEGORY_WRONG_AMOUNT: DisputeCategory.WRONG_AMOUNT,
}
_CATEGORY_NUMBERS = {category: number for number, category in _CATEGORIES.items()}
_STATE_NUMBERS = {state: dispute_pb2.DisputeState.Value(f"DISPUTE_STATE_{state.value}") for state in DisputeState}


def _timestamp(value: dt.datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def dispute_message(dispute: Dispute) -> dispute_pb2.Dispute:
    """A Dispute resource."""
    currency = dispute.amount.currency
    message = dispute_pb2.Dispute(
        name=f"disputes/{dispute.dispute_id}",
        payment=f"payments/{dispute.payment_id}",
        category=_CATEGORY_NUMBERS[dispute.category],
        state=_STATE_NUMBERS[dispute.state],
        amount=money_pb2.Money(currency_code=currency, minor_units=dispute.amount.minor_units),
        description=dispute.description,
        opened_by=dispute.opened_by,
        create_time=_timestamp(dispute.created_at),
        update_time=_timestamp(dispute.updated_at),
        decide_by_time=_timestamp(dispute.decide_by),
        decision_note=dispute.decision_note,
        refund_payments=[f"payments/{refund_id}" for refund_id in dispute.refund_payment_ids],
    )
    if dispute.state is DisputeState.ACCEPTED:
        message.partner_share.CopyFrom(money_pb2.Money(currency_code=currency, minor_units=dispute.partner_share_minor))
        message.bank_share.CopyFrom(money_pb2.Money(currency_code=currency, minor_units=dispute.bank_share_minor))
    return message


def dispute_request(
    request: dispute_pb2.OpenDisputeRequest | dispute_pb2.OpenCustomerDisputeRequest,
    opened_by: str,
    customer_id: str | None,
) -> DisputeRequest:
    """Validate an opening's shape, every bad field at once."""
    errors = FieldCollector()
    try:
        validate_request_id(request.request_id)
    except InvalidArgument as error:
        errors.violations.extend(error.violations)
    payment_id = parse_name(request.payment, "payments", "payment", errors)
    category = _CATEGORIES.get(request.category)
    errors.check(category is not None, "category", "required: FRAUD, NOT_RECEIVED or WRONG_AMOUNT")
    amount = None
    if request.HasField("amount"):
        amount = amount_from_fields(request.amount.currency_code, request.amount.minor_units, "amount", errors)
    errors.check(len(request.description) <= 500, "description", "at most 500 characters")
    errors.raise_if_any()
    assert category is not None
    return DisputeRequest(payment_id, category, amount, request.description, opened_by, customer_id=customer_id)


async def _page(
    disputes: Disputes, partner_id: str | None, requested: int, token: str
) -> tuple[list[dispute_pb2.Dispute], str]:
    size = page_size(requested)
    filters = filter_fingerprint(partner=partner_id or "")
    found = await disputes.page(partner_id, time_and_id(decode_page_token(token, filters)), size + 1)
    page = found[:size]
    next_token = ""
    if len(found) > size:
        next_token = encode_page_token({"t": page[-1].created_at.isoformat(), "id": page[-1].dispute_id}, filters)
    return [dispute_message(d) for d in page], next_token


class DisputeServicer(dispute_pb2_grpc.DisputeServiceServicer):
    """A partner's own disputes; a customer's opening through the bank's app."""

    def __init__(self, disputes: Disputes) -> None:
        self._disputes = disputes

    async def ListDisputes(
        self, request: dispute_pb2.ListDisputesRequest, context: grpc.aio.ServicerContext
    ) -> dispute_pb2.ListDisputesResponse:
        """The calling partner's disputes, newest first."""
        partner_id = require_caller().require_partner()
        page, token = await _page(self._disputes, partner_id, request.page_size, request.page_token)
        return dispute_pb2.ListDisputesResponse(disputes=page, next_page_token=token)

    async def GetDispute(
        self, request: dispute_pb2.GetDisputeRequest, context: grpc.aio.ServicerContext
    ) -> dispute_pb2.GetDisputeResponse:
        """One of the calling partner's disputes."""
        partner_id = require_caller().require_partner()
        dispute_id = parse_name(request.name, "disputes", field="name")
        return dispute_pb2.GetDisputeResponse(
            dispute=dispute_message(await self._disputes.get(dispute_id, partner_id=partner_id))
        )

    async def OpenCustomerDispute(
        self, request: dispute_pb2.OpenCustomerDisputeRequest, context: grpc.aio.ServicerContext
    ) -> dispute_pb2.OpenCustomerDisputeResponse:
        """The signed-in customer disputes one of their payments (the bank's app checked who)."""
        require_caller()
        customer_id = parse_name(request.customer, "customers", field="customer")
        opening = dispute_request(request, "customer", customer_id)
        key = IdempotencyKey(f"customer:{customer_id}", OPEN_DISPUTE_METHOD, request.request_id, fingerprint(request))
        return dispute_pb2.OpenCustomerDisputeResponse(dispute=dispute_message(await self._disputes.open(opening, key)))


class DisputeAdminServicer(dispute_pb2_grpc.DisputeAdminServiceServicer):
    """The bank's operators: open, decide, search."""

    def __init__(self, disputes: Disputes) -> None:
        self._disputes = disputes

    async def OpenDispute(
        self, request: dispute_pb2.OpenDisputeRequest, context: grpc.aio.ServicerContext
    ) -> dispute_pb2.OpenDisputeResponse:
        """A dispute of any settled payment, for its customer."""
        operator = require_caller().subject
        opening = dispute_request(request, "operator", None)
        key = IdempotencyKey(f"operator:{operator}", OPEN_DISPUTE_METHOD, request.request_id, fingerprint(request))
        return dispute_pb2.OpenDisputeResponse(dispute=dispute_message(await self._disputes.open(opening, key)))

    async def DecideDispute(
        self, request: dispute_pb2.DecideDisputeRequest, context: grpc.aio.ServicerContext
    ) -> dispute_pb2.DecideDisputeResponse:
        """INVESTIGATING, ACCEPTED (refunded, split) or REJECTED."""
        require_caller()
        errors = FieldCollector()
        try:
            validate_request_id(request.request_id)
        except InvalidArgument as error:
            errors.violations.extend(error.violations)
        dispute_id = parse_name(request.name, "disputes", "name", errors)
        decisions = {
            dispute_pb2.DISPUTE_STATE_INVESTIGATING: self._disputes.investigate,
            dispute_pb2.DISPUTE_STATE_ACCEPTED: self._disputes.accept,
            dispute_pb2.DISPUTE_STATE_REJECTED: self._disputes.reject,
        }
        decide = decisions.get(request.state)
        errors.check(decide is not None, "state", "must be INVESTIGATING, ACCEPTED or REJECTED")
        errors.check(len(request.note) <= 500, "note", "at most 500 characters")
        errors.raise_if_any()
        assert decide is not None
        return dispute_pb2.DecideDisputeResponse(dispute=dispute_message(await decide(dispute_id, request.note)))

    async def SearchDisputes(
        self, request: dispute_pb2.SearchDisputesRequest, context: grpc.aio.ServicerContext
    ) -> dispute_pb2.SearchDisputesResponse:
        """Every dispute, or one partner's, newest first."""
        require_caller()
        partner_id = parse_name(request.partner, "partners", field="partner") if request.partner else None
        page, token = await _page(self._disputes, partner_id, request.page_size, request.page_token)
        return dispute_pb2.SearchDisputesResponse(disputes=page, next_page_token=token)
