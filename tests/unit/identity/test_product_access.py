"""Fair data use (issue 28 item 3): a wallet reads the customer's data in its application only
under the customer's live consent for the product (services/identity/domain/product_access.py)."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest

from services.identity.domain import consents
from services.identity.domain.onboarding import Application, ApplicationState, Reason, validate
from services.identity.domain.product_access import partner_reads_holdings
from tests.unit.identity.test_onboarding_rules import NOW, RAW, RULES

CHALLENGE = "A" * 43


def opened(permissions: tuple[str, ...] = ("READ_ACCOUNTS", "READ_BALANCES")) -> tuple[Application, consents.Consent]:
    """An application whose account is open, and its consent awaiting the customer."""
    consent = consents.create(
        consents.ConsentRequest(
            permissions=permissions,
            expires_at=NOW + dt.timedelta(days=90),
            per_payment_limit=None,
            period_limit=None,
            period=None,
            reads_per_day=4,
            code_challenge=CHALLENGE,
            code_challenge_method="S256",
        ),
        "wallet",
        NOW,
    )
    applicant = validate(RAW, RULES, NOW)
    application = Application(
        application_id="app1",
        partner_id="wallet",
        state=ApplicationState.ACCOUNT_OPEN,
        reason=Reason.CHECKS_PASSED,
        applicant=applicant,
        currency="EUR",
        consent_permissions=permissions,
        code_challenge=CHALLENGE,
        identity_key=applicant.identity_key(),
        document_key=applicant.document_key(),
        created_at=NOW,
        updated_at=NOW,
        customer_id="cust1",
        account_id="acc_new",
        consent_id=consent.consent_id,
    )
    return application, consent


def test_the_customers_authorisation_of_the_products_consent_opens_the_data() -> None:
    application, consent = opened()
    assert not partner_reads_holdings(application, consent, NOW)
    assert not partner_reads_holdings(application, None, NOW)
    authorised = consent.authorise("cust1", ("acc_new",), NOW)
    assert partner_reads_holdings(application, authorised, NOW)


@pytest.mark.parametrize(
    "change",
    [
        "paused",
        "revoked",
        "expired",
        "without READ_ACCOUNTS",
        "another account",
        "another consent",
        "another partner",
        "another customer",
        "account not open",
    ],
)
def test_anything_less_than_a_live_consent_for_the_product_keeps_it_closed(change: str) -> None:
    application, consent = opened()
    authorised = consent.authorise("cust1", ("acc_new",), NOW)
    now = NOW
    if change == "paused":
        authorised = authorised.pause(NOW)
    elif change == "revoked":
        authorised = authorised.revoke(NOW)
    elif change == "expired":
        now = authorised.expires_at
    elif change == "without READ_ACCOUNTS":
        application, consent = opened(("READ_BALANCES", "CONFIRM_FUNDS"))
        authorised = consent.authorise("cust1", ("acc_new",), NOW)
    elif change == "another account":
        authorised = replace(authorised, account_ids=("acc_other",))
    elif change == "another consent":
        authorised = replace(authorised, consent_id="someotherconsent")
    elif change == "another partner":
        authorised = replace(authorised, partner_id="other-wallet")
    elif change == "another customer":
        authorised = replace(authorised, customer_id="cust2")
    elif change == "account not open":
        application = replace(application, state=ApplicationState.APPROVED, account_id=None)
    assert not partner_reads_holdings(application, authorised, now)
