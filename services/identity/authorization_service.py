"""The redirect flow's use cases (RFC 9126 PAR, FAPI 2.0): the wallet pushes an authorisation
request; the bank's web app opens it once and records the signed-in customer's decision.

A request_uri is random (256 bits) and stored only as its digest; opening it uses it up.
Deciding approves the consent for the customer's own accounts with a single-use code bound to
the request's PKCE challenge (consent_service.authorise_for_customer), or rejects it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from meshlib.errors import FieldCollector, InvalidArgument, NotFound, PermissionDenied
from meshlib.storage import Codec, IdempotencyKey, Transactions
from services.identity.common import Clock, EventPublisher, Saved, UnitOfWorkFactory
from services.identity.consent_service import (
    AccountOwners,
    AuthorisedConsent,
    audit_consent,
    authorise_for_customer,
    consent_event_detail,
)
from services.identity.domain import authorization as rules
from services.identity.domain.authorization import Decision, PushedRequest, checked_decision
from services.identity.domain.consents import Consent
from services.identity.domain.secrets import constant_time_equal, digest
from services.identity.unit_of_work import IdentityUnitOfWork

log = logging.getLogger("identity.authorization")


@dataclass(frozen=True)
class PushRequest:
    """What the wallet pushes (unvalidated)."""

    consent_id: str
    redirect_uri: str
    code_challenge: str
    code_challenge_method: str
    state: str


@dataclass(frozen=True)
class PushedAuthorization:
    """PushAuthorizationRequest's answer."""

    request_uri: str
    expires_in: int


@dataclass(frozen=True)
class OpenedRequest:
    """An opened request with what the customer is shown."""

    pushed: PushedRequest
    consent: Consent
    partner_display_name: str
    issuer: str


@dataclass(frozen=True)
class DecidedRequest:
    """Where the browser goes: the redirect URI with a code, or with access_denied."""

    pushed: PushedRequest
    consent: Consent
    issuer: str
    code: str = ""
    error: str = ""


class AuthorizationService:
    """Push, open and decide authorisation requests."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        events: EventPublisher,
        clock: Clock,
        issuer: str,
        accounts: AccountOwners | None = None,
    ) -> None:
        self._tx = Transactions(uow, clock=clock)
        self._events = events
        self._clock = clock
        self._issuer = issuer
        self._accounts = accounts

    async def push(
        self, key: IdempotencyKey, codec: Codec[PushedAuthorization | Saved], partner_id: str, request: PushRequest
    ) -> PushedAuthorization | Saved:
        """Store the request for one of the partner's consents awaiting authorisation."""
        errors = FieldCollector()
        rules.check_state(request.state, errors)
        errors.check(request.code_challenge_method == "S256", "code_challenge_method", 'must be "S256"')
        errors.raise_if_any()
        request_uri = rules.new_request_uri()

        async def operation(uow: IdentityUnitOfWork) -> PushedAuthorization:
            now = self._clock()
            partner = await uow.partners.get(partner_id)
            if partner is None or not partner.active:
                raise PermissionDenied("the partner is suspended", reason="PARTNER_SUSPENDED")
            consent = await uow.consents.get(request.consent_id)
            if consent is None or consent.partner_id != partner_id:
                raise NotFound("consent not found", metadata={"resource_name": f"consents/{request.consent_id}"})
            consent.current(now).require_authorisable()
            # Exact string comparison: no prefix, no normalisation (FAPI 2.0, OAuth 2.1).
            if request.redirect_uri not in partner.redirect_uris:
                raise rules.redirect_uri_not_registered()
            if not constant_time_equal(request.code_challenge, consent.code_challenge):
                raise InvalidArgument.field("code_challenge", "must be the consent's code_challenge")
            pushed = rules.new_pushed_request(
                request_uri_hash=digest(request_uri),
                partner_id=partner_id,
                client_id=partner.client_id,
                consent_id=consent.consent_id,
                redirect_uri=request.redirect_uri,
                code_challenge=consent.code_challenge,
                state=request.state,
                now=now,
            )
            await uow.authorization_requests.add(pushed)
            return PushedAuthorization(request_uri, int(rules.REQUEST_URI_LIFETIME.total_seconds()))

        result = await self._tx.run(operation, key=key, codec=codec)
        if isinstance(result, PushedAuthorization):
            log.info("authorisation request pushed", extra={"consent_id": request.consent_id, "partner_id": partner_id})
        return result

    async def open(
        self, key: IdempotencyKey, codec: Codec[OpenedRequest | Saved], client_id: str, request_uri: str
    ) -> OpenedRequest | Saved:
        """Open a pushed request for the customer: once, in time, for the client that pushed it."""
        if not request_uri.startswith(rules.REQUEST_URI_PREFIX):
            raise rules.request_uri_invalid()

        async def operation(uow: IdentityUnitOfWork) -> OpenedRequest:
            now = self._clock()
            pushed = await uow.authorization_requests.by_request_uri_hash(digest(request_uri))
            if pushed is None:
                raise rules.request_uri_invalid()
            opened = pushed.open(client_id, now)
            if not await uow.authorization_requests.mark_opened(opened):
                raise rules.request_uri_invalid()  # opened by a racing call
            consent = await uow.consents.get(pushed.consent_id)
            partner = await uow.partners.get(pushed.partner_id)
            assert consent is not None and partner is not None
            consent = consent.current(now)
            consent.require_authorisable()
            return OpenedRequest(opened, consent, partner.display_name, self._issuer)

        return await self._tx.run(operation, key=key, codec=codec)

    async def decide(
        self,
        key: IdempotencyKey,
        codec: Codec[DecidedRequest | Saved],
        request_id: str,
        customer_id: str,
        decision: Decision | None,
        account_ids: tuple[str, ...],
    ) -> DecidedRequest | Saved:
        """The customer's yes (for the accounts picked) or no, once."""
        decision, accounts = checked_decision(decision, account_ids)

        async def operation(uow: IdentityUnitOfWork) -> DecidedRequest:
            now = self._clock()
            pushed = await uow.authorization_requests.get(request_id, for_update=True)
            if pushed is None:
                raise NotFound(
                    "authorisation request not found",
                    metadata={"resource_name": f"authorizationRequests/{request_id}"},
                )
            decided = pushed.decide(decision, now)
            if not await uow.authorization_requests.mark_decided(decided):
                decided.decide(decision, now)  # raises: decided by a racing call
            consent = await uow.consents.get(pushed.consent_id, for_update=True)
            assert consent is not None
            consent = consent.current(now)
            if decision is Decision.APPROVE:
                granted: AuthorisedConsent = await authorise_for_customer(
                    uow, consent, customer_id, accounts, pushed.code_challenge, now, self._accounts
                )
                return DecidedRequest(decided, granted.consent, self._issuer, code=granted.authorization_code)
            rejected = consent.reject(customer_id, now)
            await uow.consents.save(rejected)
            audit_consent(uow, "consent.reject", rejected)
            return DecidedRequest(decided, rejected, self._issuer, error="access_denied")

        result = await self._tx.run(operation, key=key, codec=codec)
        if isinstance(result, DecidedRequest):
            consent = result.consent
            log.info(
                "authorisation request decided",
                extra={"consent_id": consent.consent_id, "decision": decision.value, "customer_id": customer_id},
            )
            await self._events.publish("consent", consent.consent_id, consent_event_detail(consent))
        return result
