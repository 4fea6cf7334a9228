"""The fake scheme's controls (what a saga test does to it), beyond the contract it shares with
the real connector (tests/integration/scheme/test_connector_contract.py)."""

from __future__ import annotations

import pytest

from meshlib.errors import AlreadyExists, Unavailable
from meshlib.money import Amount
from services.payment.adapters.clearing import (
    ClearingOutcomeUnknown,
    ClearingStatus,
    OutboundCreditTransfer,
    SchemeAccount,
)
from tests.unit.payment.clearing_fake import Behaviour, FakeClearingConnector

CREDITOR = "DE89370400440532013000"


def transfer(message_id: str = "m-1", minor: int = 500) -> OutboundCreditTransfer:
    return OutboundCreditTransfer(
        message_id=message_id,
        end_to_end_id="e2e",
        amount=Amount("EUR", minor),
        debtor_name="Alice",
        debtor_account=SchemeAccount.scheme_id("acc-1"),
        debtor_agent="OBNKGB2L",
        creditor_name="Bob",
        creditor_account=SchemeAccount.iban(CREDITOR),
        creditor_agent="COBADEFF",
    )


async def test_pending_then_settled_then_returned() -> None:
    scheme = FakeClearingConnector()
    scheme.script(CREDITOR, Behaviour.accept())
    assert (await scheme.submit(transfer())).status is ClearingStatus.ACCEPTED
    scheme.settle("m-1")
    assert (await scheme.status("m-1")).status is ClearingStatus.SETTLED
    item = scheme.return_payment("m-1", "AC04")
    page = await scheme.returns()
    assert page.returns == (item,) and page.cursor == "1" and not page.more
    assert (await scheme.status("m-1")).payment_return is not None
    with pytest.raises(AlreadyExists):
        scheme.return_payment("m-1", "AC04")  # once


async def test_rejected_after_acceptance_and_predicates() -> None:
    scheme = FakeClearingConnector()
    scheme.script(lambda t: t.amount.minor_units > 1_000, Behaviour.reject("AM02"))
    scheme.script(CREDITOR, Behaviour.accept())
    assert (await scheme.submit(transfer("big", minor=1_001))).reason_code == "AM02"
    await scheme.submit(transfer("m-2"))
    scheme.reject("m-2", "AB05")
    report = await scheme.status("m-2")
    assert (report.status, report.reason_code, report.clearing_reference) == (ClearingStatus.REJECTED, "AB05", "")
    assert scheme.submissions == ["big", "m-2"]


async def test_a_scheme_that_is_down() -> None:
    scheme = FakeClearingConnector(down=True)
    with pytest.raises(ClearingOutcomeUnknown):
        await scheme.submit(transfer())
    with pytest.raises(Unavailable):
        await scheme.status("m-1")
    scheme.down = False
    assert (await scheme.status("m-1")).status is ClearingStatus.UNKNOWN
