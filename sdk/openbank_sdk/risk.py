"""The bank's risk decision, as a wallet meets it.

Send the customer's IP address and device with each payment they make in front of you
(:func:`psu_context`). A payment may come back waiting: for the customer's confirmation in the
bank's app (``AWAITING_AUTHORISATION``) or for the bank's review (``PENDING_REVIEW``);
:func:`waiting` tells, :func:`what_next` says what to tell the customer, and
:func:`openbank_sdk.interbank.wait_until_final` (or the event stream) follows it to its end. A
payment the rules refuse outright fails ``FAILED_PRECONDITION`` ``RISK_REFUSED``.
"""

from __future__ import annotations

from openbank.payment.v1 import payment_pb2

WAITING_STATES = frozenset({payment_pb2.PAYMENT_STATE_AWAITING_AUTHORISATION, payment_pb2.PAYMENT_STATE_PENDING_REVIEW})
REFUSED_REASON = "RISK_REFUSED"


def psu_context(ip_address: str, device_id: str, user_agent: str = "") -> payment_pb2.PsuContext:
    """The customer present, for ``create_payment(psu_context=...)``."""
    if not ip_address or not device_id:
        raise ValueError("give the customer's IP address and device id")
    return payment_pb2.PsuContext(ip_address=ip_address, device_id=device_id, user_agent=user_agent)


def waiting(payment: payment_pb2.Payment) -> bool:
    """The payment waits for the customer or the bank; it is not final and nothing is held."""
    return payment.state in WAITING_STATES


def what_next(payment: payment_pb2.Payment) -> str:
    """A sentence for the customer about a waiting payment ("" when it does not wait)."""
    if payment.state == payment_pb2.PAYMENT_STATE_AWAITING_AUTHORISATION:
        return "Open your bank's app to confirm this payment."
    if payment.state == payment_pb2.PAYMENT_STATE_PENDING_REVIEW:
        return "Your bank is checking this payment; you will be told when it is done."
    return ""
