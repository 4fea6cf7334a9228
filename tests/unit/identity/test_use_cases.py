"""Identity's use cases with a fake unit of work: no gRPC, no database."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest

from meshlib import totp
from meshlib.errors import FailedPrecondition, NotFound, PermissionDenied
from meshlib.storage import Codec, IdempotencyKey
from services.identity.common import EventPublisher
from services.identity.consent_service import ConsentService
from services.identity.customer_service import CustomerService, NewCustomer, StrongCustomerAuthentication
from services.identity.domain.consents import ConsentRequest, ConsentState
from services.identity.domain.customers import CustomerStatus
from services.identity.domain.partners import PartnerStatus
from services.identity.domain.secrets import SecretBox, SecretHasher, b64url_sha256
from tests.unit.identity.fakes import FakeUnitOfWork, RecordingBus, Store, partner

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
PASSWORD = "a long enough password"


@dataclass(frozen=True)
class Replayed:
    """A saved answer read back (the servicer's codec reads a response message)."""

    payload: bytes


SAVED: Codec[Any] = Codec(lambda result: repr(result).encode(), Replayed)


def _key(request_id: str, payload: str = "p") -> IdempotencyKey:
    return IdempotencyKey("caller", "Method", request_id, payload)


class World:
    """The use cases wired on fakes, with a clock the test controls."""

    def __init__(self) -> None:
        self.store = Store()
        self.now = NOW
        self.bus = RecordingBus()
        uow = partial(FakeUnitOfWork, self.store)
        hasher = SecretHasher(time_cost=1, memory_cost_kib=1024, parallelism=1)
        self.box = SecretBox(b"test")
        sca = StrongCustomerAuthentication(hasher, self.box, self.clock)
        events = EventPublisher(self.bus)  # type: ignore[arg-type]
        self.customers = CustomerService(uow, hasher, self.box, sca, self.clock)
        self.consents = ConsentService(uow, sca, events, self.clock)
        self.store.partners["p1"] = partner("p1")

    def clock(self) -> dt.datetime:
        return self.now

    async def customer(self, username: str = "ada") -> tuple[str, bytes]:
        created = await self.customers.create(_key(f"create-{username}"), SAVED, username, PASSWORD, "Ada")
        assert isinstance(created, NewCustomer)
        return created.customer.customer_id, created.totp_seed

    async def consent(self) -> str:
        request = ConsentRequest(
            ("READ_BALANCES",), NOW + dt.timedelta(days=1), None, None, None, 0, b64url_sha256("v" * 43), "S256"
        )
        created = await self.consents.create(_key(f"consent-{len(self.store.consents)}"), SAVED, "p1", request)
        assert not isinstance(created, Replayed)
        return created.consent_id


@pytest.fixture
def world() -> World:
    return World()


async def test_authorise_issues_a_code_and_publishes_the_new_state(world: World) -> None:
    customer_id, seed = await world.customer()
    consent_id = await world.consent()
    code = totp.totp(seed, world.now.timestamp())
    result = await world.consents.authorise(_key("a1"), SAVED, consent_id, "ada", PASSWORD, code, ("acc1",))
    assert not isinstance(result, Replayed)
    assert result.consent.state is ConsentState.AUTHORISED and result.consent.customer_id == customer_id
    assert result.code_expires_at == NOW + dt.timedelta(seconds=60)
    stored_code = next(iter(world.store.codes.values()))
    assert stored_code.code_hash != result.authorization_code and stored_code.partner_id == "p1"
    assert [(e.kind, e.key, e.detail) for e in world.bus.published] == [("consent", consent_id, "AUTHORISED")]
    # The partner's event, in the same transaction as the change.
    assert [(e.type.value, e.consent_id, e.partner_id) for e in world.store.partner_events] == [
        ("CONSENT_AUTHORISED", consent_id, "p1")
    ]
    assert isinstance(
        await world.consents.authorise(_key("a1"), SAVED, consent_id, "ada", PASSWORD, code, ("acc1",)), Replayed
    )


async def test_failed_sca_is_counted_even_though_the_call_fails(world: World) -> None:
    customer_id, seed = await world.customer()
    consent_id = await world.consent()
    for attempt in range(1, 6):
        with pytest.raises(PermissionDenied) as raised:
            await world.consents.authorise(_key(f"f{attempt}"), SAVED, consent_id, "ada", "wrong", "000000", ("acc1",))
        assert raised.value.reason == "SCA_FAILED"
        assert world.store.customers[customer_id].failed_attempts == attempt
    assert world.store.customers[customer_id].status is CustomerStatus.LOCKED
    with pytest.raises(PermissionDenied) as raised:
        await world.consents.authorise(
            _key("ok"), SAVED, consent_id, "ada", PASSWORD, totp.totp(seed, NOW.timestamp()), ("acc1",)
        )
    assert raised.value.reason == "CUSTOMER_LOCKED"
    assert world.store.consents[consent_id].state is ConsentState.AWAITING_AUTHORISATION
    assert world.bus.published == []


async def test_a_used_code_cannot_authenticate_again(world: World) -> None:
    _, seed = await world.customer()
    code = totp.totp(seed, world.now.timestamp())
    await world.customers.authenticate(_key("x1"), SAVED, "ada", PASSWORD, code)
    with pytest.raises(PermissionDenied):
        await world.customers.authenticate(_key("x2"), SAVED, "ada", PASSWORD, code)
    world.now += dt.timedelta(seconds=30)
    await world.customers.authenticate(_key("x3"), SAVED, "ada", PASSWORD, totp.totp(seed, world.now.timestamp()))


async def test_revocation_kills_bound_tokens_and_nothing_is_published_on_failure(world: World) -> None:
    consent_id = await world.consent()
    revoked = await world.consents.revoke_by_partner(_key("r1"), SAVED, "p1", consent_id)
    assert not isinstance(revoked, Replayed) and revoked.state is ConsentState.REVOKED
    assert world.store.revoked_consent_tokens == [consent_id]
    assert [e.detail for e in world.bus.published] == ["REVOKED"]
    with pytest.raises(NotFound):  # never authorised, so no customer owns it
        await world.consents.pause(_key("p1"), SAVED, consent_id, "someone")
    with pytest.raises(FailedPrecondition) as raised:
        await world.consents.reject(_key("j1"), SAVED, consent_id, "someone")
    assert raised.value.reason == "CONSENT_REVOKED"
    assert len(world.bus.published) == 1
    # One event for the one change; the refused ones wrote none.
    assert [e.type.value for e in world.store.partner_events] == ["CONSENT_REVOKED"]


async def test_a_suspended_partner_cannot_create_consents(world: World) -> None:
    world.store.partners["p1"] = partner("p1", status=PartnerStatus.SUSPENDED)
    with pytest.raises(PermissionDenied) as raised:
        await world.consent()
    assert raised.value.reason == "PARTNER_SUSPENDED"
    assert world.store.consents == {}
