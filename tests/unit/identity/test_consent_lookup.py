"""IdentityConsentLookup: maps identity's Consent to a ConsentView, hides other partners'
consents, caches for a TTL and drops an entry when identity says the consent changed."""

from __future__ import annotations

import asyncio
import datetime as dt

import grpc
import pytest

from meshlib.auth.consent_client import IdentityConsentLookup
from meshlib.errors import NotFound, Unavailable
from meshlib.events import InProcessBus, Invalidation
from openbank.common.v1 import consent_permission_pb2, money_pb2
from openbank.identity.v1 import consent_pb2


class FakeConsents:
    """Answers GetConsent with one stored consent and counts the calls."""

    def __init__(self) -> None:
        self.consent = consent_pb2.Consent(
            name="consents/c1",
            partner="partners/p1",
            customer="customers/u1",
            state=consent_pb2.CONSENT_STATE_AUTHORISED,
            permissions=[consent_permission_pb2.CONSENT_PERMISSION_READ_BALANCES],
            accounts=["accounts/a1"],
            reads_per_day=7,
            per_payment_limit=money_pb2.Money(currency_code="EUR", minor_units=500),
            period_limit=money_pb2.Money(currency_code="EUR", minor_units=900),
            period=consent_pb2.CONSENT_PERIOD_WEEK,
        )
        self.consent.expire_time.FromDatetime(dt.datetime(2030, 1, 1, tzinfo=dt.UTC))
        self.calls: list[tuple[str, object]] = []

    async def GetConsent(
        self, request: consent_pb2.GetConsentRequest, metadata: object, timeout: float, **options: object
    ) -> object:
        self.calls.append((request.name, metadata))
        return consent_pb2.GetConsentResponse(consent=self.consent)


async def _bearer() -> str:
    return "service-token"


@pytest.fixture
async def lookup() -> tuple[IdentityConsentLookup, FakeConsents, list[float]]:
    now = [0.0]
    channel = grpc.aio.insecure_channel("127.0.0.1:1")
    adapter = IdentityConsentLookup(channel, _bearer, ttl_seconds=5, clock=lambda: now[0])
    fake = FakeConsents()
    adapter._stub = fake  # type: ignore[assignment]  # the transport is not under test here
    yield adapter, fake, now  # type: ignore[misc]
    await channel.close()


async def test_maps_every_field_and_sends_the_service_token(lookup) -> None:  # type: ignore[no-untyped-def]
    adapter, fake, _ = lookup
    view = await adapter.get("c1", partner_id="p1")
    assert (view.consent_id, view.partner_id, view.customer_id, view.state) == ("c1", "p1", "u1", "AUTHORISED")
    assert view.permissions == {"READ_BALANCES"} and view.account_ids == {"a1"} and view.reads_per_day == 7
    assert (view.per_payment_limit_minor, view.period_limit_minor, view.limit_currency, view.period) == (
        500,
        900,
        "EUR",
        "WEEK",
    )
    assert view.expires_at == dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    assert fake.calls == [("consents/c1", (("authorization", "Bearer service-token"),))]
    view.require_usable("READ_BALANCES", dt.datetime(2029, 1, 1, tzinfo=dt.UTC))


async def test_another_partners_consent_is_not_found(lookup) -> None:  # type: ignore[no-untyped-def]
    adapter, _, _ = lookup
    with pytest.raises(NotFound):
        await adapter.get("c1", partner_id="p2")


async def test_cached_for_the_ttl_and_dropped_on_invalidation(lookup) -> None:  # type: ignore[no-untyped-def]
    adapter, fake, now = lookup
    bus = InProcessBus()
    adapter.attach(bus)
    await adapter.get("c1", partner_id="p1")
    await adapter.get("c1", partner_id="p1")
    assert len(fake.calls) == 1
    fake.consent.state = consent_pb2.CONSENT_STATE_REVOKED
    await bus.publish(Invalidation("consent", "c1", "REVOKED"))
    assert (await adapter.get("c1", partner_id="p1")).state == "REVOKED"
    now[0] = 6
    await adapter.get("c1", partner_id="p1")
    assert len(fake.calls) == 3


class SlowConsents(FakeConsents):
    """GetConsent waits for a gate, so calls can race for one fetch."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def GetConsent(
        self, request: consent_pb2.GetConsentRequest, metadata: object, timeout: float, **options: object
    ) -> object:
        self.calls.append((request.name, metadata))
        await self.gate.wait()
        return consent_pb2.GetConsentResponse(consent=self.consent)


async def test_calls_racing_for_an_expired_entry_share_one_fetch(lookup) -> None:  # type: ignore[no-untyped-def]
    adapter, _, _ = lookup
    slow = SlowConsents()
    adapter._stub = slow
    racing = [asyncio.ensure_future(adapter.get("c1", partner_id="p1")) for _ in range(30)]
    await asyncio.sleep(0.01)
    slow.gate.set()
    views = await asyncio.gather(*racing)
    assert len(slow.calls) == 1 and {v.consent_id for v in views} == {"c1"}
    await adapter.get("c1", partner_id="p1")
    assert len(slow.calls) == 1  # cached by the shared fetch


async def test_a_fetch_overtaken_by_an_invalidation_is_not_cached(lookup) -> None:  # type: ignore[no-untyped-def]
    adapter, _, _ = lookup
    slow = SlowConsents()
    adapter._stub = slow
    first = asyncio.ensure_future(adapter.get("c1", partner_id="p1"))
    await asyncio.sleep(0.01)
    await adapter._on_invalidation(Invalidation("consent", "c1", "REVOKED"))
    slow.gate.set()
    await first
    await adapter.get("c1", partner_id="p1")
    assert len(slow.calls) == 2  # the answer that predates the change was not kept


async def test_a_failed_shared_fetch_fails_every_waiter_and_is_retried_next_time(lookup) -> None:  # type: ignore[no-untyped-def]
    adapter, fake, _ = lookup

    class Failing(FakeConsents):
        async def GetConsent(self, request: object, metadata: object, timeout: float, **options: object) -> object:
            self.calls.append(("x", metadata))
            await asyncio.sleep(0)
            raise grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata())

    failing = Failing()
    adapter._stub = failing
    outcomes = await asyncio.gather(*(adapter.get("c1", partner_id="p1") for _ in range(5)), return_exceptions=True)
    assert len(failing.calls) == 1 and all(isinstance(o, Exception) for o in outcomes)
    adapter._stub = fake
    assert (await adapter.get("c1", partner_id="p1")).consent_id == "c1"


async def test_an_entry_in_use_is_refreshed_ahead_of_its_expiry_without_waiting(lookup) -> None:  # type: ignore[no-untyped-def]
    adapter, _, now = lookup
    slow = SlowConsents()
    slow.gate.set()
    adapter._stub = slow
    await adapter.get("c1", partner_id="p1")
    now[0] = 3.9  # under 0.8 of the 5 s TTL: served from the cache alone
    await adapter.get("c1", partner_id="p1")
    assert len(slow.calls) == 1
    slow.gate.clear()
    now[0] = 4.5  # past 0.8 of the TTL: answered at once from the entry, one fetch behind it
    views = [await adapter.get("c1", partner_id="p1") for _ in range(10)]
    await asyncio.sleep(0.01)  # the background fetch is under way, held at the gate
    assert {v.consent_id for v in views} == {"c1"} and len(slow.calls) == 2
    slow.consent.paused = True
    slow.gate.set()
    await asyncio.sleep(0.01)
    now[0] = 8.0  # the refreshed entry (fetched at 4.5) is still fresh, and holds the new state
    assert (await adapter.get("c1", partner_id="p1")).paused
    assert len(slow.calls) == 2


async def test_a_failed_refresh_leaves_the_entry_to_expire_at_its_ttl(lookup) -> None:  # type: ignore[no-untyped-def]
    adapter, _, now = lookup
    await adapter.get("c1", partner_id="p1")

    class Failing(FakeConsents):
        async def GetConsent(self, request: object, metadata: object, timeout: float, **options: object) -> object:
            self.calls.append(("x", metadata))
            raise grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata())

    failing = Failing()
    adapter._stub = failing
    now[0] = 4.5
    assert (await adapter.get("c1", partner_id="p1")).consent_id == "c1"  # the entry, still within its TTL
    await asyncio.sleep(0.01)
    now[0] = 5.5  # expired and identity still down: the caller sees the failure, never a stale view
    with pytest.raises(Unavailable):
        await adapter.get("c1", partner_id="p1")
    assert len(failing.calls) == 2
