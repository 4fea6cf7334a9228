"""Payments to other banks: the creditor at the other bank, and waiting for the scheme.

A payment to another bank (``PAYMENT_TYPE_EXTERNAL_TRANSFER``) goes through the interbank
clearing scheme: :meth:`openbank_sdk.ConsentSession.create_payment` with
``creditor_external=interbank.creditor(...)`` usually answers it SETTLEMENT_IN_PROCESS (or
already SETTLED); the bank follows the scheme and the payment ends SETTLED or REJECTED (the
other bank's refusal as ``status_reason``, e.g. CREDITOR_ACCOUNT_CLOSED, with the ISO 20022
code first in ``status_reason_message``). Follow it with WatchPayments, or
:func:`wait_until_final`. A settled payment the other bank sends back days later shows a
REFUND in its ``refunds`` (``return_reason`` the scheme's code) and the money back on the
debtor account.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from openbank.payment.v1 import payment_pb2

EXTERNAL_TRANSFER = payment_pb2.PAYMENT_TYPE_EXTERNAL_TRANSFER
FINAL_STATES = frozenset(
    {payment_pb2.PAYMENT_STATE_SETTLED, payment_pb2.PAYMENT_STATE_REJECTED, payment_pb2.PAYMENT_STATE_CANCELLED}
)


def creditor(*, name: str, agent_bic: str, iban: str = "", scheme_account_id: str = "") -> payment_pb2.ExternalCreditor:
    """The creditor at another bank: an IBAN (spaces allowed, the bank checks its digits) or an
    account id of the scheme's own, the creditor's name and its bank's BIC."""
    if bool(iban) == bool(scheme_account_id):
        raise ValueError("give exactly one of iban and scheme_account_id")
    message = payment_pb2.ExternalCreditor(name=name, agent_bic=agent_bic)
    if iban:
        message.iban = iban
    else:
        message.scheme_account_id = scheme_account_id
    return message


async def wait_until_final(
    session: Any, name: str, *, poll_seconds: float = 1.0, timeout_seconds: float = 300.0
) -> payment_pb2.Payment:
    """GetPayment every ``poll_seconds`` until the payment is final (the scheme answered), or
    ``TimeoutError`` after ``timeout_seconds`` (the payment stays in flight: ask again later)."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        payment = await session.get_payment(name)
        if payment.state in FINAL_STATES:
            return payment
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{name} is still {payment_pb2.PaymentState.Name(payment.state)}")
        await asyncio.sleep(poll_seconds)
