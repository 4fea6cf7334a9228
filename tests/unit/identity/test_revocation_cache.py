"""The shared RevocationCache: bus events act at once, introspection fills misses for a TTL,
a resync forgets everything, and an identity outage fails closed unless a recent answer exists."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from meshlib.auth.context import Caller
from meshlib.auth.revocation import RevocationCache, TokenStatus
from meshlib.errors import PermissionDenied, Unauthenticated, Unavailable
from meshlib.events import InProcessBus, Invalidation


class FakeIdentity:
    """Answers introspection from a dict and counts the calls."""

    def __init__(self) -> None:
        self.active: dict[str, bool] = {}
        self.calls = 0
        self.down = False

    async def introspect(self, caller: Caller) -> TokenStatus:
        self.calls += 1
        if self.down:
            raise ConnectionError("identity is down")
        return TokenStatus(active=self.active.get(caller.token_id, True))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _caller(jti: str = "t1", partner: str | None = "p1", consent: str | None = "c1") -> Caller:
    return Caller(
        subject=partner or "service:x",
        client_id="client",
        scopes=frozenset(),
        token_id=jti,
        expires_at=dt.datetime.now(dt.UTC),
        partner_id=partner,
        consent_id=consent,
    )


@pytest.fixture
def setup() -> tuple[RevocationCache, FakeIdentity, InProcessBus, Clock]:
    identity, bus, clock = FakeIdentity(), InProcessBus(), Clock()
    cache = RevocationCache(identity.introspect, ttl_seconds=5, stale_grace_seconds=10, clock=clock)
    cache.attach(bus)
    return cache, identity, bus, clock


async def test_introspection_answers_are_cached_for_the_ttl(setup) -> None:  # type: ignore[no-untyped-def]
    cache, identity, _, clock = setup
    for _ in range(3):
        await cache.check(_caller())
    assert identity.calls == 1
    clock.now = 6
    identity.active["t1"] = False
    with pytest.raises(Unauthenticated) as raised:
        await cache.check(_caller())
    assert raised.value.reason == "TOKEN_REVOKED" and identity.calls == 2


@pytest.mark.parametrize(
    ("event", "error", "reason"),
    [
        (Invalidation("token", "t1", "REVOKED"), Unauthenticated, "TOKEN_REVOKED"),
        (Invalidation("partner", "p1", "SUSPENDED"), PermissionDenied, "PARTNER_SUSPENDED"),
        (Invalidation("consent", "c1", "REVOKED"), PermissionDenied, "CONSENT_REVOKED"),
        (Invalidation("consent", "c1", "PAUSED"), PermissionDenied, "CONSENT_PAUSED"),
        (Invalidation("consent", "c1", "EXPIRED"), PermissionDenied, "CONSENT_EXPIRED"),
    ],
)
async def test_bus_events_take_effect_on_the_next_call(setup, event, error, reason) -> None:  # type: ignore[no-untyped-def]
    cache, identity, bus, _ = setup
    await cache.check(_caller())
    await bus.publish(event)
    with pytest.raises(error) as raised:
        await cache.check(_caller())
    assert raised.value.reason == reason and identity.calls == 1


async def test_a_change_drops_cached_answers_so_they_are_asked_again(setup) -> None:  # type: ignore[no-untyped-def]
    cache, identity, bus, _ = setup
    await cache.check(_caller())
    await bus.publish(Invalidation("partner", "p1", "ACTIVE"))  # e.g. reactivated: old tokens now dead
    identity.active["t1"] = False
    with pytest.raises(Unauthenticated):
        await cache.check(_caller())
    assert identity.calls == 2
    await bus.publish(Invalidation("consent", "c9", "AUTHORISED"))  # unrelated: nothing is refetched
    await cache.check(_caller("t2"))
    await cache.check(_caller("t2"))
    assert identity.calls == 3


async def test_resync_forgets_everything(setup) -> None:  # type: ignore[no-untyped-def]
    cache, identity, bus, _ = setup
    await bus.publish(Invalidation("partner", "p1", "SUSPENDED"))
    with pytest.raises(PermissionDenied):
        await cache.check(_caller())
    await cache.on_resync()
    await cache.check(_caller())
    assert identity.calls == 1


async def test_identity_outage_fails_closed_unless_recently_known(setup) -> None:  # type: ignore[no-untyped-def]
    cache, identity, _, clock = setup
    identity.down = True
    with pytest.raises(Unavailable):
        await cache.check(_caller())
    identity.down = False
    await cache.check(_caller("t2"))
    identity.down = True
    clock.now = 8  # stale, but within the grace period
    await cache.check(_caller("t2"))
    clock.now = 20
    with pytest.raises(Unavailable):
        await cache.check(_caller("t2"))


async def test_a_token_in_use_is_introspected_again_before_its_entry_expires(setup) -> None:  # type: ignore[no-untyped-def]
    cache, identity, _, clock = setup
    await cache.check(_caller())
    clock.now = 3.9  # under 0.8 of the 5 s TTL: the entry alone
    await cache.check(_caller())
    assert identity.calls == 1
    clock.now = 4.5  # past 0.8 of it: answered from the entry, one introspection behind it
    identity.active["t1"] = False
    for _ in range(5):
        await cache.check(_caller())
    await asyncio.sleep(0)
    assert identity.calls == 2
    clock.now = 6  # the old entry would have expired; the refreshed one (from 4.5) says revoked
    with pytest.raises(Unauthenticated):
        await cache.check(_caller())
    assert identity.calls == 2


@pytest.mark.parametrize(
    ("status", "error", "reason"),
    [
        (TokenStatus(active=False), Unauthenticated, "TOKEN_REVOKED"),
        (TokenStatus(active=False, partner_status="SUSPENDED"), PermissionDenied, "PARTNER_SUSPENDED"),
        (TokenStatus(active=False, consent_state="REVOKED"), PermissionDenied, "CONSENT_REVOKED"),
        (TokenStatus(active=False, consent_state="EXPIRED"), PermissionDenied, "CONSENT_EXPIRED"),
        (
            TokenStatus(active=False, consent_state="AUTHORISED", consent_paused=True),
            PermissionDenied,
            "CONSENT_PAUSED",
        ),
    ],
)
async def test_without_the_bus_introspection_gives_the_same_reason_as_the_bus(status, error, reason) -> None:  # type: ignore[no-untyped-def]
    # The embedded default has no shared bus: identity's inactive answer names the cause.
    async def introspect(caller: Caller) -> TokenStatus:
        return status

    with pytest.raises(error) as raised:
        await RevocationCache(introspect).check(_caller())
    assert raised.value.reason == reason


async def test_max_age_asks_identity_again_for_a_fresher_status(setup) -> None:  # type: ignore[no-untyped-def]
    cache, identity, _, clock = setup
    await cache.check(_caller())
    clock.now = 1.0
    await cache.check(_caller(), max_age=2.0)
    assert identity.calls == 1
    identity.active["t1"] = False
    with pytest.raises(Unauthenticated):
        await cache.check(_caller(), max_age=0.5)
    assert identity.calls == 2
