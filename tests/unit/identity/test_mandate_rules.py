"""Identity's rules for payment mandates (VRP): what a partner may ask for, what the customer
authorises, and that the mandate survives storage unchanged; no I/O."""

from __future__ import annotations

import datetime as dt

import pytest

from meshlib.errors import InvalidArgument
from meshlib.mandates import Mandate, PeriodicLimit, mandate_from_message, mandate_message
from services.identity.domain import consents
from services.identity.domain.consents import ConsentRequest, ConsentState
from services.identity.domain.mandates import MandateRequest, PeriodicLimitRequest
from services.identity.domain.secrets import b64url_sha256

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
EXPIRES = NOW + dt.timedelta(days=90)


def _mandate(**fields: object) -> MandateRequest:
    values: dict[str, object] = {
        "mandate_type": "SWEEPING",
        "creditor_account": None,
        "creditor_wallet": "p1",
        "maximum_individual": ("EUR", 5_000),
        "periodic_limits": (
            PeriodicLimitRequest("DAY", "CALENDAR", ("EUR", 10_000)),
            PeriodicLimitRequest("MONTH", "CONSENT", ("EUR", 50_000)),
        ),
    }
    values.update(fields)
    return MandateRequest(**values)  # type: ignore[arg-type]


def _create(mandate: MandateRequest, **fields: object) -> consents.Consent:
    values: dict[str, object] = {
        "permissions": ("INITIATE_PAYMENTS", "CONFIRM_FUNDS"),
        "expires_at": EXPIRES,
        "per_payment_limit": None,
        "period_limit": None,
        "period": None,
        "reads_per_day": 0,
        "code_challenge": b64url_sha256("v" * 43),
        "code_challenge_method": "S256",
        "mandate": mandate,
    }
    values.update(fields)
    return consents.create(ConsentRequest(**values), "p1", NOW)  # type: ignore[arg-type]


def _bad_fields(mandate: MandateRequest, **fields: object) -> set[str]:
    with pytest.raises(InvalidArgument) as raised:
        _create(mandate, **fields)
    assert raised.value.reason == "FIELD_INVALID"
    return {v.field for v in raised.value.violations}


def test_a_sweeping_mandate_to_the_partners_wallet_defaults_its_validity_to_the_consent() -> None:
    consent = _create(_mandate())
    assert consent.mandate == Mandate(
        mandate_type="SWEEPING",
        creditor_account_id=None,
        creditor_wallet_partner_id="p1",
        currency="EUR",
        maximum_individual_minor=5_000,
        periodic_limits=(PeriodicLimit("DAY", "CALENDAR", 10_000), PeriodicLimit("MONTH", "CONSENT", 50_000)),
        valid_from=NOW,
        valid_to=EXPIRES,
    )


def test_every_bad_mandate_field_is_named() -> None:
    assert _bad_fields(
        _mandate(
            mandate_type="UNSPECIFIED",
            creditor_wallet="p2",
            maximum_individual=("EUR", 0),
            periodic_limits=(
                PeriodicLimitRequest("UNSPECIFIED", "CALENDAR", ("EUR", 1)),
                PeriodicLimitRequest("FORTNIGHT", "CALENDAR", ("GBP", 1)),
                PeriodicLimitRequest("FORTNIGHT", "UNSPECIFIED", None),
            ),
            valid_to=EXPIRES + dt.timedelta(seconds=1),
        )
    ) == {
        "mandate.type",
        "mandate.creditor_wallet",
        "mandate.maximum_individual_amount.minor_units",
        "mandate.periodic_limits[0].period_type",
        "mandate.periodic_limits[1].period_alignment",
        "mandate.periodic_limits[2].period_type",
        "mandate.periodic_limits[2].period_alignment",
        "mandate.periodic_limits[2].maximum_amount",
        "mandate.valid_to_time",
    }
    assert _bad_fields(_mandate(creditor_wallet=None)) == {"mandate.creditor_account"}
    assert _bad_fields(_mandate(creditor_account="not a/name")) == {"mandate.creditor_account"}
    assert _bad_fields(_mandate(maximum_individual=None)) == {"mandate.maximum_individual_amount"}
    assert _bad_fields(_mandate(periodic_limits=(PeriodicLimitRequest("DAY", "CALENDAR", ("GBP", 10)),))) == {
        "mandate.periodic_limits[0].maximum_amount.currency_code"
    }
    assert _bad_fields(_mandate(valid_from=EXPIRES)) == {"mandate.valid_from_time"}


def test_a_mandates_consent_pays_and_confirms_funds_only_with_no_limits_of_its_own() -> None:
    assert _bad_fields(_mandate(), permissions=("INITIATE_PAYMENTS", "READ_BALANCES")) == {"permissions"}
    assert _bad_fields(_mandate(), permissions=("CONFIRM_FUNDS",)) == {"permissions"}
    assert _bad_fields(_mandate(), per_payment_limit=("EUR", 10)) == {"per_payment_limit"}
    assert _bad_fields(_mandate(), period_limit=("EUR", 10), period="DAY") == {"period_limit", "period"}


def test_the_customer_authorises_a_mandate_for_exactly_one_account_not_its_creditor() -> None:
    consent = _create(_mandate(creditor_wallet=None, creditor_account="shop"))
    for accounts in [("a1", "a2"), ("shop",), ()]:
        with pytest.raises(InvalidArgument):
            consent.authorise("cust", accounts, NOW)
    authorised = consent.authorise("cust", ("a1",), NOW)
    assert authorised.state is ConsentState.AUTHORISED and authorised.mandate == consent.mandate


def test_the_mandate_survives_storage_and_the_contract_unchanged() -> None:
    mandate = _create(_mandate(valid_from=NOW + dt.timedelta(days=1))).mandate
    assert mandate is not None
    assert Mandate.from_json(mandate.to_json()) == mandate
    assert mandate_from_message(mandate_message(mandate)) == mandate
    to_account = _create(_mandate(creditor_wallet=None, creditor_account="shop")).mandate
    assert to_account is not None and mandate_from_message(mandate_message(to_account)) == to_account
