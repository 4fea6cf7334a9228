"""gRPC servicer of AuthorizationService (the redirect flow and the decoupled flow): protobuf
in, protobuf out."""

from __future__ import annotations

from typing import Any

import grpc

from meshlib.auth.context import require_caller
from meshlib.names import parse_name
from openbank.identity.v1 import authorization_pb2, authorization_pb2_grpc, decoupled_authorization_pb2
from services.identity import converters
from services.identity.authorization_service import (
    AuthorizationService,
    DecidedRequest,
    OpenedRequest,
    PushedAuthorization,
    PushRequest,
)
from services.identity.decoupled_service import DecoupledService, PendingDecoupled, StartedDecoupled
from services.identity.domain.authorization import Decision
from services.identity.domain.consents import Consent
from services.identity.servicer import _answer, _key, _saved_as

_DECISIONS = {
    authorization_pb2.AUTHORIZATION_DECISION_APPROVE: Decision.APPROVE,
    authorization_pb2.AUTHORIZATION_DECISION_REFUSE: Decision.REFUSE,
}
_DECOUPLED_DECISIONS = {
    decoupled_authorization_pb2.DECOUPLED_DECISION_APPROVE: Decision.APPROVE,
    decoupled_authorization_pb2.DECOUPLED_DECISION_REFUSE: Decision.REFUSE,
}
_dpb = decoupled_authorization_pb2


def _pushed(result: PushedAuthorization) -> authorization_pb2.PushAuthorizationRequestResponse:
    return authorization_pb2.PushAuthorizationRequestResponse(
        request_uri=result.request_uri, expires_in=result.expires_in
    )


def _opened(result: OpenedRequest) -> authorization_pb2.OpenAuthorizationRequestResponse:
    pushed = result.pushed
    return authorization_pb2.OpenAuthorizationRequestResponse(
        authorization_request=authorization_pb2.AuthorizationRequest(
            name=f"authorizationRequests/{pushed.request_id}",
            consent=converters.consent_message(result.consent),
            partner_display_name=result.partner_display_name,
            client_id=pushed.client_id,
            redirect_uri=pushed.redirect_uri,
            state=pushed.state,
            issuer=result.issuer,
            decide_before=converters.timestamp(pushed.decide_before),
        )
    )


def _decided(result: DecidedRequest) -> authorization_pb2.DecideAuthorizationRequestResponse:
    return authorization_pb2.DecideAuthorizationRequestResponse(
        redirect_uri=result.pushed.redirect_uri,
        code=result.code,
        error=result.error,
        state=result.pushed.state,
        issuer=result.issuer,
        consent=converters.consent_message(result.consent),
    )


def _started(result: StartedDecoupled) -> decoupled_authorization_pb2.StartDecoupledAuthorizationResponse:
    return _dpb.StartDecoupledAuthorizationResponse(
        auth_req_id=result.auth_req_id, expires_in=result.expires_in, interval=result.interval
    )


def _pending(item: PendingDecoupled) -> decoupled_authorization_pb2.DecoupledAuthorization:
    request = item.request
    return _dpb.DecoupledAuthorization(
        name=request.name,
        consent=converters.consent_message(item.consent),
        partner_display_name=item.partner_display_name,
        binding_message=request.binding_message,
        create_time=converters.timestamp(request.created_at),
        expire_time=converters.timestamp(request.expires_at),
    )


def _decided_decoupled(consent: Consent) -> decoupled_authorization_pb2.DecideDecoupledAuthorizationResponse:
    return _dpb.DecideDecoupledAuthorizationResponse(consent=converters.consent_message(consent))


class AuthorizationServicer(authorization_pb2_grpc.AuthorizationServiceServicer):
    """PAR and decoupled starts for partners; open, list and decide for the bank's web app."""

    def __init__(self, authorizations: AuthorizationService, decoupled: DecoupledService) -> None:
        self._authorizations = authorizations
        self._decoupled = decoupled

    async def PushAuthorizationRequest(
        self, request: authorization_pb2.PushAuthorizationRequestRequest, context: grpc.aio.ServicerContext
    ) -> authorization_pb2.PushAuthorizationRequestResponse:
        """RFC 9126: a single-use request_uri for one of the partner's consents."""
        partner_id = require_caller().require_partner()
        push = PushRequest(
            consent_id=parse_name(request.consent, "consents", "consent"),
            redirect_uri=request.redirect_uri,
            code_challenge=request.code_challenge,
            code_challenge_method=request.code_challenge_method,
            state=request.state,
        )
        response_type = authorization_pb2.PushAuthorizationRequestResponse
        result: Any = await self._authorizations.push(
            _key("PushAuthorizationRequest", request), _saved_as(response_type, _pushed), partner_id, push
        )
        return _answer(result, response_type, _pushed)

    async def OpenAuthorizationRequest(
        self, request: authorization_pb2.OpenAuthorizationRequestRequest, context: grpc.aio.ServicerContext
    ) -> authorization_pb2.OpenAuthorizationRequestResponse:
        """The customer's browser arrived with the request_uri: use it up."""
        response_type = authorization_pb2.OpenAuthorizationRequestResponse
        result: Any = await self._authorizations.open(
            _key("OpenAuthorizationRequest", request),
            _saved_as(response_type, _opened),
            request.client_id,
            request.request_uri,
        )
        return _answer(result, response_type, _opened)

    async def DecideAuthorizationRequest(
        self, request: authorization_pb2.DecideAuthorizationRequestRequest, context: grpc.aio.ServicerContext
    ) -> authorization_pb2.DecideAuthorizationRequestResponse:
        """Approve (a code) or refuse (access_denied); where the browser goes next."""
        response_type = authorization_pb2.DecideAuthorizationRequestResponse
        result: Any = await self._authorizations.decide(
            _key("DecideAuthorizationRequest", request),
            _saved_as(response_type, _decided),
            parse_name(request.name, "authorizationRequests"),
            parse_name(request.customer, "customers", "customer"),
            _DECISIONS.get(request.decision),
            converters.account_ids(request.accounts),
        )
        return _answer(result, response_type, _decided)

    async def StartDecoupledAuthorization(
        self, request: _dpb.StartDecoupledAuthorizationRequest, context: grpc.aio.ServicerContext
    ) -> decoupled_authorization_pb2.StartDecoupledAuthorizationResponse:
        """CIBA: a decoupled authorisation for the customer the wallet names."""
        partner_id = require_caller().require_partner()
        response_type = _dpb.StartDecoupledAuthorizationResponse
        result: Any = await self._decoupled.start(
            _key("StartDecoupledAuthorization", request),
            _saved_as(response_type, _started),
            partner_id,
            parse_name(request.consent, "consents", "consent"),
            request.login_hint,
            request.binding_message,
        )
        return _answer(result, response_type, _started)

    async def ListDecoupledAuthorizations(
        self, request: _dpb.ListDecoupledAuthorizationsRequest, context: grpc.aio.ServicerContext
    ) -> decoupled_authorization_pb2.ListDecoupledAuthorizationsResponse:
        """The signed-in customer's pending decoupled authorisations."""
        page, token = await self._decoupled.pending(
            parse_name(request.customer, "customers", "customer"), request.page_size, request.page_token
        )
        return _dpb.ListDecoupledAuthorizationsResponse(
            decoupled_authorizations=[_pending(item) for item in page], next_page_token=token
        )

    async def DecideDecoupledAuthorization(
        self,
        request: decoupled_authorization_pb2.DecideDecoupledAuthorizationRequest,
        context: grpc.aio.ServicerContext,
    ) -> decoupled_authorization_pb2.DecideDecoupledAuthorizationResponse:
        """Approve (for the accounts picked) or refuse."""
        response_type = _dpb.DecideDecoupledAuthorizationResponse
        result: Any = await self._decoupled.decide(
            _key("DecideDecoupledAuthorization", request),
            _saved_as(response_type, _decided_decoupled),
            parse_name(request.name, "decoupledAuthorizations"),
            parse_name(request.customer, "customers", "customer"),
            _DECOUPLED_DECISIONS.get(request.decision),
            converters.account_ids(request.accounts),
        )
        return _answer(result, response_type, _decided_decoupled)
