"""``IdentityConsentLookup``: the :class:`~meshlib.auth.consent.ConsentLookup` adapter that
asks identity for a consent's live state (cached briefly, invalidated over the bus).

It calls ``ConsentService.GetConsent`` with a service token: identity lets an internal
client (``sub = service:<id>``) holding ``consents:read`` read any consent, and this
adapter then checks the consent belongs to the calling partner (another partner's consent
is NOT_FOUND, exactly like an unknown one).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from meshlib.auth.consent import ConsentView
from meshlib.errors import NotFound
from meshlib.events import Invalidation, InvalidationBus
from meshlib.grpc_errors import decode_rpc_error

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
    )


class IdentityConsentLookup:
    """Live consent views from identity, cached for ``ttl_seconds`` and dropped on invalidation.

    An entry in use is refreshed ahead of its expiry: a lookup that finds it older than
    ``refresh_ahead`` of the TTL (0.8) answers from it and starts one background fetch that
    replaces it. A busy consent then never expires on the hot path, where every call racing
    for it would wait for identity (a wave of payments split in two behind that fetch every
    TTL, the bench's slow waves); no view served is ever older than the TTL.
    """

    def __init__(
        self,
        channel: grpc.aio.Channel,
        bearer: Callable[[], Awaitable[str]],
        *,
        ttl_seconds: float = 5.0,
        refresh_ahead: float = 0.8,
        capacity: int = 50_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        from openbank.identity.v1 import consent_pb2_grpc

        self._stub = consent_pb2_grpc.ConsentServiceStub(channel)
        self._bearer = bearer
        self._ttl = ttl_seconds
        self._refresh_after = ttl_seconds * refresh_ahead
        self._capacity = capacity
        self._clock = clock
        self._cache: OrderedDict[str, tuple[float, ConsentView]] = OrderedDict()
        # One fetch per consent at a time: when an entry expires under load, every call that
        # races for it would otherwise send its own GetConsent (a wave of payments: dozens).
        self._inflight: dict[str, asyncio.Future[ConsentView]] = {}

    def attach(self, bus: InvalidationBus) -> None:
        """Drop cached consents when identity says they changed (call before the bus starts)."""
        bus.subscribe(self._on_invalidation, self._on_resync)

    async def get(self, consent_id: str, *, partner_id: str) -> ConsentView:
        """The consent, if it belongs to ``partner_id``; NotFound otherwise."""
        cached = self._cache.get(consent_id)
        age = self._clock() - cached[0] if cached is not None else self._ttl
        if age < self._ttl:
            view = cached[1]  # type: ignore[index]
            if age >= self._refresh_after and consent_id not in self._inflight:
                self._start_fetch(consent_id)
        else:
            pending = self._inflight.get(consent_id) or self._start_fetch(consent_id)
            view = await asyncio.shield(pending)
        if view.partner_id != partner_id:
            raise NotFound("consent not found", metadata={"resource_name": f"consents/{consent_id}"})
        return view

    def _start_fetch(self, consent_id: str) -> asyncio.Future[ConsentView]:
        """The one fetch of this consent, shared by every caller until it ends."""
        pending = asyncio.ensure_future(self._fetch_and_cache(consent_id))
        self._inflight[consent_id] = pending
        pending.add_done_callback(lambda done: self._forget_fetch(consent_id, done))
        return pending

    async def _fetch_and_cache(self, consent_id: str) -> ConsentView:
        view = await self._fetch(consent_id)
        # Cached only if no invalidation came while it was on its way (it may predate the change).
        if self._inflight.get(consent_id) is asyncio.current_task():
            self._cache[consent_id] = (self._clock(), view)
            self._cache.move_to_end(consent_id)
            while len(self._cache) > self._capacity:
                self._cache.popitem(last=False)
        return view

    def _forget_fetch(self, consent_id: str, done: asyncio.Future[ConsentView]) -> None:
        if self._inflight.get(consent_id) is done:
            del self._inflight[consent_id]
        if not done.cancelled():
            done.exception()  # retrieved: every waiter gets it; no "never retrieved" warning

    async def _fetch(self, consent_id: str) -> ConsentView:
        from openbank.identity.v1 import consent_pb2

        metadata = (("authorization", f"Bearer {await self._bearer()}"),)
        try:
            answer = await self._stub.GetConsent(
                consent_pb2.GetConsentRequest(name=f"consents/{consent_id}"),
                metadata=metadata,
                timeout=LOOKUP_TIMEOUT_SECONDS,
            )
        except grpc.aio.AioRpcError as error:
            raise decode_rpc_error(error) from None
        return consent_view(answer.consent)

    async def _on_invalidation(self, event: Invalidation) -> None:
        if event.kind == "consent":
            self._cache.pop(event.key, None)
            self._inflight.pop(event.key, None)  # later calls fetch the changed consent afresh

    async def _on_resync(self) -> None:
        self._cache.clear()
        self._inflight.clear()
