"""The pre-money checks as plain rules: consent and limits (the risk rules: test_risk.py)."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshlib.auth.consent import ConsentView
from meshlib.errors import FailedPrecondition, NotFound, PermissionDenied
from meshlib.money import Amount
from services.payment.domain import checks
from services.payment.domain.checks import PartnerLimits
from tests.support.consents import consent_view

NOW = dt.datetime(2026, 11, 18, 15, 30, tzinfo=dt.UTC)  # a Wednesday


def _consent(**overrides) -> ConsentView:  # type: ignore[no-untyped-def]
    return consent_view(**{"customer_id": "cu1", "expires_at": NOW + dt.timedelta(days=1), **overrides})


def _reason(call) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises((FailedPrecondition, PermissionDenied, NotFound)) as raised:
        call()
    return raised.value.reason


def test_the_consent_must_be_usable_for_payments_and_cover_the_debtor_account() -> None:
    checks.check_consent(_consent(), "a1", NOW)
    assert _reason(lambda: checks.check_consent(_consent(paused=True), "a1", NOW)) == "CONSENT_PAUSED"
    assert _reason(lambda: checks.check_consent(_consent(expires_at=NOW), "a1", NOW)) == "CONSENT_EXPIRED"
    assert _reason(lambda: checks.check_consent(_consent(state="REVOKED"), "a1", NOW)) == "CONSENT_REVOKED"
    assert (
        _reason(lambda: checks.check_consent(_consent(permissions=frozenset({"READ_BALANCES"})), "a1", NOW))
        == "CONSENT_PERMISSION_MISSING"
    )
    assert _reason(lambda: checks.check_consent(_consent(), "a2", NOW)) == "RESOURCE_NOT_FOUND"


def test_limit_periods_start_at_the_utc_day_iso_week_and_month() -> None:
    assert checks.period_start("DAY", NOW) == dt.datetime(2026, 11, 18, tzinfo=dt.UTC)
    assert checks.period_start("WEEK", NOW) == dt.datetime(2026, 11, 16, tzinfo=dt.UTC)
    assert checks.period_start("MONTH", NOW) == dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


@settings(max_examples=60)
@given(limit=st.integers(1, 10_000), spent=st.integers(0, 10_000), amount=st.integers(1, 10_000))
def test_the_period_limit_allows_exactly_up_to_the_limit(limit: int, spent: int, amount: int) -> None:
    consent = _consent(period_limit_minor=limit, limit_currency="EUR", period="DAY")
    if spent + amount <= limit:
        checks.check_consent_limits(consent, Amount("EUR", amount), spent)
    else:
        assert _reason(lambda: checks.check_consent_limits(consent, Amount("EUR", amount), spent)) == (
            "CONSENT_LIMIT_EXCEEDED"
        )


def test_consent_and_partner_limits() -> None:
    consent = _consent(per_payment_limit_minor=500, limit_currency="EUR")
    checks.check_consent_limits(consent, Amount("EUR", 500), 0)
    assert _reason(lambda: checks.check_consent_limits(consent, Amount("EUR", 501), 0)) == "PAYMENT_LIMIT_EXCEEDED"
    assert _reason(lambda: checks.check_consent_limits(consent, Amount("GBP", 1), 0)) == "CONSENT_LIMIT_EXCEEDED"
    limits = PartnerLimits("p1", per_payment_minor=1_000, daily_minor=1_500, currency="EUR")
    checks.check_partner_limits(limits, Amount("EUR", 1_000), 500)
    assert _reason(lambda: checks.check_partner_limits(limits, Amount("EUR", 1_001), 0)) == "PAYMENT_LIMIT_EXCEEDED"
    assert _reason(lambda: checks.check_partner_limits(limits, Amount("EUR", 600), 1_000)) == "PARTNER_LIMIT_EXCEEDED"
    checks.check_partner_limits(PartnerLimits("p1"), Amount("EUR", 10**9), 10**9)
