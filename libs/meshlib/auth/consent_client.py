"""``IdentityConsentLookup``: the :class:`~meshlib.auth.consent.ConsentLookup` adapter that
asks identity for a consent's live state (cached briefly, invalidated over the bus).

It calls ``ConsentService.GetConsent`` with a service token: identity lets an internal
client (``sub = service:<id>``) holding ``consents:read`` read any consent, and this
adapter then checks the consent belongs to the calling partner (another partner's consent
is NOT_FOUND, exactly like an unknown one).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from meshlib.auth.consent import ConsentView
from meshlib.cache import RefreshingCache
from meshlib.clients import PeerCaller
from meshlib.errors import NotFound
from meshlib.events import Invalidation, InvalidationBus
from meshlib.mandates import mandate_from_message

LOOKUP_TIMEOUT_SECONDS = 2.0


def consent_view(consent: Any) -> ConsentView:
    """An ``openbank.identity.v1.Consent`` message as a resource server sees it."""
    from openbank.common.v1 import consent_permission_pb2
    from openbank.identity.v1 import consent_pb2

    def last_segment(name: str) -> str:
        return name.rsplit("/", 1)[-1]

    limit_currency = consent.per_payment_limit.currency_code or consent.period_limit.currency_code or None
    return ConsentView(
        consent_id=last_segment(consent.name),
        partner_id=last_segment(consent.partner),
        customer_id=last_segment(consent.customer) if consent.customer else None,
        state=consent_pb2.ConsentState.Name(consent.state).removeprefix("CONSENT_STATE_"),
        paused=consent.paused,
        permissions=frozenset(
            consent_permission_pb2.ConsentPermission.Name(p).removeprefix("CONSENT_PERMISSION_")
            for p in consent.permissions
        ),
        account_ids=frozenset(last_segment(a) for a in consent.accounts),
        expires_at=consent.expire_time.ToDatetime(tzinfo=dt.UTC) if consent.HasField("expire_time") else None,
        reads_per_day=consent.reads_per_day,
        per_payment_limit_minor=(
            consent.per_payment_limit.minor_units if consent.HasField("per_payment_limit") else None
        ),
        period_limit_minor=consent.period_limit.minor_units if consent.HasField("period_limit") else None,
        limit_currency=limit_currency,
        period=(
            consent_pb2.ConsentPeriod.Name(consent.period).removeprefix("CONSENT_PERIOD_") if consent.period else None
        ),
        mandate=mandate_from_message(consent.mandate) if consent.HasField("mandate") else None,
        changed_at=_changed_after_authorisation(consent),
    )


def _changed_after_authorisation(consent: Any) -> dt.datetime | None:
    """The last change time when it is later than the authorisation (which sets both)."""
    if not consent.HasField("update_time") or not consent.HasField("authorise_time"):
        return None
    updated = consent.update_time.ToDatetime(tzinfo=dt.UTC)
    return updated if updated > consent.authorise_time.ToDatetime(tzinfo=dt.UTC) else None


class IdentityConsentLookup:
    """Live consent views from identity, cached for ``ttl_seconds`` and dropped on invalidation.

    The cache (:class:`meshlib.cache.RefreshingCache`) fetches each consent once however
    many calls race for it, and refreshes a consent in use ahead of its expiry, so a busy
    consent never makes its calls wait for identity (a wave of payments split in two behind
    that fetch every TTL, the bench's slow waves); no view served is older than the TTL.
    """

    def __init__(
        self,
        channel: grpc.aio.Channel,
        bearer: Callable[[], Awaitable[str]],
        *,
        ttl_seconds: float = 5.0,
        capacity: int = 50_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        from openbank.identity.v1 import consent_pb2_grpc

        self._stub = consent_pb2_grpc.ConsentServiceStub(channel)
        # No retry: a consent check in the request path fails fast, and the caller retries.
        self._call = PeerCaller(bearer, deadline_seconds=LOOKUP_TIMEOUT_SECONDS, attempts=1)
        self._cache: RefreshingCache[str, ConsentView] = RefreshingCache(
            ttl_seconds, capacity=capacity, clock=clock, name="consents"
        )

    def attach(self, bus: InvalidationBus) -> None:
        """Drop cached consents when identity says they changed (call before the bus starts)."""
        bus.subscribe(self._on_invalidation, self._on_resync)

    async def get(self, consent_id: str, *, partner_id: str) -> ConsentView:
        """The consent, if it belongs to ``partner_id``; NotFound otherwise."""
        view = await self._cache.get(consent_id, lambda: self._fetch(consent_id))
        if view.partner_id != partner_id:
            raise NotFound("consent not found", metadata={"resource_name": f"consents/{consent_id}"})
        return view

    async def get_of_customer(self, consent_id: str, *, customer_id: str) -> ConsentView:
        """The consent, if ``customer_id`` gave it; NotFound otherwise."""
        view = await self._cache.get(consent_id, lambda: self._fetch(consent_id))
        if view.customer_id != customer_id:
            raise NotFound("consent not found", metadata={"resource_name": f"consents/{consent_id}"})
        return view

    async def _fetch(self, consent_id: str) -> ConsentView:
        from openbank.identity.v1 import consent_pb2

        request = consent_pb2.GetConsentRequest(name=f"consents/{consent_id}")
        answer = await self._call(self._stub.GetConsent, request, "identity.GetConsent")
        return consent_view(answer.consent)

    async def _on_invalidation(self, event: Invalidation) -> None:
        if event.kind == "consent":
            self._cache.invalidate(event.key)  # later calls fetch the changed consent afresh

    async def _on_resync(self) -> None:
        self._cache.clear()
