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
(:mod:`meshlib.auth.streams`) are woken by every change on the bus; behind it, one re-check
tick per process asks identity for the status of the distinct tokens of all open streams in
one batched call (``CheckTokenStatuses``) and wakes only the streams whose rights ended.

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
from collections.abc import Awaitable, Callable, Sequence
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
# Tokens per batched status check (identity's CheckTokenStatuses takes at most 1,000).
MAX_TOKENS_PER_CHECK = 1_000


@dataclass(frozen=True)
class TokenStatus:
    """What identity says about a token right now (RFC 7662, reduced)."""

    active: bool
    partner_status: str | None = None  # ACTIVE | SUSPENDED
    consent_state: str | None = None  # AUTHORISED | REVOKED | ...
    consent_paused: bool = False


Introspector = Callable[[Caller], Awaitable[TokenStatus]]
# The statuses of many tokens in one call, in order.
BatchIntrospector = Callable[[Sequence[Caller]], Awaitable[Sequence[TokenStatus]]]


def one_by_one(introspect: Introspector) -> BatchIntrospector:
    """The plain batch: each token introspected on its own, together (the same answers)."""

    async def introspect_many(callers: Sequence[Caller]) -> Sequence[TokenStatus]:
        return await asyncio.gather(*(introspect(caller) for caller in callers))

    return introspect_many


@dataclass
class _OpenStreams:
    """The streams of one token waiting for their next look (see ``wait_for_stream``)."""

    caller: Caller
    waiters: set[asyncio.Future[None]]


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
        introspect_many: BatchIntrospector | None = None,
        stream_recheck_bus_up_seconds: float | None = None,
        bus_up: Callable[[], bool] | None = None,
    ) -> None:
        self._introspect = introspect
        self._introspect_many = introspect_many or one_by_one(introspect)
        self._ttl = ttl_seconds
        self._grace = stale_grace_seconds
        self._clock = clock
        # An open stream asks again this often, for a status at most this old (the bus wakes
        # it at once; without a shared bus this is how fast a revocation ends a stream).
        self.stream_recheck_seconds = ttl_seconds if stream_recheck_seconds is None else stream_recheck_seconds
        # While ``bus_up()`` (a bus that carries identity's changes is subscribed, not
        # resyncing), that re-check is only the safety net and runs this seldom.
        self.stream_recheck_bus_up_seconds = stream_recheck_bus_up_seconds or self.stream_recheck_seconds
        self._bus_up = bus_up
        # Open streams by token: one tick per process re-checks their distinct tokens at once.
        self._streams: dict[str, _OpenStreams] = {}
        self._ticker: asyncio.Task[None] | None = None
        self._kick: asyncio.Future[None] | None = None
        self._kicked = False
        self._generation = 0  # +1 on every change from the bus (a batch answered across one is dropped)
        # Where an open stream learns when its consent expires (nothing announces an expiry).
        self._consent_views = consents
        # Open streams waiting for a change (or their tick, or their end by time): plain futures,
        # each woken by a timer, the tick or the next change. No task per wait: a gateway holding 1,000 streams
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
        self._refuse_announced(caller)
        status = await self._status(caller, max_age)
        if not status.active:
            refuse_inactive(status)

    def _refuse_announced(self, caller: Caller) -> None:
        if self._revoked_tokens.get(caller.token_id) is not None:
            raise _token_revoked()
        if caller.partner_id and self._partners.get(caller.partner_id) == "SUSPENDED":
            raise PermissionDenied("the partner is suspended", reason="PARTNER_SUSPENDED")
        if caller.consent_id and (state := self._consents.get(caller.consent_id)) is not None:
            refuse_for_consent_state(state)

    def stream_recheck_interval(self) -> float:
        """How often the tick re-checks open streams now: long while the bus is up."""
        if self._bus_up is not None and self._bus_up():
            return self.stream_recheck_bus_up_seconds
        return self.stream_recheck_seconds

    async def recheck_stream(self, caller: Caller) -> float | None:
        """For an open stream: :meth:`check` with the status the last tick fetched (or, if it
        is older than a tick, a fresh one); returns when its consent expires (epoch seconds),
        if known, so the stream ends then."""
        self._refuse_announced(caller)
        age = self._tokens.age(caller.token_id)
        entry = self._tokens.peek(caller.token_id)
        if entry is not None and age is not None and age < self.stream_recheck_interval() + self.stream_recheck_seconds:
            status = entry.status
        else:
            status = await self._status(caller, self.stream_recheck_seconds)
        if not status.active:
            refuse_inactive(status)
        if not (caller.consent_id and caller.partner_id and self._consent_views is not None):
            return None
        try:
            view = await self._consent_views.get(caller.consent_id, partner_id=caller.partner_id)
        except MeshError:
            return None  # the token's status above is the authority; expiry is a refinement
        view.require_usable(None, dt.datetime.now(dt.UTC))
        return view.expires_at.timestamp() if view.expires_at is not None else None

    async def wait_for_stream(self, caller: Caller, timeout: float) -> None:
        """For an open stream: return when the bus brings any change, when the tick finds its
        token no longer active (or cannot tell for too long), or after ``timeout`` seconds
        (when its rights end by time)."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        timer = loop.call_later(timeout, _wake, waiter)
        streams = self._streams.get(caller.token_id)
        if streams is None:
            streams = self._streams[caller.token_id] = _OpenStreams(caller, set())
        streams.waiters.add(waiter)
        self._waiters.add(waiter)
        if self._ticker is None:
            self._ticker = asyncio.ensure_future(self._tick_while_streams())
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiters.discard(waiter)
            streams.waiters.discard(waiter)
            if not streams.waiters and self._streams.get(caller.token_id) is streams:
                del self._streams[caller.token_id]

    async def _tick_while_streams(self) -> None:
        """The process's one re-check tick, while any stream is open."""
        loop = asyncio.get_running_loop()
        last = self._clock()
        try:
            while self._streams:
                # Wake at the short interval (to notice the bus going down), check when due,
                # or at once when kicked (a resync).
                self._kick = loop.create_future()
                timer = loop.call_later(self.stream_recheck_seconds, _wake, self._kick)
                try:
                    await self._kick
                finally:
                    timer.cancel()
                if self._kicked or self._clock() - last >= self.stream_recheck_interval():
                    self._kicked = False
                    if await self.recheck_open_streams():
                        last = self._clock()
        finally:
            self._ticker = None
            self._kick = None

    def _kick_ticker(self) -> None:
        self._kicked = True
        if self._kick is not None:
            _wake(self._kick)

    async def recheck_open_streams(self) -> bool:
        """One tick: the distinct tokens of the open streams, checked in one batched call
        (chunks of ``MAX_TOKENS_PER_CHECK``); wakes the streams of every token no longer
        active. False when identity could not answer (the streams whose last status is too
        old to serve then are woken, to end as a new call would: UNAVAILABLE)."""
        callers = [streams.caller for streams in self._streams.values()]
        if not callers:
            return True
        generation = self._generation
        statuses: list[TokenStatus] = []
        try:
            for start in range(0, len(callers), MAX_TOKENS_PER_CHECK):
                statuses.extend(await self._introspect_many(callers[start : start + MAX_TOKENS_PER_CHECK]))
        except Exception:
            log.warning("open streams' token status check failed", exc_info=True)
            limit = self.stream_recheck_interval() + self._ttl + self._grace
            for caller in callers:
                age = self._tokens.age(caller.token_id)
                if age is None or age >= limit:
                    self._wake_streams(caller.token_id)
            return False
        if len(statuses) != len(callers):
            return False
        if generation != self._generation:
            # A change arrived meanwhile: an answer may predate it, so none is kept; the streams
            # of an inactive token look again themselves, the others at the next tick.
            for caller, status in zip(callers, statuses, strict=True):
                if not status.active:
                    self._tokens.invalidate(caller.token_id)
                    self._wake_streams(caller.token_id)
            return False
        for caller, status in zip(callers, statuses, strict=True):
            self._tokens.put(caller.token_id, _Entry(status, caller.partner_id, caller.consent_id))
            if not status.active:
                self._wake_streams(caller.token_id)
        return True

    def _wake_streams(self, token_id: str) -> None:
        streams = self._streams.get(token_id)
        for waiter in list(streams.waiters) if streams is not None else ():
            _wake(waiter)

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
        self._generation += 1
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
        """After a gap on the bus nothing cached can be trusted: forget it all. Open streams
        are re-checked by one batched tick now, not each on its own."""
        self._generation += 1
        self.clear()
        self._kick_ticker()

    def clear(self) -> None:
        """Forget every cached state."""
        self._tokens.clear()
        self._revoked_tokens.clear()
        self._partners.clear()
        self._consents.clear()


def grpc_introspector(channel: grpc.aio.Channel, bearer: Callable[[], Awaitable[str]]) -> Introspector:
    """An introspector that asks identity's IntrospectToken; ``bearer`` yields a service token
    with the ``tokens:introspect`` scope (e.g. ``ServiceTokenSource.token``)."""
    from openbank.identity.v1 import token_pb2, token_pb2_grpc

    stub = token_pb2_grpc.TokenServiceStub(channel)

    async def introspect(caller: Caller) -> TokenStatus:
        metadata: Any = (("authorization", f"Bearer {await bearer()}"),)
        answer = await stub.IntrospectToken(
            token_pb2.IntrospectTokenRequest(token=caller.raw_token),
            metadata=metadata,
            timeout=INTROSPECT_TIMEOUT_SECONDS,
        )
        return token_status_of(answer)

    return introspect


def token_status_of(answer: Any) -> TokenStatus:
    """A TokenStatus from an ``IntrospectTokenResponse``: an inactive answer names the
    partner's or consent's state when that is the cause."""
    from openbank.identity.v1 import consent_pb2, partner_pb2

    consent_state = None
    if answer.consent_state:
        consent_state = consent_pb2.ConsentState.Name(answer.consent_state).removeprefix("CONSENT_STATE_")
    partner_status = None
    if answer.partner_status:
        partner_status = partner_pb2.PartnerStatus.Name(answer.partner_status).removeprefix("PARTNER_STATUS_")
    return TokenStatus(answer.active, partner_status, consent_state, answer.consent_paused)


def grpc_batch_introspector(channel: grpc.aio.Channel, bearer: Callable[[], Awaitable[str]]) -> BatchIntrospector:
    """Statuses of many tokens in one ``CheckTokenStatuses`` call (``tokens:introspect``)."""
    from openbank.identity.v1 import token_pb2, token_pb2_grpc

    stub = token_pb2_grpc.TokenServiceStub(channel)

    async def introspect_many(callers: Sequence[Caller]) -> Sequence[TokenStatus]:
        metadata: Any = (("authorization", f"Bearer {await bearer()}"),)
        answer = await stub.CheckTokenStatuses(
            token_pb2.CheckTokenStatusesRequest(tokens=[caller.raw_token for caller in callers]),
            metadata=metadata,
            timeout=INTROSPECT_TIMEOUT_SECONDS,
        )
        return [token_status_of(status) for status in answer.statuses]

    return introspect_many


def identity_revocation_check(
    channel: grpc.aio.Channel,
    bearer: Callable[[], Awaitable[str]],
    bus: InvalidationBus | None = None,
    *,
    ttl_seconds: float = 5.0,
    stream_recheck_seconds: float | None = None,
    consents: ConsentLookup | None = None,
    stream_recheck_bus_up_seconds: float | None = None,
    bus_up: Callable[[], bool] | None = None,
) -> RevocationCache:
    """The usual wiring for a gateway replica or a service: introspect at identity over
    ``channel`` with a ``tokens:introspect`` service token, and follow ``bus`` (subscribe
    before the bus starts)."""
    check = RevocationCache(
        grpc_introspector(channel, bearer),
        ttl_seconds=ttl_seconds,
        stream_recheck_seconds=stream_recheck_seconds,
        consents=consents,
        introspect_many=grpc_batch_introspector(channel, bearer),
        stream_recheck_bus_up_seconds=stream_recheck_bus_up_seconds,
        bus_up=bus_up,
    )
    if bus is not None:
        check.attach(bus)
    return check
