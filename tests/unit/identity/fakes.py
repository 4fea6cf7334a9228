"""In-memory stand-ins for identity's unit of work and bus, so use cases run without a
database: writes land in a shared store and are undone unless the unit of work commits."""

from __future__ import annotations

import copy
import datetime as dt
from dataclasses import dataclass, field, replace
from typing import Any

from meshlib.errors import AlreadyExists
from meshlib.events import Invalidation
from services.identity.domain.consents import Consent
from services.identity.domain.customers import Customer
from services.identity.domain.partners import Partner
from services.identity.domain.tokens import AuthorizationCode


@dataclass
class Store:
    """Everything the fake repositories keep."""

    partners: dict[str, Partner] = field(default_factory=dict)
    customers: dict[str, Customer] = field(default_factory=dict)
    consents: dict[str, Consent] = field(default_factory=dict)
    codes: dict[str, AuthorizationCode] = field(default_factory=dict)
    revoked_consent_tokens: list[str] = field(default_factory=list)
    answers: dict[tuple[str, str, str], tuple[str, bytes]] = field(default_factory=dict)
    audit: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    partner_events: list[Any] = field(default_factory=list)
    applications: dict[str, Any] = field(default_factory=dict)


class _Partners:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def get(self, partner_id: str, *, for_update: bool = False) -> Partner | None:
        return self._store.partners.get(partner_id)


class _Customers:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def add(self, customer: Customer) -> None:
        self._store.customers[customer.customer_id] = customer

    async def save(self, customer: Customer) -> None:
        self._store.customers[customer.customer_id] = customer

    async def get(self, customer_id: str) -> Customer | None:
        return self._store.customers.get(customer_id)

    async def by_username(self, username: str) -> Customer | None:
        return next((c for c in self._store.customers.values() if c.username == username), None)

    async def set_password(self, customer_id: str, password_hash: str, now: dt.datetime) -> None:
        customer = self._store.customers[customer_id]
        self._store.customers[customer_id] = replace(customer, password_hash=password_hash, updated_at=now)


class _Applications:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def add(self, application: Any) -> None:
        self._store.applications[application.application_id] = application

    async def save(self, application: Any) -> None:
        self._store.applications[application.application_id] = application

    async def get(self, application_id: str, *, for_update: bool = False) -> Any:
        return self._store.applications.get(application_id)

    async def known_person(self, identity_key: str, document_key: str) -> bool:
        return any(
            a.identity_key == identity_key or a.document_key == document_key
            for a in self._store.applications.values()
            if a.customer_id
        )


class _Consents:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def add(self, consent: Consent) -> None:
        self._store.consents[consent.consent_id] = consent

    async def save(self, consent: Consent) -> None:
        self._store.consents[consent.consent_id] = consent

    async def get(self, consent_id: str, *, for_update: bool = False) -> Consent | None:
        return self._store.consents.get(consent_id)


class _Grants:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def add_code(self, code: AuthorizationCode) -> None:
        self._store.codes[code.code_hash] = code

    async def revoke_access_tokens(self, now: dt.datetime, *, consent_id: str | None = None, **_: Any) -> list[str]:
        if consent_id:
            self._store.revoked_consent_tokens.append(consent_id)
        return []

    async def revoke_refresh_tokens(self, now: dt.datetime, **_: Any) -> None:
        return None


class _Idempotency:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def lookup(self, scope: str, method: str, request_id: str, fingerprint: str) -> bytes | None:
        saved = self._store.answers.get((scope, method, request_id))
        if saved is None:
            return None
        if saved[0] != fingerprint:
            raise AlreadyExists("request_id was already used with a different request", reason="REQUEST_ID_REUSED")
        return saved[1]

    async def save(
        self, scope: str, method: str, request_id: str, fingerprint: str, response: bytes, now: dt.datetime
    ) -> None:
        self._store.answers[(scope, method, request_id)] = (fingerprint, response)


class _Audit:
    """Audit records noted in the transaction (kept only if it commits, like the rest)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def record(self, action: str, resource: str, **fields: Any) -> None:
        self._store.audit.append((action, resource, fields))


class _PartnerEvents:
    """The partner event log: events recorded with the change (kept only if it commits)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def record(self, event: Any) -> None:
        self._store.partner_events.append(event)


class FakeUnitOfWork:
    """Same surface as IdentityUnitOfWork for the repositories the tests use."""

    def __init__(self, store: Store, *, read_only: bool = False) -> None:
        self._store = store
        self.read_only = read_only
        self.partners = _Partners(store)
        self.customers = _Customers(store)
        self.consents = _Consents(store)
        self.grants = _Grants(store)
        self.idempotency = _Idempotency(store)
        self.audit = _Audit(store)
        self.partner_events = _PartnerEvents(store)
        self.applications = _Applications(store)
        self._snapshot: Store | None = None
        self._committed = False

    async def __aenter__(self) -> FakeUnitOfWork:
        self._snapshot = copy.deepcopy(self._store)
        return self

    async def commit(self) -> None:
        self._committed = True

    async def __aexit__(self, *exc: object) -> None:
        if not self._committed and self._snapshot is not None:
            for name in vars(self._store):
                setattr(self._store, name, getattr(self._snapshot, name))


class RecordingBus:
    """An invalidation bus that remembers what was published."""

    def __init__(self) -> None:
        self.published: list[Invalidation] = []

    async def publish(self, event: Invalidation) -> None:
        self.published.append(event)


def partner(partner_id: str = "p1", **changes: Any) -> Partner:
    """A minimal ACTIVE partner."""
    from services.identity.domain.partners import AuthMethod, PartnerStatus

    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    base = Partner(
        partner_id,
        f"client-{partner_id}",
        "Wallet",
        PartnerStatus.ACTIVE,
        ("consents:write",),
        "gold",
        None,
        None,
        AuthMethod.CLIENT_SECRET_POST,
        None,
        "hash",
        None,
        now,
        now,
    )
    return replace(base, **changes)
