"""How a process that checks consents is wired to identity: one service token source,
the consent lookup and the revocation cache, both fed by the invalidation bus.

Used by the gateway and by every service that enforces consents, so the wiring exists once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from meshlib.auth.consent import ConsentLookup, ConsentView
from meshlib.auth.consent_client import IdentityConsentLookup
from meshlib.auth.context import Caller
from meshlib.auth.revocation import RevocationCache, identity_revocation_check
from meshlib.auth.service_tokens import ServiceTokenSource
from meshlib.errors import Unavailable
from meshlib.events import DEFAULT_CHANNEL, InvalidationBus, bus_for

log = logging.getLogger("meshlib.auth")

# Without a shared bus (embedded default) caches must age out fast: the bus is what makes
# a revocation reach other processes at once.
TTL_WITH_BUS_SECONDS = 5.0
TTL_WITHOUT_BUS_SECONDS = 1.0
# An open stream re-checks its caller this often: with a shared bus every change wakes it at
# once (this is the safety net); without one this is how fast a revocation ends a stream.
STREAM_RECHECK_WITH_BUS_SECONDS = TTL_WITH_BUS_SECONDS
STREAM_RECHECK_WITHOUT_BUS_SECONDS = 0.25
# While the shared bus is subscribed (not down, not resyncing), the re-check is only the
# safety net for a lost message: OBM_STREAM_RECHECK_SECONDS_BUS_UP.
STREAM_RECHECK_BUS_UP_SECONDS = 30.0


class UnavailableConsentLookup:
    """Used when the process has no credentials to ask identity: consent checks fail closed."""

    async def get(self, consent_id: str, *, partner_id: str) -> ConsentView:
        """Always UNAVAILABLE: the consent cannot be checked, so nothing is served."""
        raise Unavailable("consent checks are unavailable", retry_after_seconds=1.0)

    async def get_of_customer(self, consent_id: str, *, customer_id: str) -> ConsentView:
        """Always UNAVAILABLE, as ``get``."""
        raise Unavailable("consent checks are unavailable", retry_after_seconds=1.0)


class UnavailableRevocationCheck:
    """Used when the process has no credentials to ask identity: whether a token, its
    consent or its partner was revoked cannot be known, so no token is accepted."""

    async def check(self, caller: Caller) -> None:
        """Always UNAVAILABLE (a misconfigured process must not serve revoked tokens)."""
        raise Unavailable("revocation checks are unavailable", retry_after_seconds=1.0)


@dataclass
class IdentityPeers:
    """The identity-facing pieces of one process."""

    bus: InvalidationBus
    consents: ConsentLookup
    revocation: RevocationCache | UnavailableRevocationCheck
    tokens: ServiceTokenSource | None

    async def start(self) -> None:
        """Start-up: listen on the bus, and fetch the service token before the first call needs it."""
        await self.bus.start()
        if self.tokens is not None:
            self.tokens.warm_up()


def identity_peers(
    identity: grpc.aio.Channel,
    *,
    client_id: str | None,
    client_secret: str | None,
    redis_url: str | None,
    channel: str = DEFAULT_CHANNEL,
    scopes: Sequence[str] = ("consents:read", "tokens:introspect"),
    stream_recheck_bus_up_seconds: float = STREAM_RECHECK_BUS_UP_SECONDS,
) -> IdentityPeers:
    """Build the lookup and revocation cache on a bus; call ``bus.start()`` at start-up."""
    bus = bus_for(redis_url, channel)
    ttl = TTL_WITH_BUS_SECONDS if redis_url else TTL_WITHOUT_BUS_SECONDS
    if not client_id or not client_secret:
        log.warning("no service client credentials: every token-bearing call answers UNAVAILABLE")
        return IdentityPeers(bus, UnavailableConsentLookup(), UnavailableRevocationCheck(), None)
    tokens = ServiceTokenSource(identity, client_id, client_secret, list(scopes))
    consents = IdentityConsentLookup(identity, tokens.token, ttl_seconds=ttl)
    consents.attach(bus)
    recheck = STREAM_RECHECK_WITH_BUS_SECONDS if redis_url else STREAM_RECHECK_WITHOUT_BUS_SECONDS
    # Only a shared bus carries identity's changes here; the in-process one does not.
    bus_up = getattr(bus, "healthy", None) if redis_url else None
    revocation = identity_revocation_check(
        identity,
        tokens.token,
        bus,
        ttl_seconds=ttl,
        stream_recheck_seconds=recheck,
        consents=consents,
        stream_recheck_bus_up_seconds=stream_recheck_bus_up_seconds,
        bus_up=bus_up,
    )
    return IdentityPeers(bus, consents, revocation, tokens)
