"""The decoupled flow's use cases (OpenID Connect CIBA shape, poll mode): the wallet starts a
decoupled authorisation for a customer it names; the bank's web app lists the signed-in
customer's pending ones and records their decision; the token endpoint's CIBA grant polls.

The auth_req_id is random (256 bits) and stored only as its digest; a poll needs the client
that started it (authenticated at the token endpoint). Whether the login hint names a
customer is never told to the wallet.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from meshlib.errors import InvalidArgument, NotFound, PermissionDenied
from meshlib.pagination import decode_page_token, encode_page_token, filter_fingerprint, page_size, time_and_id
from meshlib.storage import Codec, CommitAndRaise, IdempotencyKey, Transactions
from services.identity.common import Clock, EventPublisher, Saved, UnitOfWorkFactory
from services.identity.consent_service import AccountOwners, approve_for_customer, audit_consent, consent_event_detail
from services.identity.domain import consents as consent_rules
from services.identity.domain import decoupled as rules
from services.identity.domain.authorization import Decision, checked_decision
from services.identity.domain.consents import Consent
from services.identity.domain.decoupled import DecoupledRequest, PollOutcome
from services.identity.domain.partners import Partner
from services.identity.domain.secrets import digest, new_secret
from services.identity.unit_of_work import IdentityUnitOfWork

log = logging.getLogger("identity.decoupled")


@dataclass(frozen=True)
class StartedDecoupled:
    """StartDecoupledAuthorization's answer."""

    auth_req_id: str
    expires_in: int
    interval: int


@dataclass(frozen=True)
class PendingDecoupled:
    """A decoupled authorisation awaiting the customer, with what they are shown."""

    request: DecoupledRequest
    consent: Consent
    partner_display_name: str


@dataclass(frozen=True)
class ApprovedDecoupled:
    """What a poll of an approved request turns into tokens: the consent and its customer."""

    consent: Consent
    customer_id: str
    family_id: str


def _not_found(request_id: str) -> NotFound:
    return NotFound(
        "decoupled authorisation not found", metadata={"resource_name": f"decoupledAuthorizations/{request_id}"}
    )


def _invalid_grant() -> InvalidArgument:
    return InvalidArgument.field(
        "auth_req_id", "is unknown, expired, already used or not yours", reason="INVALID_GRANT"
    )


class DecoupledService:
    """Start, list, decide and poll decoupled authorisations."""

    def __init__(
        self, uow: UnitOfWorkFactory, events: EventPublisher, clock: Clock, accounts: AccountOwners | None = None
    ) -> None:
        self._uow = uow
        self._tx = Transactions(uow, clock=clock)
        self._events = events
        self._clock = clock
        self._accounts = accounts

    async def start(
        self,
        key: IdempotencyKey,
        codec: Codec[StartedDecoupled | Saved],
        partner_id: str,
        consent_id: str,
        login_hint: str,
        binding_message: str,
    ) -> StartedDecoupled | Saved:
        """A decoupled authorisation of one of the partner's consents awaiting authorisation."""
        rules.check_start(login_hint, binding_message)
        auth_req_id = new_secret(32)

        async def operation(uow: IdentityUnitOfWork) -> StartedDecoupled:
            now = self._clock()
            partner = await uow.partners.get(partner_id)
            if partner is None or not partner.active:
                raise PermissionDenied("the partner is suspended", reason="PARTNER_SUSPENDED")
            consent = await uow.consents.get(consent_id)
            if consent is None or consent.partner_id != partner_id:
                raise NotFound("consent not found", metadata={"resource_name": f"consents/{consent_id}"})
            consent.current(now).require_authorisable()
            # Nobody by that name: the same answer, and a request no customer will ever see.
            customer = await uow.customers.by_username(login_hint)
            request = rules.new_request(
                auth_req_id_hash=digest(auth_req_id),
                partner_id=partner_id,
                client_id=partner.client_id,
                consent_id=consent_id,
                customer_id=customer.customer_id if customer is not None else None,
                binding_message=binding_message,
                now=now,
            )
            await uow.decoupled.add(request)
            return StartedDecoupled(auth_req_id, int(rules.LIFETIME.total_seconds()), rules.INTERVAL_SECONDS)

        result = await self._tx.run(operation, key=key, codec=codec)
        if isinstance(result, StartedDecoupled):
            log.info("decoupled authorisation started", extra={"consent_id": consent_id, "partner_id": partner_id})
        return result

    async def pending(
        self, customer_id: str, requested_size: int, page_token: str
    ) -> tuple[list[PendingDecoupled], str]:
        """The customer's undecided, unexpired requests whose consent still awaits them, newest first."""
        size = page_size(requested_size)
        filters = filter_fingerprint(listing="decoupled", customer=customer_id)
        after = time_and_id(decode_page_token(page_token, filters))
        now = self._clock()
        async with self._uow(read_only=True) as uow:
            found = await uow.decoupled.pending_for_customer(customer_id, now, after, size + 1)
            page, more = found[:size], len(found) > size
            shown: list[PendingDecoupled] = []
            for request in page:
                consent = await uow.consents.get(request.consent_id)
                partner = await uow.partners.get(request.partner_id)
                if consent is None or partner is None or not partner.active:
                    continue
                consent = consent.current(now)
                if consent.state is consent_rules.ConsentState.AWAITING_AUTHORISATION:
                    shown.append(PendingDecoupled(request, consent, partner.display_name))
        token = ""
        if more:
            token = encode_page_token({"t": page[-1].created_at.isoformat(), "id": page[-1].request_id}, filters)
        return shown, token

    async def decide(
        self,
        key: IdempotencyKey,
        codec: Codec[Consent | Saved],
        request_id: str,
        customer_id: str,
        decision: Decision | None,
        account_ids: tuple[str, ...],
    ) -> Consent | Saved:
        """The customer's yes (for the accounts picked) or no, once."""
        decision, accounts = checked_decision(decision, account_ids)

        async def operation(uow: IdentityUnitOfWork) -> Consent:
            now = self._clock()
            request = await uow.decoupled.get(request_id, for_update=True)
            if request is None or request.customer_id != customer_id:
                raise _not_found(request_id)  # another customer's is not theirs to know of
            decided = request.decide(decision, now)
            if not await uow.decoupled.mark_decided(decided):
                decided.decide(decision, now)  # decided by a racing call: raises
            consent = await uow.consents.get(request.consent_id, for_update=True)
            assert consent is not None
            consent = consent.current(now)
            if decision is Decision.APPROVE:
                return await approve_for_customer(uow, consent, customer_id, accounts, now, self._accounts)
            rejected = consent.reject(customer_id, now)
            await uow.consents.save(rejected)
            audit_consent(uow, "consent.reject", rejected)
            return rejected

        result = await self._tx.run(operation, key=key, codec=codec)
        if isinstance(result, Consent):
            log.info(
                "decoupled authorisation decided",
                extra={"consent_id": result.consent_id, "decision": decision.value, "customer_id": customer_id},
            )
            await self._events.publish("consent", result.consent_id, consent_event_detail(result))
        return result

    async def poll(self, uow: IdentityUnitOfWork, partner: Partner, auth_req_id: str) -> ApprovedDecoupled:
        """The CIBA grant's step inside the token endpoint's transaction: the approved consent
        (tokens go out once), or the poll's refusal (committed: the poll time and interval count)."""
        now = self._clock()
        request = await uow.decoupled.by_auth_req_id_hash(digest(auth_req_id), for_update=True)
        if request is None or request.client_id != partner.client_id or request.partner_id != partner.partner_id:
            raise _invalid_grant()
        polled, outcome = request.poll(now)
        if not await uow.decoupled.mark_polled(polled):
            raise _invalid_grant()  # tokens went out to a racing poll
        if outcome is not PollOutcome.TOKENS:
            if outcome is PollOutcome.PENDING:
                consent = await uow.consents.get(request.consent_id)
                assert consent is not None
                # A consent that can no longer be authorised (revoked, expired, decided another
                # way) ends the polling with its own reason.
                consent.current(now).require_authorisable()
            raise CommitAndRaise(polled.refusal(outcome))
        consent = await uow.consents.get(request.consent_id)
        assert consent is not None and request.customer_id is not None
        return ApprovedDecoupled(consent.current(now), request.customer_id, request.request_id)
