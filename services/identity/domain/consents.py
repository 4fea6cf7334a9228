"""Consents: what a customer lets a partner do, and the lifecycle rules (AIP-216 states).

AWAITING_AUTHORISATION -> AUTHORISED -> REVOKED | EXPIRED, or AWAITING_AUTHORISATION ->
REJECTED | REVOKED | EXPIRED. Expiry is computed from ``expires_at`` whenever a consent is
read, so no background job is needed for it to take effect.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
import uuid
from dataclasses import dataclass, replace

from meshlib.errors import FailedPrecondition, FieldCollector, InvalidArgument
from meshlib.mandates import Mandate
from meshlib.money import Amount, amount_from_fields
from meshlib.names import ID_PATTERN
from services.identity.domain.mandates import MandateRequest, check_mandate_consent, new_mandate

MAX_LIFETIME = dt.timedelta(days=365)
PERMISSIONS = frozenset(
    {
        "READ_ACCOUNTS",
        "READ_BALANCES",
        "READ_TRANSACTIONS",
        "CONFIRM_FUNDS",
        "INITIATE_PAYMENTS",
        "SCHEDULE_PAYMENTS",
        "CREDIT",
    }
)
PERIODS = frozenset({"DAY", "WEEK", "MONTH"})
_CHALLENGE = re.compile(r"^[A-Za-z0-9_-]{43}$")

# The partner scopes a consent-bound token needs for each permission.
SCOPES_FOR_PERMISSION: dict[str, frozenset[str]] = {
    "READ_ACCOUNTS": frozenset({"accounts:read"}),
    "READ_BALANCES": frozenset({"accounts:read"}),
    "READ_TRANSACTIONS": frozenset({"accounts:read"}),
    "CONFIRM_FUNDS": frozenset({"funds:confirm"}),
    "INITIATE_PAYMENTS": frozenset({"payments:write", "payments:read"}),
    "SCHEDULE_PAYMENTS": frozenset({"payments:write", "payments:read"}),
    "CREDIT": frozenset({"credit:offer"}),
}


class ConsentState(enum.Enum):
    """Lifecycle state."""

    AWAITING_AUTHORISATION = "AWAITING_AUTHORISATION"
    AUTHORISED = "AUTHORISED"
    REJECTED = "REJECTED"
    REVOKED = "REVOKED"
    EXPIRED = "EXPIRED"

    @property
    def final(self) -> bool:
        """No transition leaves a final state."""
        return self in (ConsentState.REJECTED, ConsentState.REVOKED, ConsentState.EXPIRED)


@dataclass(frozen=True)
class ConsentRequest:
    """A partner's CreateConsent, unvalidated."""

    permissions: tuple[str, ...]
    expires_at: dt.datetime | None
    per_payment_limit: tuple[str, int] | None
    period_limit: tuple[str, int] | None
    period: str | None
    reads_per_day: int
    code_challenge: str
    code_challenge_method: str
    mandate: MandateRequest | None = None


@dataclass(frozen=True)
class ConsentNarrowing:
    """A customer's UpdateConsentLimits: None (or empty) means unchanged."""

    per_payment_limit: tuple[str, int] | None = None
    period_limit: tuple[str, int] | None = None
    reads_per_day: int | None = None
    permissions: tuple[str, ...] = ()
    account_ids: tuple[str, ...] = ()
    expires_at: dt.datetime | None = None


@dataclass(frozen=True)
class Consent:
    """A consent and everything a resource server needs to enforce it."""

    consent_id: str
    partner_id: str
    customer_id: str | None
    state: ConsentState
    paused: bool
    permissions: frozenset[str]
    account_ids: tuple[str, ...]
    expires_at: dt.datetime
    per_payment_limit: Amount | None
    period_limit: Amount | None
    period: str | None
    reads_per_day: int
    code_challenge: str
    created_at: dt.datetime
    updated_at: dt.datetime
    authorised_at: dt.datetime | None = None
    # A payment mandate (VRP, sweeping): every payment made with the consent must meet it.
    mandate: Mandate | None = None

    def current(self, now: dt.datetime) -> Consent:
        """The consent as of ``now``: past its expiry a live consent reads as EXPIRED."""
        if not self.state.final and self.expires_at <= now:
            return replace(self, state=ConsentState.EXPIRED, paused=False)
        return self

    def _refuse_final(self) -> None:
        if self.state is ConsentState.EXPIRED:
            raise FailedPrecondition("the consent has expired", reason="CONSENT_EXPIRED")
        if self.state is ConsentState.REVOKED:
            raise FailedPrecondition("the consent was revoked", reason="CONSENT_REVOKED")
        if self.state.final:
            raise _bad_transition(self.state)

    def require_authorisable(self) -> None:
        """Refuse unless awaiting authorisation (checked before asking for credentials)."""
        self._refuse_final()
        if self.state is not ConsentState.AWAITING_AUTHORISATION:
            raise _bad_transition(self.state)

    def authorise(self, customer_id: str, account_ids: tuple[str, ...], now: dt.datetime) -> Consent:
        """The customer said yes (after SCA) for these accounts."""
        self.require_authorisable()
        if self.mandate is not None:
            _check_mandate_accounts(self.mandate, account_ids)
        return replace(
            self,
            state=ConsentState.AUTHORISED,
            customer_id=customer_id,
            account_ids=account_ids,
            authorised_at=now,
            updated_at=now,
        )

    def reject(self, customer_id: str, now: dt.datetime) -> Consent:
        """The customer said no."""
        if self.state is not ConsentState.AWAITING_AUTHORISATION:
            self._refuse_final()
            raise _bad_transition(self.state)
        return replace(self, state=ConsentState.REJECTED, customer_id=customer_id, updated_at=now)

    def revoke(self, now: dt.datetime) -> Consent:
        """Revoked by partner or customer; revoking twice changes nothing."""
        if self.state is ConsentState.REVOKED:
            return self
        if self.state.final:
            raise _bad_transition(self.state)
        return replace(self, state=ConsentState.REVOKED, paused=False, updated_at=now)

    def _require_authorised(self) -> None:
        self._refuse_final()
        if self.state is not ConsentState.AUTHORISED:
            raise FailedPrecondition("the consent is not authorised", reason="CONSENT_NOT_AUTHORISED")

    def pause(self, now: dt.datetime) -> Consent:
        """Temporarily block every call made with it."""
        self._require_authorised()
        if self.paused:
            raise FailedPrecondition("the consent is already paused", reason="INVALID_STATE_TRANSITION")
        return replace(self, paused=True, updated_at=now)

    def resume(self, now: dt.datetime) -> Consent:
        """Lift a pause."""
        self._refuse_final()
        if not self.paused:
            raise FailedPrecondition("the consent is not paused", reason="INVALID_STATE_TRANSITION")
        return replace(self, paused=False, updated_at=now)

    def narrow(self, change: ConsentNarrowing, now: dt.datetime) -> Consent:
        """Apply a narrowing; anything that would grant more is CONSENT_WIDENING_NOT_ALLOWED."""
        self._require_authorised()
        errors = FieldCollector()
        widening = FieldCollector()
        updated = self
        if change.per_payment_limit is not None:
            amount = amount_from_fields(*change.per_payment_limit, "per_payment_limit", errors)
            if amount is not None:
                _check_not_above(amount, self.per_payment_limit, "per_payment_limit", errors, widening)
                updated = replace(updated, per_payment_limit=amount)
        if change.period_limit is not None:
            amount = amount_from_fields(*change.period_limit, "period_limit", errors)
            if amount is not None:
                if self.period_limit is None:
                    widening.add("period_limit", "the consent has no period limit to lower")
                else:
                    _check_not_above(amount, self.period_limit, "period_limit", errors, widening)
                updated = replace(updated, period_limit=amount)
        if change.reads_per_day is not None:
            if change.reads_per_day < 1:
                errors.add("reads_per_day", "must be at least 1")
            elif self.reads_per_day and change.reads_per_day > self.reads_per_day:
                widening.add("reads_per_day", "must not be above the current value")
            updated = replace(updated, reads_per_day=change.reads_per_day)
        if change.permissions:
            wanted = _check_permissions(change.permissions, "permissions", errors)
            if not wanted <= self.permissions:
                widening.add("permissions", "must be a subset of the current permissions")
            updated = replace(updated, permissions=wanted)
        if change.account_ids:
            if not set(change.account_ids) <= set(self.account_ids):
                widening.add("accounts", "must be a subset of the current accounts")
            updated = replace(updated, account_ids=tuple(sorted(set(change.account_ids))))
        if change.expires_at is not None:
            if change.expires_at <= now:
                errors.add("expire_time", "must be in the future")
            elif change.expires_at > self.expires_at:
                widening.add("expire_time", "must not be after the current expire_time")
            updated = replace(updated, expires_at=change.expires_at)
        errors.raise_if_any()
        if widening.violations:
            raise InvalidArgument(widening.violations, reason="CONSENT_WIDENING_NOT_ALLOWED")
        return replace(updated, updated_at=now)

    def scopes_needed(self) -> frozenset[str]:
        """The partner scopes that its permissions call for."""
        return frozenset().union(*(SCOPES_FOR_PERMISSION[p] for p in self.permissions))


def _bad_transition(state: ConsentState) -> FailedPrecondition:
    return FailedPrecondition(
        f"not allowed while the consent is {state.value}",
        reason="INVALID_STATE_TRANSITION",
        metadata={"state": state.value},
    )


def _check_not_above(
    amount: Amount, current: Amount | None, field: str, errors: FieldCollector, widening: FieldCollector
) -> None:
    if current is None:
        return
    if amount.currency != current.currency:
        errors.add(f"{field}.currency_code", "must be the consent's currency")
    elif amount.minor_units > current.minor_units:
        widening.add(field, "must not be above the current limit")


def _check_permissions(permissions: tuple[str, ...], field: str, errors: FieldCollector) -> frozenset[str]:
    for permission in permissions:
        if permission not in PERMISSIONS:
            errors.add(field, f"{permission or 'UNSPECIFIED'} is not a consent permission")
    return frozenset(p for p in permissions if p in PERMISSIONS)


def new_consent_id() -> str:
    """A fresh consent id."""
    return uuid.uuid4().hex


def create(request: ConsentRequest, partner_id: str, now: dt.datetime) -> Consent:
    """A new consent awaiting authorisation (raises InvalidArgument naming every bad field)."""
    errors = FieldCollector()
    if not request.permissions:
        errors.add("permissions", "at least one permission is required")
    permissions = _check_permissions(request.permissions, "permissions", errors)
    if request.expires_at is None:
        errors.add("expire_time", "required")
    elif request.expires_at <= now:
        errors.add("expire_time", "must be in the future")
    elif request.expires_at > now + MAX_LIFETIME:
        errors.add("expire_time", "must be at most 365 days ahead")
    per_payment = period_limit = None
    if request.per_payment_limit is not None:
        per_payment = amount_from_fields(*request.per_payment_limit, "per_payment_limit", errors)
    if request.period_limit is not None:
        period_limit = amount_from_fields(*request.period_limit, "period_limit", errors)
        if request.period is None:
            errors.add("period", "required when period_limit is set")
    if request.period is not None and request.period_limit is None:
        errors.add("period_limit", "required when period is set")
    if per_payment and period_limit and per_payment.currency != period_limit.currency:
        errors.add("period_limit.currency_code", "must be the currency of per_payment_limit")
    errors.check(request.reads_per_day >= 0, "reads_per_day", "must not be negative")
    errors.check(
        bool(_CHALLENGE.match(request.code_challenge)),
        "code_challenge",
        "must be BASE64URL(SHA256(code_verifier)) without padding (43 characters)",
    )
    errors.check(request.code_challenge_method == "S256", "code_challenge_method", 'must be "S256"')
    mandate = None
    if request.mandate is not None:
        set_limits = [
            name
            for name, value in (
                ("per_payment_limit", request.per_payment_limit),
                ("period_limit", request.period_limit),
                ("period", request.period),
            )
            if value is not None
        ]
        check_mandate_consent(permissions, set_limits, errors)
        mandate = new_mandate(request.mandate, partner_id, request.expires_at, now, errors)
    errors.raise_if_any()
    assert request.expires_at is not None
    return Consent(
        consent_id=new_consent_id(),
        partner_id=partner_id,
        customer_id=None,
        state=ConsentState.AWAITING_AUTHORISATION,
        paused=False,
        permissions=permissions,
        account_ids=(),
        expires_at=request.expires_at,
        per_payment_limit=per_payment,
        period_limit=period_limit,
        period=request.period if period_limit else None,
        reads_per_day=request.reads_per_day,
        code_challenge=request.code_challenge,
        created_at=now,
        updated_at=now,
        mandate=mandate,
    )


def _check_mandate_accounts(mandate: Mandate, account_ids: tuple[str, ...]) -> None:
    """A mandate pays from exactly one account, never its own creditor."""
    errors = FieldCollector()
    errors.check(len(account_ids) == 1, "accounts", "a mandate pays from exactly one account")
    errors.check(
        mandate.creditor_account_id not in account_ids, "accounts", "must not be the mandate's creditor account"
    )
    errors.raise_if_any()


def check_account_names(account_ids: tuple[str, ...]) -> tuple[str, ...]:
    """At least one well-formed account id (parsed from ``accounts/{id}`` by the converter)."""
    errors = FieldCollector()
    if not account_ids:
        errors.add("accounts", "at least one account is required")
    for account_id in account_ids:
        if not ID_PATTERN.match(account_id):
            errors.add("accounts", "must look like accounts/{id}")
    errors.raise_if_any()
    return tuple(sorted(set(account_ids)))
