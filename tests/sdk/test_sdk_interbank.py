"""The SDK's payments to other banks without a mesh: the creditor message, the request
create_payment sends, and waiting until the scheme answered."""

from __future__ import annotations

from typing import Any

import openbank_sdk as ob
import pytest
from openbank_sdk import interbank

from openbank.payment.v1 import payment_pb2


def test_a_creditor_is_an_iban_or_a_scheme_account_never_both() -> None:
    made = interbank.creditor(name="Erika", agent_bic="COBADEFFXXX", iban="DE89 3704 0044 0532 0130 00")
    assert (made.WhichOneof("account"), made.iban, made.agent_bic) == (
        "iban",
        "DE89 3704 0044 0532 0130 00",
        "COBADEFFXXX",
    )
    assert interbank.creditor(name="E", agent_bic="COBADEFF", scheme_account_id="X-1").scheme_account_id == "X-1"
    with pytest.raises(ValueError):
        interbank.creditor(name="E", agent_bic="COBADEFF")
    with pytest.raises(ValueError):
        interbank.creditor(name="E", agent_bic="COBADEFF", iban="DE89", scheme_account_id="X")


class Recorder(ob.ConsentSession):
    """A session that records the request instead of sending it."""

    def __init__(self, answers: list[payment_pb2.Payment] | None = None) -> None:  # nothing is sent
        self.sent: list[Any] = []
        self.answers = answers or []

    async def _call(self, method: Any, request: Any, *, mutating: bool = False) -> Any:
        self.sent.append(request)
        return payment_pb2.CreatePaymentResponse(payment=payment_pb2.Payment(name="payments/p1"))

    async def get_payment(self, name: str) -> payment_pb2.Payment:
        return self.answers.pop(0)


@pytest.mark.asyncio
async def test_create_payment_sends_an_external_transfer_to_the_creditor_at_the_other_bank() -> None:
    session = Recorder()
    session._payments = type("Stub", (), {"CreatePayment": None})()
    creditor = interbank.creditor(name="Erika", agent_bic="COBADEFFXXX", iban="DE89370400440532013000")
    await session.create_payment("accounts/a1", ob.money(500, "EUR"), creditor_external=creditor, request_id="r1")
    (request,) = session.sent
    assert request.type == payment_pb2.PAYMENT_TYPE_EXTERNAL_TRANSFER
    assert request.WhichOneof("creditor") == "creditor_external" and request.creditor_external == creditor
    with pytest.raises(ValueError):
        await session.create_payment(
            "accounts/a1", ob.money(1, "EUR"), creditor_account="accounts/a2", creditor_external=creditor
        )


@pytest.mark.asyncio
async def test_waiting_returns_once_the_scheme_answered() -> None:
    in_process = payment_pb2.Payment(name="payments/p1", state=payment_pb2.PAYMENT_STATE_SETTLEMENT_IN_PROCESS)
    settled = payment_pb2.Payment(name="payments/p1", state=payment_pb2.PAYMENT_STATE_SETTLED)
    session = Recorder([in_process, in_process, settled])
    assert (await interbank.wait_until_final(session, "payments/p1", poll_seconds=0)).state == settled.state
    with pytest.raises(TimeoutError):
        await interbank.wait_until_final(Recorder([in_process] * 3), "payments/p1", poll_seconds=0, timeout_seconds=0)
