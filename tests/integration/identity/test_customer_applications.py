"""A customer's applications (issue 28 item 3) on SQLite and PostgreSQL: the wallet's view of
its application holds nothing of the customer before the customer's consent; the bank's
customer app lists the customer's own applications (ListCustomerApplications, identity_0014's
index), with the wallet's name, and nobody else's."""

from __future__ import annotations

import datetime as dt

import grpc
import pytest
from google.protobuf import timestamp_pb2

from openbank.common.v1 import consent_permission_pb2
from openbank.identity.v1 import onboarding_pb2, onboarding_pb2_grpc
from tests.integration.identity.harness import Identity, bearer, failure, pkce_pair, request_id

pytestmark = pytest.mark.integration


def _stamp(moment: dt.datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def _application(family: str) -> onboarding_pb2.SubmitApplicationRequest:
    now = dt.datetime.now(dt.UTC)
    return onboarding_pb2.SubmitApplicationRequest(
        request_id=request_id(),
        applicant=onboarding_pb2.Applicant(
            given_name="Eva", family_name=family, birth_date="1984-05-06", email="eva@example.org", country_code="AT"
        ),
        evidence=onboarding_pb2.VerificationEvidence(
            document_type="PASSPORT",
            document_number=f"P{family.upper()}",
            document_expiry_date="2032-01-01",
            method="NFC_CHIP_AND_LIVENESS",
            verify_time=_stamp(now - dt.timedelta(hours=1)),
        ),
        terms=onboarding_pb2.TermsAcceptance(terms_version="2026-01", accept_time=_stamp(now)),
        currency_code="EUR",
        consent_permissions=[consent_permission_pb2.CONSENT_PERMISSION_READ_ACCOUNTS],
        code_challenge=pkce_pair()[1],
    )


async def test_the_customer_app_lists_the_customers_own_applications(identity: Identity) -> None:
    onboarding = onboarding_pb2_grpc.OnboardingServiceStub(identity.channel)
    partner = await identity.register_partner(scopes=("customers:onboard",))
    wallet = bearer(await identity.client_token(partner, ("customers:onboard",)))
    submitted = [
        (await onboarding.SubmitApplication(_application(family), metadata=wallet)).application
        for family in ("Gruber", "Huber")
    ]
    for application in submitted:
        assert application.state == onboarding_pb2.APPLICATION_STATE_APPROVED and application.consent
        # No consent authorised yet: nothing of the customer in the wallet's answers.
        seen = (
            await onboarding.GetApplication(
                onboarding_pb2.GetApplicationRequest(name=application.name), metadata=wallet
            )
        ).application
        assert not (
            application.HasField("applicant") or application.customer or seen.HasField("applicant") or seen.customer
        )

    admin, bank_app = await identity.admin(), await identity.bank_app()
    customers = [
        (
            await onboarding.ReviewApplication(onboarding_pb2.ReviewApplicationRequest(name=a.name), metadata=admin)
        ).application.customer
        for a in submitted
    ]
    assert all(customers) and customers[0] != customers[1]
    for application, customer in zip(submitted, customers, strict=True):
        listed = await onboarding.ListCustomerApplications(
            onboarding_pb2.ListCustomerApplicationsRequest(customer=customer), metadata=bank_app
        )
        assert [a.name for a in listed.applications] == [application.name]
        shown = listed.applications[0]
        assert shown.customer == customer and shown.applicant.family_name and not shown.activation_uri
        assert listed.partner_display_names == {shown.partner: "Wallet"} and not listed.next_page_token

    nobody = await onboarding.ListCustomerApplications(
        onboarding_pb2.ListCustomerApplicationsRequest(customer="customers/someoneelse"), metadata=bank_app
    )
    assert not nobody.applications
    code, reason = await failure(
        onboarding.ListCustomerApplications(
            onboarding_pb2.ListCustomerApplicationsRequest(customer=customers[0], page_size=-1), metadata=bank_app
        )
    )
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "FIELD_INVALID")
    # Partners do not list customers' applications.
    code, _ = await failure(
        onboarding.ListCustomerApplications(
            onboarding_pb2.ListCustomerApplicationsRequest(customer=customers[0]), metadata=wallet
        )
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED
