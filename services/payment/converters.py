"""Protobuf <-> domain conversions for payments (no rules here)."""

from __future__ import annotations

from google.protobuf import timestamp_pb2

from meshlib.names import resource_name
from openbank.common.v1 import money_pb2
from openbank.payment.v1 import payment_pb2
from services.payment.domain.payments import Payment


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
    return message
