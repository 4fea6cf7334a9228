"""gRPC servicers for identity: protobuf in, protobuf out, nothing else."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from meshlib import totp
from meshlib.auth.certificates import CertificateSource
from meshlib.auth.context import require_caller
from meshlib.errors import InvalidArgument
from meshlib.idempotency import fingerprint
from meshlib.names import parse_name
from meshlib.storage import Codec, IdempotencyKey
from openbank.identity.v1 import (
    consent_pb2,
    consent_pb2_grpc,
    customer_pb2,
    customer_pb2_grpc,
    partner_pb2,
    partner_pb2_grpc,
    signing_key_pb2,
    signing_key_pb2_grpc,
    token_pb2,
    token_pb2_grpc,
)
from services.identity import converters
from services.identity.consent_service import AuthorisedConsent, ConsentService
from services.identity.customer_service import CustomerService, NewCustomer
from services.identity.domain.customers import CustomerStatus
from services.identity.keys_service import KeyService
from services.identity.partner_service import PartnerService, PartnerWithSecret
from services.identity.token_service import TokenService

ResponseT = TypeVar("ResponseT", bound=Message)


def _key(method: str, request: Any) -> IdempotencyKey:
    """The idempotency key of a mutating call, scoped to the authenticated caller."""
    return IdempotencyKey(require_caller().subject, method, request.request_id, fingerprint(request))


def _saved_as(response_type: type[ResponseT], build: Callable[[Any], ResponseT]) -> Codec[Any]:
    """A use case's answer saved as the response message ``build`` makes of it (leaving out
    what is shown once); a replay reads that message back."""
    return Codec(lambda result: build(result).SerializeToString(), response_type.FromString)


def _answer(result: Any, response_type: type[ResponseT], build: Callable[[Any], ResponseT]) -> ResponseT:
    """The fresh answer, or the saved one for a replay."""
    return result if isinstance(result, response_type) else build(result)


class TokenServicer(token_pb2_grpc.TokenServiceServicer):
    """OAuth2 token endpoint, revocation, introspection and the JWKS."""

    def __init__(self, keys: KeyService, tokens: TokenService, certificates: CertificateSource) -> None:
        self._keys = keys
        self._tokens = tokens
        # The partner's TLS client certificate: forwarded by the gateway, or this hop's own.
        self._certificate_sha256 = certificates

    async def IssueToken(
        self, request: token_pb2.IssueTokenRequest, context: grpc.aio.ServicerContext
    ) -> token_pb2.IssueTokenResponse:
        """OAuth 2.0 token endpoint."""
        issued = await self._tokens.issue(converters.token_request(request, self._certificate_sha256(context)))
        return token_pb2.IssueTokenResponse(
            access_token=issued.access_token,
            token_type="Bearer",
            expires_in=issued.expires_in,
            refresh_token=issued.refresh_token,
            scopes=list(issued.scopes),
            consent=f"consents/{issued.consent_id}" if issued.consent_id else "",
        )

    async def RevokeToken(
        self, request: token_pb2.RevokeTokenRequest, context: grpc.aio.ServicerContext
    ) -> token_pb2.RevokeTokenResponse:
        """RFC 7009 revocation."""
        await self._tokens.revoke(
            converters.client_credentials(request, self._certificate_sha256(context)),
            request.token,
            converters.token_hint(request.token_type_hint),
        )
        return token_pb2.RevokeTokenResponse()

    async def GetJwks(
        self, request: token_pb2.GetJwksRequest, context: grpc.aio.ServicerContext
    ) -> token_pb2.GetJwksResponse:
        """The public keys that verify access tokens."""
        return converters.jwks_response(await self._keys.jwks())

    async def IntrospectToken(
        self, request: token_pb2.IntrospectTokenRequest, context: grpc.aio.ServicerContext
    ) -> token_pb2.IntrospectTokenResponse:
        """RFC 7662 introspection."""
        return converters.introspection_response(await self._tokens.introspect(request.token))

    async def CheckTokenStatuses(
        self, request: token_pb2.CheckTokenStatusesRequest, context: grpc.aio.ServicerContext
    ) -> token_pb2.CheckTokenStatusesResponse:
        """The statuses of many tokens, as IntrospectToken answers each (open streams' re-checks)."""
        answers = await self._tokens.statuses.of_tokens(list(request.tokens))
        return token_pb2.CheckTokenStatusesResponse(statuses=[converters.introspection_response(a) for a in answers])


def _registered(result: PartnerWithSecret, *, with_secret: bool) -> partner_pb2.RegisterPartnerResponse:
    return partner_pb2.RegisterPartnerResponse(
        partner=converters.partner_message(result.partner), client_secret=result.client_secret if with_secret else ""
    )


def _rotated(result: PartnerWithSecret, *, with_secret: bool) -> partner_pb2.RotateClientSecretResponse:
    return partner_pb2.RotateClientSecretResponse(
        partner=converters.partner_message(result.partner), client_secret=result.client_secret if with_secret else ""
    )


class PartnerServicer(partner_pb2_grpc.PartnerServiceServicer):
    """Partner administration."""

    def __init__(self, partners: PartnerService) -> None:
        self._partners = partners

    async def RegisterPartner(
        self, request: partner_pb2.RegisterPartnerRequest, context: grpc.aio.ServicerContext
    ) -> partner_pb2.RegisterPartnerResponse:
        """Register; the client secret is in this answer only (a replay leaves it empty)."""
        key = _key("RegisterPartner", request)
        saved = _saved_as(partner_pb2.RegisterPartnerResponse, lambda r: _registered(r, with_secret=False))
        result = await self._partners.register(key, saved, converters.registration(request))
        return _answer(result, partner_pb2.RegisterPartnerResponse, lambda r: _registered(r, with_secret=True))

    async def GetPartner(
        self, request: partner_pb2.GetPartnerRequest, context: grpc.aio.ServicerContext
    ) -> partner_pb2.GetPartnerResponse:
        """One partner."""
        partner = await self._partners.get(parse_name(request.name, "partners"))
        return partner_pb2.GetPartnerResponse(partner=converters.partner_message(partner))

    async def ListPartners(
        self, request: partner_pb2.ListPartnersRequest, context: grpc.aio.ServicerContext
    ) -> partner_pb2.ListPartnersResponse:
        """Oldest first, paginated."""
        page, token = await self._partners.list(
            status=converters.partner_status_filter(request.status),
            requested_size=request.page_size,
            page_token=request.page_token,
        )
        return partner_pb2.ListPartnersResponse(
            partners=[converters.partner_message(p) for p in page], next_page_token=token
        )

    async def UpdatePartner(
        self, request: partner_pb2.UpdatePartnerRequest, context: grpc.aio.ServicerContext
    ) -> partner_pb2.UpdatePartnerResponse:
        """Change the set fields."""

        def build(partner: Any) -> partner_pb2.UpdatePartnerResponse:
            return partner_pb2.UpdatePartnerResponse(partner=converters.partner_message(partner))

        partner_id = parse_name(request.name, "partners")
        result = await self._partners.update(
            _key("UpdatePartner", request),
            _saved_as(partner_pb2.UpdatePartnerResponse, build),
            partner_id,
            converters.partner_changes(request),
        )
        return _answer(result, partner_pb2.UpdatePartnerResponse, build)

    async def SuspendPartner(
        self, request: partner_pb2.SuspendPartnerRequest, context: grpc.aio.ServicerContext
    ) -> partner_pb2.SuspendPartnerResponse:
        """Suspend."""

        def build(partner: Any) -> partner_pb2.SuspendPartnerResponse:
            return partner_pb2.SuspendPartnerResponse(partner=converters.partner_message(partner))

        partner_id = parse_name(request.name, "partners")
        if len(request.reason) > 500:
            raise InvalidArgument.field("reason", "at most 500 characters")
        result = await self._partners.suspend(
            _key("SuspendPartner", request), _saved_as(partner_pb2.SuspendPartnerResponse, build), partner_id
        )
        return _answer(result, partner_pb2.SuspendPartnerResponse, build)

    async def ReactivatePartner(
        self, request: partner_pb2.ReactivatePartnerRequest, context: grpc.aio.ServicerContext
    ) -> partner_pb2.ReactivatePartnerResponse:
        """Reactivate."""

        def build(partner: Any) -> partner_pb2.ReactivatePartnerResponse:
            return partner_pb2.ReactivatePartnerResponse(partner=converters.partner_message(partner))

        partner_id = parse_name(request.name, "partners")
        result = await self._partners.reactivate(
            _key("ReactivatePartner", request), _saved_as(partner_pb2.ReactivatePartnerResponse, build), partner_id
        )
        return _answer(result, partner_pb2.ReactivatePartnerResponse, build)

    async def RotateClientSecret(
        self, request: partner_pb2.RotateClientSecretRequest, context: grpc.aio.ServicerContext
    ) -> partner_pb2.RotateClientSecretResponse:
        """A new client secret, shown once."""
        partner_id = parse_name(request.name, "partners")
        key = _key("RotateClientSecret", request)
        saved = _saved_as(partner_pb2.RotateClientSecretResponse, lambda r: _rotated(r, with_secret=False))
        result = await self._partners.rotate_secret(key, saved, partner_id)
        return _answer(result, partner_pb2.RotateClientSecretResponse, lambda r: _rotated(r, with_secret=True))


def _created(result: NewCustomer, *, with_secret: bool) -> customer_pb2.CreateCustomerResponse:
    response = customer_pb2.CreateCustomerResponse(customer=converters.customer_message(result.customer))
    if with_secret:
        response.totp_secret = totp.to_base32(result.totp_seed)
        response.otpauth_uri = totp.otpauth_uri(result.totp_seed, result.customer.username)
    return response


class CustomerServicer(customer_pb2_grpc.CustomerServiceServicer):
    """Customers and strong customer authentication."""

    def __init__(self, customers: CustomerService) -> None:
        self._customers = customers

    async def CreateCustomer(
        self, request: customer_pb2.CreateCustomerRequest, context: grpc.aio.ServicerContext
    ) -> customer_pb2.CreateCustomerResponse:
        """Create; the TOTP secret is in this answer only."""
        key = _key("CreateCustomer", request)
        saved = _saved_as(customer_pb2.CreateCustomerResponse, lambda r: _created(r, with_secret=False))
        result = await self._customers.create(
            key, saved, request.username, request.password, request.display_name, request.totp_secret
        )
        return _answer(result, customer_pb2.CreateCustomerResponse, lambda r: _created(r, with_secret=True))

    async def GetCustomer(
        self, request: customer_pb2.GetCustomerRequest, context: grpc.aio.ServicerContext
    ) -> customer_pb2.GetCustomerResponse:
        """One customer, without credentials."""
        customer = await self._customers.get(parse_name(request.name, "customers"))
        return customer_pb2.GetCustomerResponse(customer=converters.customer_message(customer))

    async def GetCustomerRiskSignals(
        self, request: customer_pb2.GetCustomerRiskSignalsRequest, context: grpc.aio.ServicerContext
    ) -> customer_pb2.GetCustomerRiskSignalsResponse:
        """What the risk decision weighs: failed authentications since the last good one, the lock."""
        customer = await self._customers.get(parse_name(request.name, "customers"))
        return customer_pb2.GetCustomerRiskSignalsResponse(
            customer=f"customers/{customer.customer_id}",
            failed_sign_ins=customer.failed_attempts,
            locked=customer.status is CustomerStatus.LOCKED,
        )

    async def ListCustomers(
        self, request: customer_pb2.ListCustomersRequest, context: grpc.aio.ServicerContext
    ) -> customer_pb2.ListCustomersResponse:
        """Customers, oldest first, without credentials."""
        page, token = await self._customers.list(request.username_prefix, request.page_size, request.page_token)
        return customer_pb2.ListCustomersResponse(
            customers=[converters.customer_message(c) for c in page], next_page_token=token
        )

    async def AuthenticateCustomer(
        self, request: customer_pb2.AuthenticateCustomerRequest, context: grpc.aio.ServicerContext
    ) -> customer_pb2.AuthenticateCustomerResponse:
        """Password + one-time code."""

        def build(customer: Any) -> customer_pb2.AuthenticateCustomerResponse:
            return customer_pb2.AuthenticateCustomerResponse(customer=f"customers/{customer.customer_id}")

        key = _key("AuthenticateCustomer", request)
        saved = _saved_as(customer_pb2.AuthenticateCustomerResponse, build)
        result = await self._customers.authenticate(
            key, saved, request.username, request.password, request.one_time_code
        )
        return _answer(result, customer_pb2.AuthenticateCustomerResponse, build)

    async def UnlockCustomer(
        self, request: customer_pb2.UnlockCustomerRequest, context: grpc.aio.ServicerContext
    ) -> customer_pb2.UnlockCustomerResponse:
        """Operator unlock."""

        def build(customer: Any) -> customer_pb2.UnlockCustomerResponse:
            return customer_pb2.UnlockCustomerResponse(customer=converters.customer_message(customer))

        customer_id = parse_name(request.name, "customers")
        result = await self._customers.unlock(
            _key("UnlockCustomer", request), _saved_as(customer_pb2.UnlockCustomerResponse, build), customer_id
        )
        return _answer(result, customer_pb2.UnlockCustomerResponse, build)


def _consent_builder(response_type: type[ResponseT]) -> Callable[[Any], ResponseT]:
    return lambda consent: response_type(consent=converters.consent_message(consent))


def _authorised(result: AuthorisedConsent) -> consent_pb2.AuthoriseConsentResponse:
    return consent_pb2.AuthoriseConsentResponse(
        authorization_code=result.authorization_code,
        consent=converters.consent_message(result.consent),
        authorization_code_expire_time=converters.timestamp(result.code_expires_at),
    )


class ConsentServicer(consent_pb2_grpc.ConsentServiceServicer):
    """Consents: the partner's side and the bank app's side."""

    def __init__(self, consents: ConsentService) -> None:
        self._consents = consents

    async def CreateConsent(
        self, request: consent_pb2.CreateConsentRequest, context: grpc.aio.ServicerContext
    ) -> consent_pb2.CreateConsentResponse:
        """A consent awaiting authorisation, owned by the calling partner."""
        build = _consent_builder(consent_pb2.CreateConsentResponse)
        partner_id = require_caller().require_partner()
        result = await self._consents.create(
            _key("CreateConsent", request),
            _saved_as(consent_pb2.CreateConsentResponse, build),
            partner_id,
            converters.consent_request(request),
        )
        return _answer(result, consent_pb2.CreateConsentResponse, build)

    async def GetConsent(
        self, request: consent_pb2.GetConsentRequest, context: grpc.aio.ServicerContext
    ) -> consent_pb2.GetConsentResponse:
        """The calling partner's consent (internal services may read any)."""
        caller = require_caller()
        is_service = caller.subject.startswith("service:") and not caller.partner_id
        partner_id = None if is_service else caller.require_partner()
        consent = await self._consents.get(parse_name(request.name, "consents"), partner_id=partner_id)
        return consent_pb2.GetConsentResponse(consent=converters.consent_message(consent))

    async def RevokeConsent(
        self, request: consent_pb2.RevokeConsentRequest, context: grpc.aio.ServicerContext
    ) -> consent_pb2.RevokeConsentResponse:
        """The partner revokes its consent."""
        build = _consent_builder(consent_pb2.RevokeConsentResponse)
        partner_id = require_caller().require_partner()
        consent_id = parse_name(request.name, "consents")
        result = await self._consents.revoke_by_partner(
            _key("RevokeConsent", request), _saved_as(consent_pb2.RevokeConsentResponse, build), partner_id, consent_id
        )
        return _answer(result, consent_pb2.RevokeConsentResponse, build)

    async def AuthoriseConsent(
        self, request: consent_pb2.AuthoriseConsentRequest, context: grpc.aio.ServicerContext
    ) -> consent_pb2.AuthoriseConsentResponse:
        """SCA + account choice -> AUTHORISED and a one-time authorization code."""
        consent_id = parse_name(request.name, "consents")
        accounts = converters.account_ids(request.accounts)
        result = await self._consents.authorise(
            _key("AuthoriseConsent", request),
            _saved_as(consent_pb2.AuthoriseConsentResponse, _authorised),
            consent_id,
            request.username,
            request.password,
            request.one_time_code,
            accounts,
        )
        return _answer(result, consent_pb2.AuthoriseConsentResponse, _authorised)

    async def RejectConsent(
        self, request: consent_pb2.RejectConsentRequest, context: grpc.aio.ServicerContext
    ) -> consent_pb2.RejectConsentResponse:
        """The customer refuses."""
        build = _consent_builder(consent_pb2.RejectConsentResponse)
        consent_id = parse_name(request.name, "consents")
        customer_id = parse_name(request.customer, "customers", "customer")
        result = await self._consents.reject(
            _key("RejectConsent", request), _saved_as(consent_pb2.RejectConsentResponse, build), consent_id, customer_id
        )
        return _answer(result, consent_pb2.RejectConsentResponse, build)

    async def ListCustomerConsents(
        self, request: consent_pb2.ListCustomerConsentsRequest, context: grpc.aio.ServicerContext
    ) -> consent_pb2.ListCustomerConsentsResponse:
        """A customer's consents, newest first."""
        customer_id = parse_name(request.customer, "customers", "customer")
        page, token = await self._consents.list_for_customer(
            customer_id,
            state=converters.consent_state_filter(request.state),
            requested_size=request.page_size,
            page_token=request.page_token,
        )
        partners = await self._consents.partner_display_names(page)
        return consent_pb2.ListCustomerConsentsResponse(
            consents=[converters.consent_message(c) for c in page],
            next_page_token=token,
            partner_display_names={f"partners/{p}": display for p, display in partners.items()},
        )

    async def PauseConsent(
        self, request: consent_pb2.PauseConsentRequest, context: grpc.aio.ServicerContext
    ) -> consent_pb2.PauseConsentResponse:
        """Pause."""
        build = _consent_builder(consent_pb2.PauseConsentResponse)
        consent_id, customer_id = _consent_and_customer(request)
        result = await self._consents.pause(
            _key("PauseConsent", request), _saved_as(consent_pb2.PauseConsentResponse, build), consent_id, customer_id
        )
        return _answer(result, consent_pb2.PauseConsentResponse, build)

    async def ResumeConsent(
        self, request: consent_pb2.ResumeConsentRequest, context: grpc.aio.ServicerContext
    ) -> consent_pb2.ResumeConsentResponse:
        """Resume."""
        build = _consent_builder(consent_pb2.ResumeConsentResponse)
        consent_id, customer_id = _consent_and_customer(request)
        result = await self._consents.resume(
            _key("ResumeConsent", request), _saved_as(consent_pb2.ResumeConsentResponse, build), consent_id, customer_id
        )
        return _answer(result, consent_pb2.ResumeConsentResponse, build)

    async def UpdateConsentLimits(
        self, request: consent_pb2.UpdateConsentLimitsRequest, context: grpc.aio.ServicerContext
    ) -> consent_pb2.UpdateConsentLimitsResponse:
        """Narrow."""
        build = _consent_builder(consent_pb2.UpdateConsentLimitsResponse)
        consent_id, customer_id = _consent_and_customer(request)
        result = await self._consents.narrow(
            _key("UpdateConsentLimits", request),
            _saved_as(consent_pb2.UpdateConsentLimitsResponse, build),
            consent_id,
            customer_id,
            converters.consent_narrowing(request),
        )
        return _answer(result, consent_pb2.UpdateConsentLimitsResponse, build)

    async def CustomerRevokeConsent(
        self, request: consent_pb2.CustomerRevokeConsentRequest, context: grpc.aio.ServicerContext
    ) -> consent_pb2.CustomerRevokeConsentResponse:
        """The customer revokes."""
        build = _consent_builder(consent_pb2.CustomerRevokeConsentResponse)
        consent_id, customer_id = _consent_and_customer(request)
        result = await self._consents.revoke_by_customer(
            _key("CustomerRevokeConsent", request),
            _saved_as(consent_pb2.CustomerRevokeConsentResponse, build),
            consent_id,
            customer_id,
        )
        return _answer(result, consent_pb2.CustomerRevokeConsentResponse, build)


def _consent_and_customer(request: Any) -> tuple[str, str]:
    return parse_name(request.name, "consents"), parse_name(request.customer, "customers", "customer")


class SigningKeyServicer(signing_key_pb2_grpc.SigningKeyServiceServicer):
    """Signing-key rotation and listing."""

    def __init__(self, keys: KeyService) -> None:
        self._keys = keys

    async def RotateSigningKey(
        self, request: signing_key_pb2.RotateSigningKeyRequest, context: grpc.aio.ServicerContext
    ) -> signing_key_pb2.RotateSigningKeyResponse:
        """A new ACTIVE key; the previous one keeps verifying until its tokens expired."""

        def build(pair: Any) -> signing_key_pb2.RotateSigningKeyResponse:
            fresh, previous = pair
            return signing_key_pb2.RotateSigningKeyResponse(
                active_key=converters.signing_key_message(fresh),
                retiring_key=converters.signing_key_message(previous) if previous else None,
            )

        result = await self._keys.rotate_idempotently(
            _key("RotateSigningKey", request), _saved_as(signing_key_pb2.RotateSigningKeyResponse, build)
        )
        return _answer(result, signing_key_pb2.RotateSigningKeyResponse, build)

    async def ListSigningKeys(
        self, request: signing_key_pb2.ListSigningKeysRequest, context: grpc.aio.ServicerContext
    ) -> signing_key_pb2.ListSigningKeysResponse:
        """Newest first."""
        page, token = await self._keys.list_page(request.page_size, request.page_token)
        return signing_key_pb2.ListSigningKeysResponse(
            signing_keys=[converters.signing_key_message(k) for k in page], next_page_token=token
        )
