"""What the bank web app needs from the outside world, as the use cases see it.

The bank (identity and account over gRPC in production, a fake in unit tests) and the
session store (in-process or Redis). Errors from the bank are ``meshlib.errors.MeshError``
with their stable reasons.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlencode


@dataclass(frozen=True)
class AccountChoice:
    """One of the customer's accounts, as offered on the consent page."""

    name: str
    display_name: str
    display_number: str
    currency: str


@dataclass(frozen=True)
class ConsentSummary:
    """A consent in plain words."""

    name: str
    permissions: tuple[str, ...]
    expire_time: dt.datetime
    per_payment_limit: str = ""
    period_limit: str = ""
    reads_per_day: int = 0
    # A payment mandate (VRP, sweeping) in sentences: creditor, limits, validity; empty if none.
    mandate: tuple[str, ...] = ()
    mandate_valid_from: str = ""


@dataclass(frozen=True)
class UsageLine:
    """What a mandate used in one periodic limit's current period."""

    period: str
    used: str
    remaining: str
    maximum: str
    ends: dt.datetime


@dataclass(frozen=True)
class AuthorizationView:
    """An opened authorisation request: who asks for what, and until when the customer decides."""

    name: str
    client_id: str
    partner_display_name: str
    redirect_uri: str
    consent: ConsentSummary
    decide_before: dt.datetime

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, for the session store."""
        consent = self.consent
        return {
            "name": self.name,
            "client_id": self.client_id,
            "partner_display_name": self.partner_display_name,
            "redirect_uri": self.redirect_uri,
            "decide_before": self.decide_before.isoformat(),
            "consent": {
                "name": consent.name,
                "permissions": list(consent.permissions),
                "expire_time": consent.expire_time.isoformat(),
                "per_payment_limit": consent.per_payment_limit,
                "period_limit": consent.period_limit,
                "reads_per_day": consent.reads_per_day,
                "mandate": list(consent.mandate),
                "mandate_valid_from": consent.mandate_valid_from,
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AuthorizationView:
        """Back from the session store."""
        consent = dict(data["consent"])
        consent["permissions"] = tuple(consent["permissions"])
        consent["mandate"] = tuple(consent.get("mandate", ()))
        consent["expire_time"] = dt.datetime.fromisoformat(consent["expire_time"])
        return cls(
            name=data["name"],
            client_id=data["client_id"],
            partner_display_name=data["partner_display_name"],
            redirect_uri=data["redirect_uri"],
            decide_before=dt.datetime.fromisoformat(data["decide_before"]),
            consent=ConsentSummary(**consent),
        )


@dataclass(frozen=True)
class RedirectAnswer:
    """Where the browser returns: the registered redirect URI with the OAuth response."""

    redirect_uri: str
    state: str
    issuer: str
    code: str = ""
    error: str = ""

    def location(self) -> str:
        """The redirect URI with code (or error), state and iss (RFC 9207) appended to its query."""
        params = {"code": self.code} if self.code else {"error": self.error or "access_denied"}
        params.update(state=self.state, iss=self.issuer)
        separator = "&" if "?" in self.redirect_uri else "?"
        return self.redirect_uri + separator + urlencode(params)


@dataclass(frozen=True)
class Limits:
    """A consent's amount limits and reads per day, in minor units (None: no such limit)."""

    currency: str = ""
    per_payment: int | None = None
    period: int | None = None
    reads_per_day: int = 0


@dataclass(frozen=True)
class LimitChange:
    """What the customer lowers (None: unchanged); amounts in minor units of ``currency``."""

    currency: str
    per_payment: int | None = None
    period: int | None = None
    reads_per_day: int | None = None

    @property
    def empty(self) -> bool:
        """Nothing to change."""
        return self.per_payment is None and self.period is None and self.reads_per_day is None


@dataclass(frozen=True)
class ConsentCard:
    """One of the customer's consents, as the dashboard shows it."""

    consent_id: str
    partner_display_name: str
    state: str  # AWAITING_AUTHORISATION, AUTHORISED, REJECTED, REVOKED or EXPIRED
    paused: bool
    summary: ConsentSummary
    accounts: tuple[str, ...]
    limits: Limits
    authorised_at: dt.datetime | None = None

    @property
    def active(self) -> bool:
        """Authorised and not yet over (paused or not)."""
        return self.state == "AUTHORISED"


@dataclass(frozen=True)
class PaymentLine:
    """A payment a wallet made with a consent: what, how much, where it stands."""

    payment: str
    amount: str
    status: str
    created_at: dt.datetime


@dataclass(frozen=True)
class ReadLine:
    """What a wallet read with a consent on one UTC day."""

    day: str
    what: str
    count: int
    last_read_at: dt.datetime


@dataclass(frozen=True)
class ApprovalView:
    """A decoupled authorisation a wallet started, awaiting the customer on the approvals page."""

    approval_id: str
    partner_display_name: str
    binding_message: str
    consent: ConsentSummary
    expire_time: dt.datetime


@dataclass(frozen=True)
class ApplicationLine:
    """An account application a wallet made for the customer, as the dashboard shows it."""

    application_id: str
    partner_display_name: str
    state: str  # REFERRED, DECLINED, APPROVED, ACCOUNT_OPEN or ACTIVE
    created_at: dt.datetime
    account: str = ""


@dataclass(frozen=True)
class CreditLineView:
    """A credit line on one of the customer's accounts, in words and minor units."""

    line_id: str
    account: str
    state: str  # ACTIVE or CLOSED
    limit: str
    owed: str
    available: str
    interest_charged: str
    repaid: str
    rate: str
    owed_minor_units: int
    opened_at: dt.datetime | None = None

    @property
    def closable(self) -> bool:
        """The customer may close it: open, and nothing owed."""
        return self.state == "ACTIVE" and self.owed_minor_units == 0


class Bank(Protocol):
    """Identity, account and payment, as the web app uses them (with its own service credentials)."""

    async def open_request(self, client_id: str, request_uri: str) -> AuthorizationView: ...

    async def authenticate(self, username: str, password: str, one_time_code: str) -> str: ...

    async def customer_accounts(self, customer: str) -> list[AccountChoice]: ...

    async def decide(self, name: str, customer: str, approve: bool, accounts: tuple[str, ...]) -> RedirectAnswer: ...

    async def customer_consents(self, customer: str) -> list[ConsentCard]: ...

    async def customer_applications(self, customer: str) -> list[ApplicationLine]: ...

    async def customer_credit_lines(self, customer: str) -> list[CreditLineView]: ...

    async def pause(self, consent_id: str, customer: str) -> None: ...

    async def resume(self, consent_id: str, customer: str) -> None: ...

    async def revoke(self, consent_id: str, customer: str) -> None: ...

    async def lower_limits(self, consent_id: str, customer: str, change: LimitChange) -> None: ...

    async def payments_of(self, consent_id: str) -> list[PaymentLine]: ...

    async def reads_of(self, consent_id: str) -> list[ReadLine]: ...

    async def mandate_usage(self, consent_id: str, customer: str, valid_from: str) -> list[UsageLine]: ...

    async def pending_approvals(self, customer: str) -> list[ApprovalView]: ...

    async def decide_approval(
        self, approval_id: str, customer: str, approve: bool, accounts: tuple[str, ...]
    ) -> None: ...


class SessionStore(Protocol):
    """Server-side sessions keyed by a random id; the browser holds only the id."""

    async def load(self, session_id: str) -> dict[str, Any] | None: ...

    async def save(self, session_id: str, data: dict[str, Any], ttl_seconds: int) -> None: ...

    async def delete(self, session_id: str) -> None: ...


@dataclass
class Session:
    """A browser's session: its id (the cookie), CSRF token and what the flow has reached."""

    session_id: str
    data: dict[str, Any] = field(default_factory=dict)
    # A new id is set (the old one deleted) when the session's privilege changes.
    rotated_from: str | None = None
