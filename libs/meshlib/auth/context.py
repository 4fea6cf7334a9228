"""Who is calling: set by the auth interceptor for the duration of one call."""

from __future__ import annotations

import contextvars
import datetime as dt
from dataclasses import dataclass, field

from meshlib.auth.scopes import effective_scopes
from meshlib.errors import PermissionDenied, Unauthenticated
from meshlib.telemetry import annotate_call


@dataclass(frozen=True)
class Caller:
    """The verified identity behind a call, taken from its access token."""

    subject: str  # partner id for wallets, ``service:<name>`` for internal clients
    client_id: str
    scopes: frozenset[str]
    token_id: str
    expires_at: dt.datetime
    consent_id: str | None = None
    customer_id: str | None = None
    partner_id: str | None = None
    rate_limit_tier: str | None = None
    certificate_thumbprint: str | None = None
    raw_token: str = field(default="", repr=False)

    def has_scopes(self, required: frozenset[str] | set[str] | list[str] | tuple[str, ...]) -> bool:
        """True when every required scope was granted (or is included by a higher tier granted)."""
        return set(required) <= effective_scopes(self.scopes)

    def require_scopes(self, required: frozenset[str] | set[str] | list[str] | tuple[str, ...]) -> None:
        """PERMISSION_DENIED / ``INSUFFICIENT_SCOPE`` naming what is missing."""
        missing = sorted(set(required) - effective_scopes(self.scopes))
        if missing:
            raise PermissionDenied(
                f"the access token lacks a required scope: {' '.join(missing)}",
                reason="INSUFFICIENT_SCOPE",
                metadata={"missing_scopes": " ".join(missing)},
            )

    def require_partner(self) -> str:
        """The caller's partner id; PERMISSION_DENIED for non-partner callers."""
        if not self.partner_id:
            raise PermissionDenied("this call is for partner wallets", reason="INSUFFICIENT_SCOPE")
        return self.partner_id

    def require_consent(self) -> str:
        """The consent the token is bound to; PERMISSION_DENIED ``CONSENT_REQUIRED`` if none."""
        if not self.consent_id:
            raise PermissionDenied(
                "this call needs an access token bound to an authorised consent", reason="CONSENT_REQUIRED"
            )
        return self.consent_id


_caller: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("openbank_caller", default=None)


def current_caller() -> Caller | None:
    """The caller of the current call, or None for unauthenticated rpcs."""
    return _caller.get()


def require_caller() -> Caller:
    """The caller of the current call; UNAUTHENTICATED when there is none."""
    caller = _caller.get()
    if caller is None:
        raise Unauthenticated("an access token is required", reason="TOKEN_MISSING")
    return caller


def set_caller(caller: Caller | None) -> contextvars.Token[Caller | None]:
    """Bind the caller for the current context (the interceptor and tests use this)."""
    if caller is not None:
        annotate_call(partner_id=caller.partner_id, consent_id=caller.consent_id)
    return _caller.set(caller)


def reset_caller(token: contextvars.Token[Caller | None]) -> None:
    """Undo :func:`set_caller`."""
    _caller.reset(token)
