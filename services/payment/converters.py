"""Protobuf <-> domain conversions for payments (no rules here)."""

from __future__ import annotations

import dataclasses
import datetime as dt

from google.protobuf import timestamp_pb2

from meshlib.errors import FieldCollector, InvalidArgument
from meshlib.idempotency import fingerprint, validate_request_id
from meshlib.money import amount_from_fields
from meshlib.names import parse_name, resource_name
from openbank.common.v1 import money_pb2
from openbank.payment.v1 import payment_admin_pb2, payment_pb2
from services.payment.create_payment import NewPayment
from services.payment.domain.clearing import check_external_creditor
from services.payment.domain.payments import EXTERNAL_TRANSFER_TYPE, ExternalCreditor, Payment, PaymentState
from services.payment.domain.refunds import RefundRequest
from services.payment.domain.risk import PsuContext
from services.payment.domain.saga import PaymentEvent, RecordedStep
from services.payment.domain.schedules import MAX_EXECUTIONS, Frequency, StandingOrder
from services.payment.standing_orders import NewStandingOrder


def _timestamp(value) -> timestamp_pb2.Timestamp:  # type: ignore[no-untyped-def]
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def payment_message(payment: Payment) -> payment_pb2.Payment:
    """The partner-facing view of a payment."""
    message = payment_pb2.Payment(
        name=resource_name("payments", payment.payment_id),
        partner=resource_name("partners", payment.partner_id),
        consent=resource_name("consents", payment.consent_id),
        debtor_account=resource_name("accounts", payment.debtor_account_id),
        amount=money_pb2.Money(currency_code=payment.amount.currency, minor_units=payment.amount.minor_units),
        type=payment_pb2.PaymentType.Value(f"PAYMENT_TYPE_{payment.payment_type}"),
        state=payment_pb2.PaymentState.Value(f"PAYMENT_STATE_{payment.state.name}"),
        iso20022_status=payment.state.value,
        status_reason=payment.status_reason,
        status_reason_message=payment.status_reason_message,
        remittance_information=payment.remittance_information,
        end_to_end_id=payment.end_to_end_id,
        create_time=_timestamp(payment.created_at),
        update_time=_timestamp(payment.updated_at),
    )
    if payment.creditor_account_id:
        message.creditor_account = resource_name("accounts", payment.creditor_account_id)
    elif payment.creditor_wallet_partner_id:
        message.creditor_wallet = resource_name("partners", payment.creditor_wallet_partner_id)
    elif payment.external_creditor is not None:
        message.creditor_external.CopyFrom(external_creditor_message(payment.external_creditor))
    if payment.is_refund:
        message.refund_of = resource_name("payments", payment.original_payment_id)
        message.return_reason = payment.return_reason
    message.refunds.extend(resource_name("payments", link.payment_id) for link in payment.refunds)
    if payment.requested_execution_at is not None:
        message.requested_execution_time.CopyFrom(_timestamp(payment.requested_execution_at))
    if payment.standing_order_id:
        message.standing_order = resource_name("standingOrders", payment.standing_order_id)
        message.execution_number = payment.execution_number
    if payment.has_fee:
        message.fee.CopyFrom(money_pb2.Money(currency_code=payment.amount.currency, minor_units=payment.fee_minor))
    refunded = sum(link.amount_minor for link in payment.refunds if link.state is PaymentState.SETTLED)
    if refunded:
        message.refunded_amount.CopyFrom(money_pb2.Money(currency_code=payment.amount.currency, minor_units=refunded))
    return message


def external_creditor_message(creditor: ExternalCreditor) -> payment_pb2.ExternalCreditor:
    """A creditor at another bank, as partners see it."""
    message = payment_pb2.ExternalCreditor(name=creditor.name, agent_bic=creditor.agent_bic)
    if creditor.account_kind == "IBAN":
        message.iban = creditor.account
    else:
        message.scheme_account_id = creditor.account
    return message


def external_creditor(message: payment_pb2.ExternalCreditor, errors: FieldCollector) -> ExternalCreditor:
    """A creditor at another bank, checked (an IBAN in electronic format); bad fields into ``errors``."""
    which = message.WhichOneof("account")
    if which == "iban":
        creditor = ExternalCreditor("".join(message.iban.split()).upper(), "IBAN", message.name, message.agent_bic)
    else:
        creditor = ExternalCreditor(message.scheme_account_id, "SCHEME", message.name, message.agent_bic)
        if which is None:
            errors.add("creditor_external.iban", "an iban or a scheme_account_id is required")
            return creditor
    check_external_creditor(creditor, errors, "creditor_external")
    return creditor


RefundMessage = payment_pb2.RefundPaymentRequest | payment_admin_pb2.OperatorRefundPaymentRequest


def refund_request(request: RefundMessage, partner_id: str | None) -> RefundRequest:
    """Validate a RefundPayment (or OperatorRefundPayment) request's shape, every bad field at once;
    ``partner_id`` None for the bank's operator."""
    errors = FieldCollector()
    try:
        validate_request_id(request.request_id)
    except InvalidArgument as error:
        errors.violations.extend(error.violations)
    original = parse_name(request.name, "payments", "name", errors)
    amount = None
    if request.HasField("amount"):
        amount = amount_from_fields(request.amount.currency_code, request.amount.minor_units, "amount", errors)
    errors.check(bool(request.reason), "reason", "required: an ISO 20022 return reason code such as CUST")
    errors.check(len(request.remittance_information) <= 140, "remittance_information", "at most 140 characters")
    errors.raise_if_any()
    return RefundRequest(
        original_payment_id=original,
        amount=amount,
        reason=request.reason,
        remittance_information=request.remittance_information,
        partner_id=partner_id,
    )


PAYMENT_TYPES = {
    payment_pb2.PAYMENT_TYPE_WALLET_TOP_UP: "WALLET_TOP_UP",
    payment_pb2.PAYMENT_TYPE_TRANSFER: "TRANSFER",
    payment_pb2.PAYMENT_TYPE_BILL_PAYMENT: "BILL_PAYMENT",
    payment_pb2.PAYMENT_TYPE_EXTERNAL_TRANSFER: EXTERNAL_TRANSFER_TYPE,
}


def _state_value(state: PaymentState | None) -> int:
    return payment_pb2.PaymentState.Value(f"PAYMENT_STATE_{state.name}") if state else 0


def new_payment(request: payment_pb2.CreatePaymentRequest) -> NewPayment:
    """Validate a CreatePayment request's shape (every bad field named at once)."""
    errors = FieldCollector()
    request_id = request.request_id
    try:
        validate_request_id(request_id)
    except InvalidArgument as error:
        errors.violations.extend(error.violations)
    debtor = parse_name(request.debtor_account, "accounts", "debtor_account", errors)
    payment_type = PAYMENT_TYPES.get(request.type)
    if payment_type is None:
        errors.add("type", "must be WALLET_TOP_UP, TRANSFER, BILL_PAYMENT or EXTERNAL_TRANSFER")
    amount = None
    if request.HasField("amount"):
        amount = amount_from_fields(request.amount.currency_code, request.amount.minor_units, "amount", errors)
    else:
        errors.add("amount", "required")
    creditor = request.WhichOneof("creditor")
    creditor_account = creditor_wallet = external = None
    if creditor is None:
        errors.add("creditor_account", "a creditor_account, creditor_wallet or creditor_external is required")
    elif creditor == "creditor_external":
        external = external_creditor(request.creditor_external, errors)
        if payment_type != EXTERNAL_TRANSFER_TYPE:
            errors.add("creditor_external", "an account at another bank is paid by an EXTERNAL_TRANSFER")
    elif payment_type == EXTERNAL_TRANSFER_TYPE:
        errors.add(creditor, "an EXTERNAL_TRANSFER credits creditor_external")
    elif creditor == "creditor_account":
        creditor_account = parse_name(request.creditor_account, "accounts", "creditor_account", errors)
        if payment_type == "WALLET_TOP_UP":
            errors.add("creditor_account", "a wallet top-up credits creditor_wallet")
    else:
        creditor_wallet = parse_name(request.creditor_wallet, "partners", "creditor_wallet", errors)
        if payment_type in ("TRANSFER", "BILL_PAYMENT"):
            errors.add("creditor_wallet", "a transfer or bill payment credits creditor_account")
    errors.check(len(request.remittance_information) <= 140, "remittance_information", "at most 140 characters")
    errors.check(len(request.end_to_end_id) <= 35, "end_to_end_id", "at most 35 characters")
    psu = request.psu_context
    errors.check(len(psu.ip_address) <= 45, "psu_context.ip_address", "at most 45 characters")
    errors.check(len(psu.device_id) <= 128, "psu_context.device_id", "at most 128 characters")
    errors.check(len(psu.user_agent) <= 256, "psu_context.user_agent", "at most 256 characters")
    errors.check(
        external is None or not request.HasField("requested_execution_time"),
        "requested_execution_time",
        "a payment to another bank executes now",
    )
    errors.raise_if_any()
    if creditor_account is not None and creditor_account == debtor:
        raise InvalidArgument.field("creditor_account", "must not be the debtor account", reason="BENEFICIARY_INVALID")
    assert amount is not None and payment_type is not None
    requested = None
    if request.HasField("requested_execution_time"):
        requested = _time_field(request.requested_execution_time, "requested_execution_time")
    return NewPayment(
        request_id=request_id,
        fingerprint=fingerprint(request),
        debtor_account_id=debtor,
        creditor_account_id=creditor_account,
        creditor_wallet_partner_id=creditor_wallet,
        amount=amount,
        payment_type=payment_type,
        remittance_information=request.remittance_information,
        end_to_end_id=request.end_to_end_id,
        requested_execution_at=requested,
        external_creditor=external,
        psu=PsuContext(psu.ip_address, psu.device_id, psu.user_agent),
    )


def _time_field(value: timestamp_pb2.Timestamp, field: str) -> dt.datetime:
    try:
        return value.ToDatetime(dt.UTC)
    except (ValueError, OverflowError):
        raise InvalidArgument.field(field, "not a valid time") from None


FREQUENCIES = {
    payment_pb2.STANDING_ORDER_FREQUENCY_DAILY: Frequency.DAILY,
    payment_pb2.STANDING_ORDER_FREQUENCY_WEEKLY: Frequency.WEEKLY,
    payment_pb2.STANDING_ORDER_FREQUENCY_MONTHLY: Frequency.MONTHLY,
}


def new_standing_order(request: payment_pb2.CreateStandingOrderRequest) -> NewStandingOrder:
    """Validate a CreateStandingOrder request's shape (every bad field named at once)."""
    as_payment = payment_pb2.CreatePaymentRequest(
        request_id=request.request_id,
        debtor_account=request.debtor_account,
        amount=request.amount if request.HasField("amount") else None,
        type=request.type,
        remittance_information=request.remittance_information,
    )
    creditor = request.WhichOneof("creditor")
    if creditor == "creditor_account":
        as_payment.creditor_account = request.creditor_account
    elif creditor == "creditor_wallet":
        as_payment.creditor_wallet = request.creditor_wallet
    errors = FieldCollector()
    frequency = FREQUENCIES.get(request.frequency)
    errors.check(frequency is not None, "frequency", "must be DAILY, WEEKLY or MONTHLY")
    errors.check(request.HasField("first_execution_time"), "first_execution_time", "required")
    count = request.execution_count
    final = request.HasField("final_execution_time")
    errors.check(
        0 <= count <= MAX_EXECUTIONS,
        "execution_count",
        f"must be 1 to {MAX_EXECUTIONS}, or 0 with final_execution_time",
    )
    errors.check(bool(count) != final, "execution_count", "give execution_count or final_execution_time, not both")
    try:
        payment = new_payment(as_payment)
    except InvalidArgument as error:
        errors.violations.extend(error.violations)
        payment = None
    errors.raise_if_any()
    assert payment is not None and frequency is not None
    return NewStandingOrder(
        payment=dataclasses.replace(payment, fingerprint=fingerprint(request)),
        frequency=frequency,
        first_execution_at=_time_field(request.first_execution_time, "first_execution_time"),
        execution_count=count or None,
        final_execution_at=_time_field(request.final_execution_time, "final_execution_time") if final else None,
    )


def standing_order_message(order: StandingOrder) -> payment_pb2.StandingOrder:
    """The partner-facing view of a standing order."""
    message = payment_pb2.StandingOrder(
        name=resource_name("standingOrders", order.order_id),
        partner=resource_name("partners", order.partner_id),
        consent=resource_name("consents", order.consent_id),
        debtor_account=resource_name("accounts", order.debtor_account_id),
        amount=money_pb2.Money(currency_code=order.amount.currency, minor_units=order.amount.minor_units),
        type=payment_pb2.PaymentType.Value(f"PAYMENT_TYPE_{order.payment_type}"),
        frequency=payment_pb2.StandingOrderFrequency.Value(f"STANDING_ORDER_FREQUENCY_{order.frequency.name}"),
        first_execution_time=_timestamp(order.first_execution_at),
        execution_count=order.execution_count or 0,
        state=payment_pb2.StandingOrderState.Value(f"STANDING_ORDER_STATE_{order.state.name}"),
        executions_done=order.executions_done,
        remittance_information=order.remittance_information,
        create_time=_timestamp(order.created_at),
        update_time=_timestamp(order.updated_at),
    )
    if order.creditor_account_id:
        message.creditor_account = resource_name("accounts", order.creditor_account_id)
    elif order.creditor_wallet_partner_id:
        message.creditor_wallet = resource_name("partners", order.creditor_wallet_partner_id)
    if order.final_execution_at is not None:
        message.final_execution_time.CopyFrom(_timestamp(order.final_execution_at))
    if order.next_execution_at is not None:
        message.next_execution_time.CopyFrom(_timestamp(order.next_execution_at))
    return message


def event_message(event: PaymentEvent, snapshot: Payment | None) -> payment_pb2.PaymentEvent:
    """One streamed event."""
    message = payment_pb2.PaymentEvent(
        cursor=str(event.seq),
        payment=resource_name("payments", event.payment_id),
        previous_state=_state_value(event.previous_state),
        state=_state_value(event.state),
        status_reason=event.status_reason,
        event_time=_timestamp(event.event_time),
    )
    if snapshot is not None:
        # Only state, reason and update time ever change, and the message only on the final
        # change: the current payment with the event's values is the payment right after it.
        as_then = dataclasses.replace(
            snapshot,
            state=event.state,
            status_reason=event.status_reason,
            status_reason_message=snapshot.status_reason_message if event.state is snapshot.state else "",
            updated_at=event.event_time,
        )
        message.snapshot.CopyFrom(payment_message(as_then))
    return message


def audit_entry(step: RecordedStep) -> payment_admin_pb2.PaymentAuditEntry:
    """One audit-trail row."""
    return payment_admin_pb2.PaymentAuditEntry(
        step=step.step.value,
        outcome=step.outcome.value,
        time=_timestamp(step.recorded_at),
        trace_id=step.trace_id,
        detail=step.detail,
    )


def state_filter(value: int) -> PaymentState | None:
    """A ListPayments state filter; unknown values are INVALID_ARGUMENT."""
    if value == 0:
        return None
    try:
        return PaymentState[payment_pb2.PaymentState.Name(value).removeprefix("PAYMENT_STATE_")]
    except (KeyError, ValueError):
        raise InvalidArgument.field("state", "unknown payment state") from None
