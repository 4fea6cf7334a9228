"""The conformance check of account opening (OnboardingService), creating nothing: an
application with a malformed date of birth is refused FIELD_INVALID naming the field, and an
unknown application is NOT_FOUND.

A mixin of :class:`meshcli.conformance_checks.ConformanceRun` (its client).
"""

from __future__ import annotations

import datetime as dt

import grpc

from meshcli.conformance_support import expect_error, ob
from openbank.identity.v1 import onboarding_pb2


class OnboardingChecks:
    """Checks of OnboardingService."""

    client: ob.OpenBankClient

    async def onboarding_refusals(self) -> str:
        now = dt.datetime.now(dt.UTC)
        malformed = await expect_error(
            self.client.submit_application(
                onboarding_pb2.Applicant(
                    given_name="Conformance",
                    family_name="Check",
                    birth_date="not-a-date",
                    email="conformance@example.org",
                    country_code="DE",
                ),
                onboarding_pb2.VerificationEvidence(
                    document_type="PASSPORT",
                    document_number="C0NF0RMANCE",
                    document_expiry_date="2031-01-01",
                    method="NFC_CHIP_AND_LIVENESS",
                ),
                terms_version="2026-01",
                terms_accepted=now,
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "FIELD_INVALID",
            bad_request_field="applicant.birth_date",
        )
        missing = await expect_error(
            self.client.get_application("applications/00000000000000000000000000000000"),
            grpc.StatusCode.NOT_FOUND,
            "RESOURCE_NOT_FOUND",
        )
        return f"{malformed}; {missing}"
