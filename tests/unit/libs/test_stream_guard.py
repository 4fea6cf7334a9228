"""An open stream follows its caller's rights (meshlib.auth.streams): it ends at the token's
expiry, at once on a bus event, within the re-check interval without a bus, at the consent's
expiry, always with the reason a new call would get; the handler's own clean-up runs."""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import time
from collections.abc import AsyncIterator

import pytest

from meshlib.auth.consent import ConsentView
from meshlib.auth.context import Caller
from meshlib.auth.revocation import RevocationCache, TokenStatus
from meshlib.auth.streams import guard_stream
from meshlib.errors import MeshError, NotFound, Unauthenticated
from meshlib.events import InProcessBus, Invalidation


def _caller(lifetime: float = 60.0, consent: str | None = "c1") -> Caller:
    return Caller(
        subject="p1",
        client_id="client",
        scopes=frozenset({"payments:read"}),
        token_id="t1",
        expires_at=dt.datetime.fromtimestamp(time.time() + lifetime, dt.UTC),
        partner_id="p1",
        consent_id=consent,
    )


class Identity:
    """Introspection answers from a mutable status."""

    def __init__(self) -> None:
        self.status = TokenStatus(active=True)
        self.calls = 0

    async def introspect(self, caller: Caller) -> TokenStatus:
        self.calls += 1
        return self.status


class Consents:
    def __init__(self, expires_at: dt.datetime | None) -> None:
        self.expires_at = expires_at

    async def get(self, consent_id: str, *, partner_id: str) -> ConsentView:
        if partner_id != "p1":
            raise NotFound("consent not found")
        return ConsentView(consent_id, "p1", "cust", "AUTHORISED", False, frozenset(), frozenset(), self.expires_at)


class Source:
    """An endless stream of numbers; records that its clean-up ran."""

    def __init__(self) -> None:
        self.closed = asyncio.Event()
        self.sent = 0

    async def items(self) -> AsyncIterator[int]:
        try:
            while True:
                self.sent += 1
                yield self.sent
                await asyncio.sleep(0.01)
        finally:
            self.closed.set()


async def _run_until_refused(stream: AsyncIterator[int], *, after: float, change=None) -> tuple[MeshError, float]:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    changed_at = None
    with pytest.raises(MeshError) as raised:
        async for _ in stream:
            if changed_at is None and time.monotonic() - started >= after:
                changed_at = time.monotonic()
                if change is not None:
                    await change()
            if time.monotonic() - started > 5:
                raise AssertionError("the stream outlived the change")
    return raised.value, time.monotonic() - (changed_at or started)


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (Invalidation("token", "t1", "REVOKED"), "TOKEN_REVOKED"),
        (Invalidation("partner", "p1", "SUSPENDED"), "PARTNER_SUSPENDED"),
        (Invalidation("consent", "c1", "REVOKED"), "CONSENT_REVOKED"),
        (Invalidation("consent", "c1", "PAUSED"), "CONSENT_PAUSED"),
    ],
)
async def test_a_bus_event_ends_the_stream_at_once_with_the_reason_of_a_new_call(event, reason) -> None:  # type: ignore[no-untyped-def]
    bus, identity, source = InProcessBus(), Identity(), Source()
    cache = RevocationCache(identity.introspect, ttl_seconds=60, stream_recheck_seconds=60)
    cache.attach(bus)
    caller = _caller()
    stream = guard_stream(source.items(), caller, cache)
    refused, elapsed = await _run_until_refused(stream, after=0.05, change=lambda: bus.publish(event))
    assert refused.reason == reason and elapsed < 0.2
    with pytest.raises(MeshError) as new_call:
        await cache.check(caller)
    assert new_call.value.reason == reason
    await asyncio.wait_for(source.closed.wait(), 1)


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (TokenStatus(active=False), "TOKEN_REVOKED"),
        (TokenStatus(active=False, partner_status="SUSPENDED"), "PARTNER_SUSPENDED"),
        (TokenStatus(active=False, consent_state="REVOKED"), "CONSENT_REVOKED"),
        (TokenStatus(active=False, consent_state="EXPIRED"), "CONSENT_EXPIRED"),
        (TokenStatus(active=False, consent_state="AUTHORISED", consent_paused=True), "CONSENT_PAUSED"),
    ],
)
async def test_without_a_bus_the_recheck_ends_the_stream_within_the_interval(status, reason) -> None:  # type: ignore[no-untyped-def]
    identity, source = Identity(), Source()
    # The cache's TTL is long: only the stream's fresher re-check can explain the end.
    cache = RevocationCache(identity.introspect, ttl_seconds=60, stream_recheck_seconds=0.1)

    async def revoke() -> None:
        identity.status = status

    refused, elapsed = await _run_until_refused(
        guard_stream(source.items(), _caller(), cache), after=0.05, change=revoke
    )
    assert refused.reason == reason and elapsed < 0.5


async def test_the_stream_ends_when_its_token_expires() -> None:
    cache = RevocationCache(Identity().introspect, ttl_seconds=60)
    source = Source()
    started = time.monotonic()
    refused, _ = await _run_until_refused(guard_stream(source.items(), _caller(lifetime=0.3), cache), after=10)
    assert isinstance(refused, Unauthenticated) and refused.reason == "TOKEN_EXPIRED"
    assert 0.2 < time.monotonic() - started < 0.8
    await asyncio.wait_for(source.closed.wait(), 1)


async def test_the_stream_ends_when_its_consent_expires() -> None:
    expiry = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=0.3)
    cache = RevocationCache(Identity().introspect, ttl_seconds=60, consents=Consents(expiry))
    started = time.monotonic()
    refused, _ = await _run_until_refused(guard_stream(Source().items(), _caller(), cache), after=10)
    assert refused.reason == "CONSENT_EXPIRED" and 0.2 < time.monotonic() - started < 0.8


async def test_a_stream_without_revocation_check_still_ends_at_expiry() -> None:
    refused, _ = await _run_until_refused(guard_stream(Source().items(), _caller(lifetime=0.2), None), after=10)
    assert refused.reason == "TOKEN_EXPIRED"


async def test_the_handler_keeps_one_context_and_its_own_errors_pass_through() -> None:
    marker: contextvars.ContextVar[str] = contextvars.ContextVar("marker", default="")

    async def handler() -> AsyncIterator[int]:
        token = marker.set("inside")
        try:
            for number in range(3):
                yield number
                await asyncio.sleep(0)
                assert marker.get() == "inside"
            raise NotFound("payment not found")
        finally:
            marker.reset(token)  # would fail if each message ran in another context

    received = []
    cache = RevocationCache(Identity().introspect, ttl_seconds=60)
    with pytest.raises(NotFound):
        async for item in guard_stream(handler(), _caller(), cache):
            received.append(item)
    assert received == [0, 1, 2]


async def test_a_finished_handler_ends_the_stream_normally() -> None:
    async def three() -> AsyncIterator[int]:
        for number in range(3):
            yield number

    cache = RevocationCache(Identity().introspect, ttl_seconds=60)
    assert [item async for item in guard_stream(three(), _caller(), cache)] == [0, 1, 2]


async def test_a_caller_closing_the_stream_stops_the_handler_and_the_watch() -> None:
    source = Source()
    cache = RevocationCache(Identity().introspect, ttl_seconds=60)
    stream = guard_stream(source.items(), _caller(), cache)
    assert await anext(stream) == 1
    await stream.aclose()  # type: ignore[attr-defined]
    await asyncio.wait_for(source.closed.wait(), 1)
    pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert not [t for t in pending if not t.done() and "pump" in repr(t.get_coro())]


async def test_a_caller_refused_at_the_start_never_reaches_the_handler() -> None:
    # The handler may touch the call (its initial metadata) as it starts: a refusal known at
    # once must end the call before that, never concurrently with it.
    identity = Identity()
    identity.status = TokenStatus(active=False, consent_state="EXPIRED")
    cache = RevocationCache(identity.introspect, ttl_seconds=60)
    started = []

    async def handler() -> AsyncIterator[int]:
        started.append(True)
        yield 1

    with pytest.raises(MeshError) as refused:
        async for _ in guard_stream(handler(), _caller(), cache):
            pass
    assert refused.value.reason == "CONSENT_EXPIRED" and started == []
