"""CreatePayment request shape: every bad field named, the beneficiary checked."""

from __future__ import annotations

import pytest

from meshlib.errors import InvalidArgument
from openbank.common.v1 import money_pb2
from openbank.payment.v1 import payment_pb2
from services.payment.converters import new_payment


def _request(**overrides) -> payment_pb2.CreatePaymentRequest:  # type: ignore[no-untyped-def]
    values = dict(
        request_id="r-1",
        debtor_account="accounts/a1",
        creditor_wallet="partners/p1",
        amount=money_pb2.Money(currency_code="EUR", minor_units=100),
        type=payment_pb2.PAYMENT_TYPE_WALLET_TOP_UP,
    )
    values.update(overrides)
    return payment_pb2.CreatePaymentRequest(**values)  # type: ignore[arg-type]


def _fields(request: payment_pb2.CreatePaymentRequest) -> set[str]:
    with pytest.raises(InvalidArgument) as raised:
        new_payment(request)
    return {v.field for v in raised.value.violations}


def test_a_valid_top_up_and_the_fields_it_carries() -> None:
    parsed = new_payment(_request(end_to_end_id="e2e-1"))
    assert (parsed.debtor_account_id, parsed.creditor_wallet_partner_id, parsed.payment_type) == (
        "a1",
        "p1",
        "WALLET_TOP_UP",
    )
    assert parsed.amount.minor_units == 100 and parsed.end_to_end_id == "e2e-1"
    # The fingerprint ignores the request id and sees any payload change.
    assert new_payment(_request(request_id="r-2")).fingerprint == new_payment(_request()).fingerprint
    assert new_payment(_request(remittance_information="x")).fingerprint != new_payment(_request()).fingerprint


def test_every_bad_field_is_named() -> None:
    bad = payment_pb2.CreatePaymentRequest(
        request_id="bad id!", debtor_account="acc/1", remittance_information="x" * 141
    )
    assert _fields(bad) == {
        "request_id",
        "debtor_account",
        "type",
        "amount",
        "creditor_account",
        "remittance_information",
    }
    assert _fields(_request(amount=money_pb2.Money(currency_code="EUR", minor_units=0))) == {"amount.minor_units"}
    assert _fields(_request(type=payment_pb2.PAYMENT_TYPE_TRANSFER)) == {"creditor_wallet"}
    assert _fields(_request(end_to_end_id="x" * 36)) == {"end_to_end_id"}


def test_paying_the_debtor_account_itself_is_an_invalid_beneficiary() -> None:
    with pytest.raises(InvalidArgument) as raised:
        new_payment(_request(creditor_account="accounts/a1", type=payment_pb2.PAYMENT_TYPE_TRANSFER))
    assert raised.value.reason == "BENEFICIARY_INVALID"
