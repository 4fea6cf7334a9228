"""Consent use cases: the partner's side (create, read, revoke) and the customer's side at
the bank (authorise with SCA, reject, list, pause, resume, narrow, revoke).

Every state change publishes ``Invalidation("consent", id, <new state>)`` after commit so
that every verifier refuses a dead consent on the next call.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from meshlib.errors import InvalidArgument, MeshError, NotFound, PermissionDenied
from meshlib.pagination import decode_page_token, encode_page_token, filter_fingerprint, page_size, time_and_id
from meshlib.storage import Codec, CommitAndRaise, IdempotencyKey, Transactions
from services.identity.common import Clock, EventPublisher, Saved, UnitOfWorkFactory
from services.identity.customer_service import StrongCustomerAuthentication
from services.identity.domain import consents as rules
from services.identity.domain.consents import Consent, ConsentNarrowing, ConsentRequest
from services.identity.domain.events import consent_event
from services.identity.domain.secrets import digest, new_secret
from services.identity.domain.tokens import AuthorizationCode
from services.identity.unit_of_work import IdentityUnitOfWork

log = logging.getLogger("identity.consents")

AUTHORIZATION_CODE_LIFETIME = dt.timedelta(seconds=60)


@dataclass(frozen=True)
class AuthorisedConsent:
    """The result of AuthoriseConsent: the consent and its one-time authorization code."""

    consent: Consent
    authorization_code: str
    code_expires_at: dt.datetime


def consent_event_detail(consent: Consent) -> str:
    """What verifiers are told: the state, or PAUSED while an authorised consent is paused."""
    return "PAUSED" if consent.paused else consent.state.value


class AccountOwners(Protocol):
    """Who owns the accounts a customer chooses (the account service knows)."""

    async def owners(self, account_ids: Iterable[str]) -> dict[str, Any]: ...


class ConsentService:
    """Consents and their lifecycle."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        sca: StrongCustomerAuthentication,
        events: EventPublisher,
        clock: Clock,
        accounts: AccountOwners | None = None,
    ) -> None:
        self._uow = uow
        self._tx = Transactions(uow, clock=clock)
        self._sca = sca
        self._events = events
        self._clock = clock
        self._accounts = accounts

    # ---- the partner's side -------------------------------------------------------------

    async def create(
        self, key: IdempotencyKey, codec: Codec[Consent | Saved], partner_id: str, request: ConsentRequest
    ) -> Consent | Saved:
        """A consent awaiting the customer's authorisation, owned by ``partner_id``."""
        consent = rules.create(request, partner_id, self._clock())

        async def add(uow: IdentityUnitOfWork) -> Consent:
            await _require_active_partner(uow, partner_id)
            await uow.consents.add(consent)
            _audit(uow, "consent.create", consent)
            return consent

        result = await self._tx.run(add, key=key, codec=codec)
        if isinstance(result, Consent):
            log.info("consent created", extra={"consent_id": consent.consent_id, "partner_id": partner_id})
        return result

    async def get(self, consent_id: str, *, partner_id: str | None) -> Consent:
        """A consent of ``partner_id`` (None: an internal service may read any); NOT_FOUND otherwise."""
        async with self._uow(read_only=True) as uow:
            consent = await uow.consents.get(consent_id)
        if consent is None or (partner_id is not None and consent.partner_id != partner_id):
            raise _not_found(consent_id)
        return consent.current(self._clock())

    async def revoke_by_partner(
        self, key: IdempotencyKey, codec: Codec[Consent | Saved], partner_id: str, consent_id: str
    ) -> Consent | Saved:
        """The partner revokes its own consent (revoking twice returns it unchanged)."""
        return await self._change(
            key, codec, consent_id, lambda c, now: c.revoke(now), partner_id=partner_id, action="consent.revoke"
        )

    # ---- the customer's side (the bank's app) --------------------------------------------

    async def authorise(
        self,
        key: IdempotencyKey,
        codec: Codec[AuthorisedConsent | Saved],
        consent_id: str,
        username: str,
        password: str,
        one_time_code: str,
        account_ids: tuple[str, ...],
    ) -> AuthorisedConsent | Saved:
        """SCA, then AUTHORISED for the chosen accounts, with a one-time code for the partner."""
        accounts = rules.check_account_names(account_ids)

        async def operation(uow: IdentityUnitOfWork) -> AuthorisedConsent:
            now = self._clock()
            consent = await self._existing(uow, consent_id)
            # Refuse a consent that cannot be authorised before touching credentials.
            consent.require_authorisable()
            outcome = await self._sca.check(uow, username, password, one_time_code)
            if isinstance(outcome, MeshError):
                raise CommitAndRaise(outcome)  # the failed attempt counts
            # Accounts only after SCA, so nobody learns who owns an account without the
            # customer's credentials.
            return await authorise_for_customer(
                uow, consent, outcome.customer_id, accounts, consent.code_challenge, now, self._accounts
            )

        result = await self._tx.run(operation, key=key, codec=codec)
        if isinstance(result, AuthorisedConsent):
            authorised = result.consent
            log.info("consent authorised", extra={"consent_id": consent_id, "customer_id": authorised.customer_id})
            await self._events.publish("consent", consent_id, consent_event_detail(authorised))
        return result

    async def reject(
        self, key: IdempotencyKey, codec: Codec[Consent | Saved], consent_id: str, customer_id: str
    ) -> Consent | Saved:
        """The customer refuses a consent awaiting authorisation."""
        return await self._change(
            key, codec, consent_id, lambda c, now: c.reject(customer_id, now), action="consent.reject"
        )

    async def list_for_customer(
        self, customer_id: str, *, state: str | None, requested_size: int, page_token: str
    ) -> tuple[list[Consent], str]:
        """Newest first, optionally only those in ``state`` now."""
        size = page_size(requested_size)
        filters = filter_fingerprint(customer=customer_id, state=state)
        cursor = decode_page_token(page_token, filters)
        after = time_and_id(cursor)
        now = self._clock()
        async with self._uow(read_only=True) as uow:
            found = await uow.consents.page_for_customer(customer_id, state=state, now=now, after=after, limit=size + 1)
        page, more = [c.current(now) for c in found[:size]], len(found) > size
        token = ""
        if more:
            token = encode_page_token({"t": page[-1].created_at.isoformat(), "id": page[-1].consent_id}, filters)
        return page, token

    async def partner_display_names(self, consents: Iterable[Consent]) -> dict[str, str]:
        """The display name of each partner of ``consents``, by partner id (what the customer sees)."""
        names: dict[str, str] = {}
        async with self._uow(read_only=True) as uow:
            for partner_id in sorted({c.partner_id for c in consents}):
                partner = await uow.partners.get(partner_id)
                if partner is not None:
                    names[partner_id] = partner.display_name
        return names

    async def pause(
        self, key: IdempotencyKey, codec: Codec[Consent | Saved], consent_id: str, customer_id: str
    ) -> Consent | Saved:
        """Block every call made with the consent until resumed."""
        return await self._change(
            key, codec, consent_id, lambda c, now: c.pause(now), customer_id=customer_id, action="consent.pause"
        )

    async def resume(
        self, key: IdempotencyKey, codec: Codec[Consent | Saved], consent_id: str, customer_id: str
    ) -> Consent | Saved:
        """Lift a pause."""
        return await self._change(
            key, codec, consent_id, lambda c, now: c.resume(now), customer_id=customer_id, action="consent.resume"
        )

    async def narrow(
        self,
        key: IdempotencyKey,
        codec: Codec[Consent | Saved],
        consent_id: str,
        customer_id: str,
        change: ConsentNarrowing,
    ) -> Consent | Saved:
        """Lower limits, fewer reads, permissions or accounts, an earlier expiry; never more."""
        return await self._change(
            key,
            codec,
            consent_id,
            lambda c, now: c.narrow(change, now),
            customer_id=customer_id,
            action="consent.narrow",
        )

    async def revoke_by_customer(
        self, key: IdempotencyKey, codec: Codec[Consent | Saved], consent_id: str, customer_id: str
    ) -> Consent | Saved:
        """The customer revokes the consent at the bank."""
        return await self._change(
            key, codec, consent_id, lambda c, now: c.revoke(now), customer_id=customer_id, action="consent.revoke"
        )

    # ---- shared --------------------------------------------------------------------------

    async def _existing(self, uow: IdentityUnitOfWork, consent_id: str) -> Consent:
        consent = await uow.consents.get(consent_id, for_update=True)
        if consent is None:
            raise _not_found(consent_id)
        return consent.current(self._clock())

    async def _change(
        self,
        key: IdempotencyKey,
        codec: Codec[Consent | Saved],
        consent_id: str,
        transition: Callable[[Consent, dt.datetime], Consent],
        *,
        partner_id: str | None = None,
        customer_id: str | None = None,
        action: str,
    ) -> Consent | Saved:
        moved: Consent | None = None  # the consent this run changed (None: already so)

        async def operation(uow: IdentityUnitOfWork) -> Consent:
            nonlocal moved
            now = self._clock()
            consent = await self._existing(uow, consent_id)
            if partner_id is not None and consent.partner_id != partner_id:
                raise _not_found(consent_id)
            if customer_id is not None and consent.customer_id != customer_id:
                raise _not_found(consent_id)
            changed = transition(consent, now)
            moved = changed if changed is not consent else None
            if moved is not None:
                await uow.consents.save(changed)
                _audit(uow, action, changed)
            if changed.state.final:
                # Tokens bound to a dead consent die with it.
                await uow.grants.revoke_access_tokens(now, consent_id=consent_id)
                await uow.grants.revoke_refresh_tokens(now, consent_id=consent_id)
            return changed

        result = await self._tx.run(operation, key=key, codec=codec)
        # A replay answers without running: only a change made by this call is told.
        if isinstance(result, Consent) and result is moved:
            log.info("consent changed", extra={"consent_id": consent_id, "state": consent_event_detail(result)})
            await self._events.publish("consent", consent_id, consent_event_detail(result))
        return result


async def authorise_for_customer(
    uow: IdentityUnitOfWork,
    consent: Consent,
    customer_id: str,
    accounts: tuple[str, ...],
    code_challenge: str,
    now: dt.datetime,
    owners: AccountOwners | None,
) -> AuthorisedConsent:
    """An authenticated customer's yes, in the caller's transaction: the consent AUTHORISED
    for the customer's own open ``accounts`` and a one-time code bound to ``code_challenge``
    (shared by AuthoriseConsent and the redirect flow's DecideAuthorizationRequest)."""
    authorised = await approve_for_customer(uow, consent, customer_id, accounts, now, owners)
    code = new_secret()
    grant = AuthorizationCode(
        code_hash=digest(code),
        consent_id=consent.consent_id,
        partner_id=consent.partner_id,
        customer_id=customer_id,
        code_challenge=code_challenge,
        expires_at=now + AUTHORIZATION_CODE_LIFETIME,
    )
    await uow.grants.add_code(grant)
    return AuthorisedConsent(authorised, code, grant.expires_at)


async def approve_for_customer(
    uow: IdentityUnitOfWork,
    consent: Consent,
    customer_id: str,
    accounts: tuple[str, ...],
    now: dt.datetime,
    owners: AccountOwners | None,
) -> Consent:
    """The consent AUTHORISED for the customer's own open ``accounts``, in the caller's
    transaction (the decoupled flow's approval; with a code: :func:`authorise_for_customer`)."""
    if owners is not None:
        # One fast internal call inside the transaction, with a deadline.
        found = await owners.owners(accounts)
        for account_id in accounts:
            owner = found.get(account_id)
            if owner is None or owner.customer_id != customer_id or not owner.active:
                raise InvalidArgument.field("accounts", "must be the customer's own open accounts")
    authorised = consent.authorise(customer_id, accounts, now)
    await uow.consents.save(authorised)
    _audit(uow, "consent.authorise", authorised)
    return authorised


def audit_consent(uow: IdentityUnitOfWork, action: str, consent: Consent) -> None:
    """The change in the audit trail (for other use cases of identity)."""
    _audit(uow, action, consent)


def _audit(uow: IdentityUnitOfWork, action: str, consent: Consent) -> None:
    """The change in the audit trail, by the partner, customer app or operator calling, and
    in the partner's event log (both in the change's own transaction)."""
    event = consent_event(action, consent.consent_id, consent.partner_id, consent.updated_at)
    if event is not None:
        uow.partner_events.record(event)
    uow.audit.record(
        action,
        f"consents/{consent.consent_id}",
        outcome=consent.state.value,
        partner_id=consent.partner_id,
        customer_id=consent.customer_id,
        consent_id=consent.consent_id,
        details={"state": consent.state.value, "accounts": list(consent.account_ids)},
    )


def _not_found(consent_id: str) -> NotFound:
    return NotFound("consent not found", metadata={"resource_name": f"consents/{consent_id}"})


async def _require_active_partner(uow: IdentityUnitOfWork, partner_id: str) -> None:
    partner = await uow.partners.get(partner_id)
    if partner is None or not partner.active:
        raise PermissionDenied("the partner is suspended", reason="PARTNER_SUSPENDED")
