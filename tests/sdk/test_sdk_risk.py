"""The SDK and the bank's risk decision without a mesh: the PSU context create_payment sends,
and telling a waiting payment from a final one."""

from __future__ import annotations

from typing import Any

import openbank_sdk as ob
import pytest
from openbank_sdk import risk

from openbank.common.v1 import money_pb2
from openbank.payment.v1 import payment_pb2


class Recorder(ob.ConsentSession):
    """A session that records the request instead of sending it."""

    def __init__(self) -> None:  # nothing is sent
        self.sent: list[Any] = []
        self._payments = type("Stub", (), {"CreatePayment": None})()

    async def _call(self, method: Any, request: Any, *, mutating: bool = False) -> Any:
        self.sent.append(request)
        return payment_pb2.CreatePaymentResponse(payment=payment_pb2.Payment(name="payments/p1"))


async def test_create_payment_sends_the_customer_present() -> None:
    session = Recorder()
    context = risk.psu_context("203.0.113.7", "device-1", "wallet/3.2")
    await session.create_payment(
        "accounts/a1",
        money_pb2.Money(currency_code="EUR", minor_units=100),
        creditor_account="accounts/a2",
        psu_context=context,
    )
    (sent,) = session.sent
    assert (sent.psu_context.ip_address, sent.psu_context.device_id, sent.psu_context.user_agent) == (
        "203.0.113.7",
        "device-1",
        "wallet/3.2",
    )
    with pytest.raises(ValueError):
        risk.psu_context("203.0.113.7", "")


def test_a_waiting_payment_is_told_apart_and_explained() -> None:
    step_up = payment_pb2.Payment(state=payment_pb2.PAYMENT_STATE_AWAITING_AUTHORISATION)
    review = payment_pb2.Payment(state=payment_pb2.PAYMENT_STATE_PENDING_REVIEW)
    settled = payment_pb2.Payment(state=payment_pb2.PAYMENT_STATE_SETTLED)
    assert (risk.waiting(step_up), risk.waiting(review), risk.waiting(settled)) == (True, True, False)
    assert "app" in risk.what_next(step_up) and "checking" in risk.what_next(review)
    assert risk.what_next(settled) == ""
