"""The shared :class:`~meshlib.auth.verifier.RevocationCheck`: revoked tokens, revoked or
paused consents and suspended partners are refused on the next call, in every process.

Two sources feed one local cache:

* the invalidation bus (:mod:`meshlib.events`): identity publishes
  ``Invalidation("token" | "consent" | "partner", id, <new state>)`` after every change;
  each verifier applies it at once, and clears everything when the bus resyncs after a
  gap (pub/sub drops messages while a subscriber is away);
* identity's ``TokenService.IntrospectToken`` on a cache miss; the answer is kept for a
  short TTL, the safety net should a message be lost without a resync.

Either source gives the same reason for the same cause: identity's inactive answer names a
suspended partner or an unusable consent, so the embedded default (no shared bus) refuses
with PARTNER_SUSPENDED or CONSENT_REVOKED exactly as Redis does. Open streams
(:mod:`meshlib.auth.streams`) are woken by every change on the bus and re-check with
:meth:`RevocationCache.recheck_stream`.

Usage (gateway replica or service)::

    tokens = ServiceTokenSource(channel, client_id, client_secret, ["tokens:introspect"])
    check = identity_revocation_check(channel, tokens.token, bus)   # before bus.start()
    verifier.revocation = check    # or JwtVerifier(..., revocation=check)
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from meshlib.auth.consent import ConsentLookup
from meshlib.auth.context import Caller
from meshlib.cache import BoundedMap, RefreshingCache
from meshlib.errors import MeshError, PermissionDenied, Unauthenticated, Unavailable
from meshlib.events import Invalidation, InvalidationBus

log = logging.getLogger("meshlib.auth.revocation")

INTROSPECT_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True)
class TokenStatus:
    """What identity says about a token right now (RFC 7662, reduced)."""

    active: bool
    partner_status: str | None = None  # ACTIVE | SUSPENDED
    consent_state: str | None = None  # AUTHORISED | REVOKED | ...
    consent_paused: bool = False


Introspector = Callable[[Caller], Awaitable[TokenStatus]]


@dataclass(frozen=True)
class _Entry:
    status: TokenStatus
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


def refuse_inactive(status: TokenStatus) -> None:
    """Raise what a call with an inactive token must fail with: the same reason the bus would
    give (PARTNER_SUSPENDED, CONSENT_REVOKED, ...) when identity says why, else TOKEN_REVOKED."""
    if status.partner_status and status.partner_status != "ACTIVE":
        raise PermissionDenied("the partner is suspended", reason="PARTNER_SUSPENDED")
    if status.consent_state:
        refuse_for_consent_state(status.consent_state)
    if status.consent_paused:
        refuse_for_consent_state("PAUSED")
    raise _token_revoked()


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class RevocationCache:
    """A RevocationCheck fed by the invalidation bus and by introspection on a miss."""

    def __init__(
        self,
        introspect: Introspector,
        *,
        ttl_seconds: float = 5.0,
        stale_grace_seconds: float = 30.0,
        capacity: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
        stream_recheck_seconds: float | None = None,
        consents: ConsentLookup | None = None,
    ) -> None:
        self._introspect = introspect
        self._clock = clock
        # An open stream asks again this often, for a status at most this old (the bus wakes
        # it at once; without a shared bus this is how fast a revocation ends a stream).
        self.stream_recheck_seconds = ttl_seconds if stream_recheck_seconds is None else stream_recheck_seconds
        # Where an open stream learns when its consent expires (nothing announces an expiry).
        self._consent_views = consents
        # Open streams waiting for a change (or their re-check time): plain futures, each woken
        # by a timer or by the next change. No task per wait: a gateway holding 1,000 streams
        # wakes thousands of times a second without a bus, and asyncio.wait_for's task (created,
        # then cancelled and awaited on timeout) was most of its idle CPU (docs/benchmarks.md).
        self._waiters: set[asyncio.Future[None]] = set()
        # One introspection per token at a time, refreshed ahead of expiry while the token is
        # in use (so its calls never wait for identity at expiry), the last status kept for
        # ``stale_grace_seconds`` past the TTL should identity be unreachable.
        self._tokens: RefreshingCache[str, _Entry] = RefreshingCache(
            ttl_seconds, stale_grace_seconds=stale_grace_seconds, capacity=capacity, clock=clock, name="token-status"
        )
        self._revoked_tokens: BoundedMap[str, float] = BoundedMap(capacity)
        self._partners: BoundedMap[str, str] = BoundedMap(capacity)
        self._consents: BoundedMap[str, str] = BoundedMap(capacity)

    def attach(self, bus: InvalidationBus) -> None:
        """Subscribe to the bus (call before the bus starts)."""
        bus.subscribe(self.on_invalidation, self.on_resync)

    async def check(self, caller: Caller, *, max_age: float | None = None) -> None:
        """Refuse a revoked token, a suspended partner or a consent that is no longer usable
        (``max_age``: ask identity again unless the cached status is at most this old)."""
        if self._revoked_tokens.get(caller.token_id) is not None:
            raise _token_revoked()
        if caller.partner_id and self._partners.get(caller.partner_id) == "SUSPENDED":
            raise PermissionDenied("the partner is suspended", reason="PARTNER_SUSPENDED")
        if caller.consent_id and (state := self._consents.get(caller.consent_id)) is not None:
            refuse_for_consent_state(state)
        status = await self._status(caller, max_age)
        if not status.active:
            refuse_inactive(status)

    async def recheck_stream(self, caller: Caller) -> float | None:
        """For an open stream: :meth:`check` with a status at most ``stream_recheck_seconds``
        old; returns when its consent expires (epoch seconds), if known, so the stream ends then."""
        await self.check(caller, max_age=self.stream_recheck_seconds)
        if not (caller.consent_id and caller.partner_id and self._consent_views is not None):
            return None
        try:
            view = await self._consent_views.get(caller.consent_id, partner_id=caller.partner_id)
        except MeshError:
            return None  # the token's status above is the authority; expiry is a refinement
        view.require_usable(None, dt.datetime.now(dt.UTC))
        return view.expires_at.timestamp() if view.expires_at is not None else None

    async def wait_for_change(self, timeout: float) -> None:
        """Return when the bus brings any change (or a resync), or after ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        timer = loop.call_later(timeout, _wake, waiter)
        self._waiters.add(waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiters.discard(waiter)

    def _announce_change(self) -> None:
        waiters, self._waiters = self._waiters, set()
        for waiter in waiters:
            _wake(waiter)

    async def _status(self, caller: Caller, max_age: float | None = None) -> TokenStatus:
        async def introspect() -> _Entry:
            return _Entry(await self._introspect(caller), caller.partner_id, caller.consent_id)

        try:
            entry = await self._tokens.get(caller.token_id, introspect, max_age=max_age)
        except Exception:
            log.warning("token introspection failed and nothing recent is cached")
            raise Unavailable("cannot confirm the token's status right now", retry_after_seconds=1.0) from None
        return entry.status

    async def on_invalidation(self, event: Invalidation) -> None:
        """Apply one change published by identity."""
        if event.kind == "token":
            self._revoked_tokens.put(event.key, self._clock())
            self._tokens.invalidate(event.key)
        elif event.kind == "partner":
            self._partners.put(event.key, event.detail or "CHANGED")
            self._tokens.drop_where(lambda _, entry: entry.partner_id == event.key)
        elif event.kind == "consent":
            self._consents.put(event.key, event.detail or "CHANGED")
            self._tokens.drop_where(lambda _, entry: entry.consent_id == event.key)
        else:
            return
        self._announce_change()

    async def on_resync(self) -> None:
        """After a gap on the bus nothing cached can be trusted: forget it all."""
        self.clear()
        self._announce_change()

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
        consent_state = None
        if answer.consent_state:
            consent_state = consent_pb2.ConsentState.Name(answer.consent_state).removeprefix("CONSENT_STATE_")
        partner_status = None
        if answer.partner_status:
            partner_status = partner_pb2.PartnerStatus.Name(answer.partner_status).removeprefix("PARTNER_STATUS_")
        # An inactive answer names the partner's or consent's state when that is the cause.
        return TokenStatus(answer.active, partner_status, consent_state, answer.consent_paused)

    return introspect


def identity_revocation_check(
    channel: grpc.aio.Channel,
    bearer: Callable[[], Awaitable[str]],
    bus: InvalidationBus | None = None,
    *,
    ttl_seconds: float = 5.0,
    stream_recheck_seconds: float | None = None,
    consents: ConsentLookup | None = None,
) -> RevocationCache:
    """The usual wiring for a gateway replica or a service: introspect at identity over
    ``channel`` with a ``tokens:introspect`` service token, and follow ``bus`` (subscribe
    before the bus starts)."""
    check = RevocationCache(
        grpc_introspector(channel, bearer),
        ttl_seconds=ttl_seconds,
        stream_recheck_seconds=stream_recheck_seconds,
        consents=consents,
    )
    if bus is not None:
        check.attach(bus)
    return check
