"""The shared :class:`~meshlib.auth.verifier.RevocationCheck`: revoked tokens, revoked or
paused consents and suspended partners are refused on the next call, in every process.

Two sources feed one local cache:

* the invalidation bus (:mod:`meshlib.events`): identity publishes
  ``Invalidation("token" | "consent" | "partner", id, <new state>)`` after every change;
  each verifier applies it at once, and clears everything when the bus resyncs after a
  gap (pub/sub drops messages while a subscriber is away);
* identity's ``TokenService.IntrospectToken`` on a cache miss; the answer is kept for a
  short TTL, the safety net should a message be lost without a resync.

Usage (gateway replica or service)::

    tokens = ServiceTokenSource(channel, client_id, client_secret, ["tokens:introspect"])
    check = identity_revocation_check(channel, tokens.token, bus)   # before bus.start()
    verifier.revocation = check    # or JwtVerifier(..., revocation=check)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import grpc

from meshlib.auth.context import Caller
from meshlib.errors import PermissionDenied, Unauthenticated, Unavailable
from meshlib.events import Invalidation, InvalidationBus

log = logging.getLogger("meshlib.auth.revocation")

INTROSPECT_TIMEOUT_SECONDS = 2.0
K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True)
class TokenStatus:
    """What identity says about a token right now (RFC 7662, reduced)."""

    active: bool
    partner_status: str | None = None  # ACTIVE | SUSPENDED
    consent_state: str | None = None  # AUTHORISED | REVOKED | ...
    consent_paused: bool = False


Introspector = Callable[[Caller], Awaitable[TokenStatus]]


class _Bounded(Generic[K, V]):
    """A small LRU map so a long-lived process never grows without bound."""

    def __init__(self, capacity: int) -> None:
        self._items: OrderedDict[K, V] = OrderedDict()
        self._capacity = capacity

    def get(self, key: K) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self._capacity:
            self._items.popitem(last=False)

    def drop_where(self, predicate: Callable[[K, V], bool]) -> None:
        for key in [k for k, v in self._items.items() if predicate(k, v)]:
            del self._items[key]

    def clear(self) -> None:
        self._items.clear()


@dataclass(frozen=True)
class _Entry:
    status: TokenStatus
    fetched_at: float
    partner_id: str | None
    consent_id: str | None


def refuse_for_consent_state(state: str) -> None:
    """Raise what a call made with a consent in ``state`` must fail with (nothing if usable)."""
    if state == "REVOKED":
        raise PermissionDenied("the consent was revoked", reason="CONSENT_REVOKED")
    if state == "EXPIRED":
        raise PermissionDenied("the consent has expired", reason="CONSENT_EXPIRED")
    if state == "PAUSED":
        raise PermissionDenied("the customer paused this consent", reason="CONSENT_PAUSED")
    if state in ("REJECTED", "AWAITING_AUTHORISATION"):
        raise PermissionDenied("the consent is not authorised", reason="CONSENT_NOT_AUTHORISED")


def _token_revoked() -> Unauthenticated:
    return Unauthenticated("the access token was revoked", reason="TOKEN_REVOKED")


class RevocationCache:
    """A RevocationCheck fed by the invalidation bus and by introspection on a miss."""

    def __init__(
        self,
        introspect: Introspector,
        *,
        ttl_seconds: float = 5.0,
        refresh_ahead: float = 0.8,
        stale_grace_seconds: float = 30.0,
        capacity: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._introspect = introspect
        self._ttl = ttl_seconds
        # A token in use is introspected again in the background once its entry is this old,
        # so its calls never wait for identity at expiry (as in IdentityConsentLookup).
        self._refresh_after = ttl_seconds * refresh_ahead
        self._grace = stale_grace_seconds
        self._clock = clock
        self._tokens: _Bounded[str, _Entry] = _Bounded(capacity)
        self._revoked_tokens: _Bounded[str, float] = _Bounded(capacity)
        self._partners: _Bounded[str, str] = _Bounded(capacity)
        self._consents: _Bounded[str, str] = _Bounded(capacity)
        self._inflight: dict[str, asyncio.Future[TokenStatus]] = {}

    def attach(self, bus: InvalidationBus) -> None:
        """Subscribe to the bus (call before the bus starts)."""
        bus.subscribe(self.on_invalidation, self.on_resync)

    async def check(self, caller: Caller) -> None:
        """Refuse a revoked token, a suspended partner or a consent that is no longer usable."""
        if self._revoked_tokens.get(caller.token_id) is not None:
            raise _token_revoked()
        if caller.partner_id and self._partners.get(caller.partner_id) == "SUSPENDED":
            raise PermissionDenied("the partner is suspended", reason="PARTNER_SUSPENDED")
        if caller.consent_id and (state := self._consents.get(caller.consent_id)) is not None:
            refuse_for_consent_state(state)
        status = await self._status(caller)
        if not status.active:
            raise _token_revoked()

    async def _status(self, caller: Caller) -> TokenStatus:
        now = self._clock()
        entry = self._tokens.get(caller.token_id)
        if entry is not None and now - entry.fetched_at < self._ttl:
            if now - entry.fetched_at >= self._refresh_after and caller.token_id not in self._inflight:
                self._start_introspection(caller)
            return entry.status
        pending = self._inflight.get(caller.token_id) or self._start_introspection(caller)
        try:
            return await asyncio.shield(pending)
        except Exception:
            if entry is not None and now - entry.fetched_at < self._ttl + self._grace:
                log.warning("token introspection failed; using the last known status")
                return entry.status
            log.warning("token introspection failed and nothing is cached")
            raise Unavailable("cannot confirm the token's status right now", retry_after_seconds=1.0) from None

    def _start_introspection(self, caller: Caller) -> asyncio.Future[TokenStatus]:
        """One introspection per token at a time, however many calls race for it; stores the answer."""
        pending = asyncio.ensure_future(self._introspect_and_store(caller))
        self._inflight[caller.token_id] = pending
        pending.add_done_callback(lambda done: self._forget_introspection(caller.token_id, done))
        return pending

    async def _introspect_and_store(self, caller: Caller) -> TokenStatus:
        status = await self._introspect(caller)
        self._tokens.put(caller.token_id, _Entry(status, self._clock(), caller.partner_id, caller.consent_id))
        return status

    def _forget_introspection(self, token_id: str, done: asyncio.Future[TokenStatus]) -> None:
        if self._inflight.get(token_id) is done:
            del self._inflight[token_id]
        if not done.cancelled():
            done.exception()  # retrieved: a waiter logs it; a failed background refresh lets the entry age

    async def on_invalidation(self, event: Invalidation) -> None:
        """Apply one change published by identity."""
        if event.kind == "token":
            self._revoked_tokens.put(event.key, self._clock())
            self._tokens.drop_where(lambda jti, _: jti == event.key)
        elif event.kind == "partner":
            self._partners.put(event.key, event.detail or "CHANGED")
            self._tokens.drop_where(lambda _, entry: entry.partner_id == event.key)
        elif event.kind == "consent":
            self._consents.put(event.key, event.detail or "CHANGED")
            self._tokens.drop_where(lambda _, entry: entry.consent_id == event.key)

    async def on_resync(self) -> None:
        """After a gap on the bus nothing cached can be trusted: forget it all."""
        self.clear()

    def clear(self) -> None:
        """Forget every cached state."""
        self._tokens.clear()
        self._revoked_tokens.clear()
        self._partners.clear()
        self._consents.clear()


def grpc_introspector(channel: grpc.aio.Channel, bearer: Callable[[], Awaitable[str]]) -> Introspector:
    """An introspector that asks identity's IntrospectToken; ``bearer`` yields a service token
    with the ``tokens:introspect`` scope (e.g. ``ServiceTokenSource.token``)."""
    from openbank.identity.v1 import consent_pb2, partner_pb2, token_pb2, token_pb2_grpc

    stub = token_pb2_grpc.TokenServiceStub(channel)

    async def introspect(caller: Caller) -> TokenStatus:
        metadata: Any = (("authorization", f"Bearer {await bearer()}"),)
        answer = await stub.IntrospectToken(
            token_pb2.IntrospectTokenRequest(token=caller.raw_token),
            metadata=metadata,
            timeout=INTROSPECT_TIMEOUT_SECONDS,
        )
        if not answer.active:
            return TokenStatus(active=False)
        consent_state = None
        if answer.consent_state:
            consent_state = consent_pb2.ConsentState.Name(answer.consent_state).removeprefix("CONSENT_STATE_")
        partner_status = None
        if answer.partner_status:
            partner_status = partner_pb2.PartnerStatus.Name(answer.partner_status).removeprefix("PARTNER_STATUS_")
        return TokenStatus(True, partner_status, consent_state, answer.consent_paused)

    return introspect


def identity_revocation_check(
    channel: grpc.aio.Channel,
    bearer: Callable[[], Awaitable[str]],
    bus: InvalidationBus | None = None,
    *,
    ttl_seconds: float = 5.0,
) -> RevocationCache:
    """The usual wiring for a gateway replica or a service: introspect at identity over
    ``channel`` with a ``tokens:introspect`` service token, and follow ``bus`` (subscribe
    before the bus starts)."""
    check = RevocationCache(grpc_introspector(channel, bearer), ttl_seconds=ttl_seconds)
    if bus is not None:
        check.attach(bus)
    return check
