"""What a service needs to know about the consent behind a call, and the port to ask.

The gateway and each service check the live consent (state, permission, accounts) on every
consent-bound call; the adapter that asks identity (cached, invalidated over the bus) lives
next to this module. Services depend only on :class:`ConsentLookup`, so their rules are
tested with an in-memory fake.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Protocol

from meshlib.errors import NotFound, PermissionDenied
from meshlib.mandates import Mandate


@dataclass(frozen=True)
class ConsentView:
    """A consent as a resource server sees it."""

    consent_id: str
    partner_id: str
    customer_id: str | None
    state: str  # AWAITING_AUTHORISATION | AUTHORISED | REJECTED | REVOKED | EXPIRED
    paused: bool
    permissions: frozenset[str]  # READ_ACCOUNTS, READ_BALANCES, ... (ConsentPermission without prefix)
    account_ids: frozenset[str]
    expires_at: dt.datetime | None
    reads_per_day: int = 0
    per_payment_limit_minor: int | None = None
    period_limit_minor: int | None = None
    limit_currency: str | None = None
    period: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
    # A payment mandate (VRP, sweeping): every payment with the consent must meet it.
    mandate: Mandate | None = None
    # When the customer last changed it after authorising it (paused, resumed, narrowed); None
    # if never: a risk signal of the payments made with it.
    changed_at: dt.datetime | None = None

    def require_usable(self, permission: str | None, now: dt.datetime) -> None:
        """Refuse unless authorised, unpaused, unexpired and granting ``permission``."""
        if self.state == "REVOKED":
            raise PermissionDenied("the consent was revoked", reason="CONSENT_REVOKED")
        if self.state == "EXPIRED" or (self.expires_at is not None and self.expires_at <= now):
            raise PermissionDenied("the consent has expired", reason="CONSENT_EXPIRED")
        if self.state != "AUTHORISED":
            raise PermissionDenied("the consent is not authorised", reason="CONSENT_NOT_AUTHORISED")
        if self.paused:
            raise PermissionDenied("the customer paused this consent", reason="CONSENT_PAUSED")
        if permission and permission not in self.permissions:
            raise PermissionDenied(
                "the consent does not grant this permission",
                reason="CONSENT_PERMISSION_MISSING",
                metadata={"permission": permission},
            )

    def require_account(self, account_id: str) -> None:
        """An account outside the consent does not exist, as far as the caller knows."""
        if account_id not in self.account_ids:
            raise NotFound("account not found", reason="RESOURCE_NOT_FOUND")


class ConsentLookup(Protocol):
    """Finds the live state of a consent (identity is the source of truth)."""

    async def get(self, consent_id: str, *, partner_id: str) -> ConsentView:
        """The consent, if it belongs to ``partner_id``; NotFound otherwise."""

    async def get_of_customer(self, consent_id: str, *, customer_id: str) -> ConsentView:
        """The consent, if ``customer_id`` gave it (the bank's own pages); NotFound otherwise."""
