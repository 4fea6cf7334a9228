"""The debtor account check: the consenting customer's own, open account, in the payment's currency."""

from __future__ import annotations

import pytest

from meshlib.errors import FailedPrecondition, InvalidArgument, NotFound
from meshlib.money import Amount
from services.payment.domain.checks import LedgerAccountInfo, check_debtor_account
from tests.support.consents import consent_view

CONSENT = consent_view(customer_id="alice", account_ids=frozenset({"a1", "b1"}))


def test_the_customers_own_open_account_in_the_right_currency_passes() -> None:
    check_debtor_account(LedgerAccountInfo("a1", "alice", "EUR", True), CONSENT, Amount("EUR", 100))


def test_someone_elses_account_is_not_found_even_when_named_in_the_consent() -> None:
    with pytest.raises(NotFound):
        check_debtor_account(LedgerAccountInfo("b1", "bob", "EUR", True), CONSENT, Amount("EUR", 100))
    with pytest.raises(NotFound):  # a bank or settlement account has no customer
        check_debtor_account(LedgerAccountInfo("b1", None, "EUR", True), CONSENT, Amount("EUR", 100))


def test_frozen_accounts_and_foreign_currencies_are_refused_before_money_moves() -> None:
    with pytest.raises(FailedPrecondition) as frozen:
        check_debtor_account(LedgerAccountInfo("a1", "alice", "EUR", False), CONSENT, Amount("EUR", 100))
    assert frozen.value.reason == "ACCOUNT_NOT_ACTIVE"
    with pytest.raises(InvalidArgument) as currency:
        check_debtor_account(LedgerAccountInfo("a1", "alice", "EUR", True), CONSENT, Amount("USD", 100))
    assert currency.value.reason == "CURRENCY_MISMATCH"
    assert currency.value.violations[0].field == "amount.currency_code"
