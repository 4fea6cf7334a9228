"""gRPC servicer of OnboardingService (account opening through a partner) and its converters."""

from __future__ import annotations

from typing import Any

import grpc

from meshlib import totp
from meshlib.auth.context import require_caller
from meshlib.names import parse_name
from openbank.identity.v1 import onboarding_pb2, onboarding_pb2_grpc
from services.identity import converters
from services.identity.domain.onboarding import Application, ApplicationState, RawApplication
from services.identity.onboarding_service import Activation, OnboardingService
from services.identity.servicer import _answer, _key, _saved_as


def raw_application(request: onboarding_pb2.SubmitApplicationRequest) -> RawApplication:
    """The request's fields, unvalidated (the domain names every bad one)."""
    applicant, evidence, terms = request.applicant, request.evidence, request.terms
    return RawApplication(
        given_name=applicant.given_name,
        family_name=applicant.family_name,
        birth_date=applicant.birth_date,
        email=applicant.email,
        country_code=applicant.country_code,
        document_type=evidence.document_type,
        document_number=evidence.document_number,
        document_expiry=evidence.document_expiry_date,
        evidence_method=evidence.method,
        verified_at=converters.from_timestamp(evidence, "verify_time"),
        evidence_reference=evidence.reference,
        terms_version=terms.terms_version,
        terms_accepted_at=converters.from_timestamp(terms, "accept_time"),
        currency=request.currency_code,
    )


class OnboardingServicer(onboarding_pb2_grpc.OnboardingServiceServicer):
    """Applications: partners submit and read; operators list, read and decide; the bank's
    customer app activates."""

    def __init__(self, onboarding: OnboardingService) -> None:
        self._onboarding = onboarding

    def _message(
        self, application: Application, *, operator: bool = False, holdings: bool | None = None
    ) -> onboarding_pb2.Application:
        """The application as the bank sees it (``operator``), or as its partner does: the
        customer's data in it only when ``holdings`` (the customer's consent allows it)."""
        message = onboarding_pb2.Application(
            name=f"applications/{application.application_id}",
            state=onboarding_pb2.ApplicationState.Value(f"APPLICATION_STATE_{application.state.value}"),
            reason=onboarding_pb2.ApplicationReason.Value(f"APPLICATION_REASON_{application.reason.value}"),
            currency_code=application.currency,
            consent=f"consents/{application.consent_id}" if application.consent_id else "",
            activation_uri="" if operator else self._onboarding.activation_uri(application),
            create_time=converters.timestamp(application.created_at),
            update_time=converters.timestamp(application.updated_at),
            partner=f"partners/{application.partner_id}",
            decided_by=(application.decided_by or "") if operator else "",
        )
        if operator or holdings:
            applicant = application.applicant
            message.applicant.CopyFrom(
                onboarding_pb2.Applicant(
                    given_name=applicant.given_name,
                    family_name=applicant.family_name,
                    birth_date=applicant.birth_date.isoformat(),
                    email=applicant.email,
                    country_code=applicant.country_code,
                )
            )
            message.customer = f"customers/{application.customer_id}" if application.customer_id else ""
            message.account = f"accounts/{application.account_id}" if application.account_id else ""
        return message

    async def SubmitApplication(
        self, request: onboarding_pb2.SubmitApplicationRequest, context: grpc.aio.ServicerContext
    ) -> onboarding_pb2.SubmitApplicationResponse:
        """The bank's decision on a new application."""

        def build(result: Any) -> onboarding_pb2.SubmitApplicationResponse:
            return onboarding_pb2.SubmitApplicationResponse(application=self._message(result))

        partner_id = require_caller().require_partner()
        result = await self._onboarding.submit(
            _key("SubmitApplication", request),
            _saved_as(onboarding_pb2.SubmitApplicationResponse, build),
            partner_id,
            raw_application(request),
            converters.permission_names(request.consent_permissions),
            request.code_challenge,
        )
        return _answer(result, onboarding_pb2.SubmitApplicationResponse, build)

    async def GetApplication(
        self, request: onboarding_pb2.GetApplicationRequest, context: grpc.aio.ServicerContext
    ) -> onboarding_pb2.GetApplicationResponse:
        """One of the partner's applications."""
        partner_id = require_caller().require_partner()
        found, holdings = await self._onboarding.partner_view(parse_name(request.name, "applications"), partner_id)
        return onboarding_pb2.GetApplicationResponse(application=self._message(found, holdings=holdings))

    async def ListCustomerApplications(
        self, request: onboarding_pb2.ListCustomerApplicationsRequest, context: grpc.aio.ServicerContext
    ) -> onboarding_pb2.ListCustomerApplicationsResponse:
        """The bank's customer app: a customer's own applications, newest first."""
        customer_id = parse_name(request.customer, "customers", "customer")
        found, partners, token = await self._onboarding.list_for_customer(
            customer_id, request.page_size, request.page_token
        )
        messages = [self._message(a, holdings=True) for a in found]
        for message in messages:
            message.ClearField("activation_uri")  # the one-time link is for the customer's browser only
        return onboarding_pb2.ListCustomerApplicationsResponse(
            applications=messages,
            next_page_token=token,
            partner_display_names={f"partners/{p}": name for p, name in partners.items()},
        )

    async def ListApplications(
        self, request: onboarding_pb2.ListApplicationsRequest, context: grpc.aio.ServicerContext
    ) -> onboarding_pb2.ListApplicationsResponse:
        """Operators: newest first, optionally in one state."""
        state = None
        if request.state:
            state = ApplicationState(
                onboarding_pb2.ApplicationState.Name(request.state).removeprefix("APPLICATION_STATE_")
            )
        found, token = await self._onboarding.list(state, request.page_size, request.page_token)
        return onboarding_pb2.ListApplicationsResponse(
            applications=[self._message(a, operator=True) for a in found], next_page_token=token
        )

    async def ReviewApplication(
        self, request: onboarding_pb2.ReviewApplicationRequest, context: grpc.aio.ServicerContext
    ) -> onboarding_pb2.ReviewApplicationResponse:
        """Operators: any application."""
        found = await self._onboarding.get(parse_name(request.name, "applications"), partner_id=None)
        return onboarding_pb2.ReviewApplicationResponse(application=self._message(found, operator=True))

    async def DecideApplication(
        self, request: onboarding_pb2.DecideApplicationRequest, context: grpc.aio.ServicerContext
    ) -> onboarding_pb2.DecideApplicationResponse:
        """Operators: approve or decline a referred application."""

        def build(result: Any) -> onboarding_pb2.DecideApplicationResponse:
            return onboarding_pb2.DecideApplicationResponse(application=self._message(result, operator=True))

        result = await self._onboarding.decide_referred(
            _key("DecideApplication", request),
            _saved_as(onboarding_pb2.DecideApplicationResponse, build),
            parse_name(request.name, "applications"),
            request.approve,
            require_caller().subject,
        )
        return _answer(result, onboarding_pb2.DecideApplicationResponse, build)

    async def ResendActivationCode(
        self, request: onboarding_pb2.ResendActivationCodeRequest, context: grpc.aio.ServicerContext
    ) -> onboarding_pb2.ResendActivationCodeResponse:
        """Operators: a new activation code to the applicant (never in this answer)."""

        def build(result: Any) -> onboarding_pb2.ResendActivationCodeResponse:
            return onboarding_pb2.ResendActivationCodeResponse(application=self._message(result, operator=True))

        result = await self._onboarding.reissue_customer_code(
            _key("ResendActivationCode", request),
            _saved_as(onboarding_pb2.ResendActivationCodeResponse, build),
            parse_name(request.name, "applications"),
            require_caller().subject,
        )
        return _answer(result, onboarding_pb2.ResendActivationCodeResponse, build)

    async def ActivateCustomer(
        self, request: onboarding_pb2.ActivateCustomerRequest, context: grpc.aio.ServicerContext
    ) -> onboarding_pb2.ActivateCustomerResponse:
        """The customer's password and authenticator; the secret in this answer only."""

        def build(result: Activation, *, with_secret: bool) -> onboarding_pb2.ActivateCustomerResponse:
            response = onboarding_pb2.ActivateCustomerResponse(
                customer=f"customers/{result.customer_id}", username=result.username
            )
            if with_secret:
                response.totp_secret = totp.to_base32(result.totp_seed)
                response.otpauth_uri = totp.otpauth_uri(result.totp_seed, result.username)
            return response

        result = await self._onboarding.activate(
            _key("ActivateCustomer", request),
            _saved_as(onboarding_pb2.ActivateCustomerResponse, lambda r: build(r, with_secret=False)),
            parse_name(request.application, "applications"),
            request.activation_code,
            request.customer_code,
            request.password,
        )
        return _answer(result, onboarding_pb2.ActivateCustomerResponse, lambda r: build(r, with_secret=True))
