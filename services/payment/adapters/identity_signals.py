"""What identity knows of the customer, for the risk decision, within a bounded deadline.

Fail policy: open. When identity does not answer within the deadline, or answers with an
error, the payment is decided without these signals (``IdentitySignals()``: unknown, which no
rule fires on) and the miss is logged. The consent and the limits are checked whatever happens;
a slow identity must not stop payments or make them wait for it.

Where the signals come from: failed strong authentications since the customer's last good one
(identity's CustomerService.GetCustomerRiskSignals) and when the customer last changed the
payment's consent (the consent lookup, which the payment has just read: no extra call). Two
ways to ask identity, with the same answers: ``GrpcFailedSignIns``, one rpc per payment (the
plain version), and ``CachedFailedSignIns``, remembered per customer for a few seconds and
refreshed ahead of expiry while the customer keeps paying, so a payment pays no round trip (a
failed sign-in shows in the customer's payments at most that much later).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

import grpc

from meshlib.auth.consent import ConsentLookup
from meshlib.cache import RefreshingCache
from meshlib.clients import Bearer, PeerCaller
from meshlib.errors import MeshError
from services.payment.domain.risk import IdentitySignals
from services.payment.ports import Clock, IdentityRiskSignals, utc_now

log = logging.getLogger("services.payment.identity_signals")


class BoundedIdentitySignals:
    """``inner`` within ``deadline_seconds``, or unknown signals."""

    def __init__(self, inner: IdentityRiskSignals, deadline_seconds: float = 0.2) -> None:
        self._inner = inner
        self._deadline = deadline_seconds
        self.misses = 0

    async def recent(self, customer_id: str, consent_id: str) -> IdentitySignals:
        """Identity's signals, or IdentitySignals() when it is late or failing."""
        try:
            # A timeout scope, not wait_for: no task per payment (a cached answer costs ~1 us).
            async with asyncio.timeout(self._deadline):
                return await self._inner.recent(customer_id, consent_id)
        except (TimeoutError, MeshError) as error:
            self.misses += 1
            log.warning(
                "identity's risk signals missing: deciding without them",
                extra={"reason": getattr(error, "reason", "") or type(error).__name__},
            )
            return IdentitySignals()


class FailedSignIns(Protocol):
    """GrpcFailedSignIns or CachedFailedSignIns."""

    async def count(self, customer_id: str) -> int: ...


class GrpcFailedSignIns:
    """CustomerService.GetCustomerRiskSignals, one call each time (one attempt: the bound above
    is the wait)."""

    def __init__(self, channel: grpc.aio.Channel, bearer: Bearer, deadline_seconds: float = 1.0) -> None:
        from openbank.identity.v1 import customer_pb2_grpc

        self._stub = customer_pb2_grpc.CustomerServiceStub(channel)
        self._call = PeerCaller(bearer, deadline_seconds=deadline_seconds, attempts=1)

    async def count(self, customer_id: str) -> int:
        """Failed authentications since the last good one (a MeshError when identity fails)."""
        from openbank.identity.v1 import customer_pb2

        request = customer_pb2.GetCustomerRiskSignalsRequest(name=f"customers/{customer_id}")
        answer = await self._call(self._stub.GetCustomerRiskSignals, request, "identity.GetCustomerRiskSignals")
        return int(answer.failed_sign_ins)


class CachedFailedSignIns:
    """GrpcFailedSignIns remembered per customer for ``ttl_seconds`` (speed only: the same
    answers, at most that old). A failed fetch is not remembered: the next payment asks again."""

    def __init__(
        self,
        source: FailedSignIns,
        ttl_seconds: float,
        capacity: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source = source
        self._cache: RefreshingCache[str, int] = RefreshingCache(
            ttl_seconds, capacity=capacity, clock=clock, name="customer-risk-signals"
        )

    async def count(self, customer_id: str) -> int:
        """As GrpcFailedSignIns.count, from the cache when it is fresh."""
        return await self._cache.get(customer_id, lambda: self._source.count(customer_id))


class IdentityRiskSignalsAdapter:
    """ports.IdentityRiskSignals: failed sign-ins from identity, the consent's last change from
    the consent lookup."""

    def __init__(self, failed: FailedSignIns, consents: ConsentLookup, clock: Clock = utc_now) -> None:
        self._failed = failed
        self._consents = consents
        self._clock = clock

    async def recent(self, customer_id: str, consent_id: str) -> IdentitySignals:
        """What identity knows of the customer and the consent lately (MeshError when it fails)."""
        failed = await self._failed.count(customer_id)
        view = await self._consents.get_of_customer(consent_id, customer_id=customer_id)
        changed_ago = None
        if view.changed_at is not None:
            changed_ago = max(0.0, (self._clock() - view.changed_at).total_seconds())
        return IdentitySignals(failed_sign_ins=failed, consent_changed_seconds_ago=changed_ago)
