"""A new customer's activation needs the code the bank sends the applicant itself (not the
wallet): OnboardingService on in-memory fakes, with a recording notifier.

The wallet holds the activation link; without this code it cannot choose the customer's
password or see the authenticator secret.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest

from meshlib.errors import PermissionDenied
from meshlib.storage import Codec, IdempotencyKey
from services.identity.domain import onboarding as rules
from services.identity.domain.onboarding import Application, ApplicationState, OnboardingRules, ScreeningList
from services.identity.domain.secrets import ClientSecretHasher, SecretBox, SecretHasher, b64url_sha256
from services.identity.notifier import CustomerMessage
from services.identity.onboarding_service import Activation, OnboardingService
from services.identity.onboarding_servicer import OnboardingServicer
from tests.unit.identity.fakes import FakeUnitOfWork, Store, partner

NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)
PASSWORD = "a long enough password"


@dataclass(frozen=True)
class Replayed:
    payload: bytes


SAVED: Codec[Any] = Codec(lambda result: repr(result).encode(), Replayed)


class Opener:
    async def open(self, request_id: str, customer_id: str, currency: str, display_name: str) -> str:
        return f"acc-{customer_id[:8]}"


class Outbox:
    """The notification port: what the bank sent the applicant directly."""

    def __init__(self) -> None:
        self.sent: list[CustomerMessage] = []

    async def send(self, message: CustomerMessage) -> None:
        self.sent.append(message)


class World:
    def __init__(self) -> None:
        self.store = Store()
        self.store.partners["p1"] = partner("p1")
        self.now = NOW
        self.outbox = Outbox()
        hasher = SecretHasher(time_cost=1, memory_cost_kib=1024, parallelism=1)
        self.box = SecretBox(b"test")
        self.service = OnboardingService(
            partial(FakeUnitOfWork, self.store),
            hasher,
            self.box,
            OnboardingRules(
                18, frozenset({"2026-01"}), {"PASSPORT": "accept"}, dt.timedelta(days=30), frozenset({"EUR"})
            ),
            ScreeningList.of([]),
            Opener(),
            lambda: self.now,
            "https://bank.test",
            codes=ClientSecretHasher(b"test passphrase for keyed hashes", legacy=hasher),
            notifier=self.outbox,
        )
        self.requests = 0

    async def approved(self) -> Application:
        raw = rules.RawApplication(
            "Jana", "Novakova", "1990-05-01", "jana@example.test", "CZ", "PASSPORT", "X1234567", "2030-01-01",
            "VIDEO_IDENT", NOW - dt.timedelta(days=1), "ev-1", "2026-01", NOW - dt.timedelta(hours=1), "EUR",
        )  # fmt: skip
        key = IdempotencyKey("p1", "SubmitApplication", "submit-1", "p")
        application = await self.service.submit(key, SAVED, "p1", raw, ("READ_BALANCES",), b64url_sha256("v" * 43))
        assert isinstance(application, Application) and application.state is ApplicationState.ACCOUNT_OPEN
        return application

    def link_code(self, application: Application) -> str:
        return self.service.activation_uri(application).split("code=")[1]

    async def activate(self, application: Application, customer_code: str) -> Activation | Replayed:
        self.requests += 1
        key = IdempotencyKey("bankweb", "ActivateCustomer", f"activate-{self.requests}", customer_code)
        return await self.service.activate(  # type: ignore[return-value]
            key, SAVED, application.application_id, self.link_code(application), customer_code, PASSWORD
        )


@pytest.fixture
def world() -> World:
    return World()


async def test_the_code_goes_to_the_applicant_only_never_to_the_partner(world: World) -> None:
    application = await world.approved()
    [message] = world.outbox.sent
    assert message.to_email == "jana@example.test" and message.kind == "activation_code"
    assert len(message.code) == 8 and message.code.isdigit() and message.code in message.body
    stored = world.store.applications[application.application_id]
    assert stored.customer_code_hash and message.code not in stored.customer_code_hash  # a keyed hash only
    # What the partner can read: the application (even with the customer's data in it), its link, its events.
    servicer = OnboardingServicer(world.service)
    seen = servicer._message(stored, holdings=True)
    assert message.code not in str(seen) and message.code.encode() not in seen.SerializeToString()
    assert message.code not in world.service.activation_uri(stored)
    assert all(message.code not in repr(event) for event in world.store.partner_events)
    assert all(message.code not in repr(record) for record in world.store.audit)


async def test_the_link_alone_sets_nothing_and_shows_no_secret(world: World) -> None:
    application = await world.approved()
    customer_id = application.customer_id
    assert customer_id is not None
    before = world.store.customers[customer_id].password_hash
    for wrong in ("", "00000000"):
        with pytest.raises(PermissionDenied) as refused:
            await world.activate(application, wrong)
        assert refused.value.reason == "ACTIVATION_CUSTOMER_CODE_INVALID"
    assert world.store.customers[customer_id].password_hash == before
    assert world.store.applications[application.application_id].state is ApplicationState.ACCOUNT_OPEN


async def test_wrong_codes_are_counted_and_the_fifth_locks_even_the_right_one(world: World) -> None:
    application = await world.approved()
    code = world.outbox.sent[0].code
    wrong = "00000000" if code != "00000000" else "11111111"
    for left in (4, 3, 2, 1):
        with pytest.raises(PermissionDenied) as refused:
            await world.activate(application, wrong)
        assert refused.value.reason == "ACTIVATION_CUSTOMER_CODE_INVALID"
        assert refused.value.metadata["attempts_left"] == str(left)
    with pytest.raises(PermissionDenied) as locked:
        await world.activate(application, wrong)
    assert locked.value.reason == "ACTIVATION_LOCKED"
    with pytest.raises(PermissionDenied) as still:
        await world.activate(application, code)
    assert still.value.reason == "ACTIVATION_LOCKED"
    outcomes = [r[2].get("outcome") for r in world.store.audit if r[0] == "customer.activate"]
    assert outcomes == ["WRONG_CUSTOMER_CODE"] * 4 + ["LOCKED"]
    # The bank sends a new code: the lock is lifted, the old code no longer works.
    resend = IdempotencyKey("ops", "ResendActivationCode", "resend-1", "p")
    await world.service.reissue_customer_code(resend, SAVED, application.application_id, "ops@bank")
    await world.service.reissue_customer_code(resend, SAVED, application.application_id, "ops@bank")  # a retry
    new = world.outbox.sent[-1].code
    assert len(world.outbox.sent) == 2
    if new != code:
        with pytest.raises(PermissionDenied):
            await world.activate(application, code)
    assert isinstance(await world.activate(application, new), Activation)


async def test_the_right_code_activates_once(world: World) -> None:
    application = await world.approved()
    code = world.outbox.sent[0].code
    activated = await world.activate(application, code)
    assert isinstance(activated, Activation) and activated.totp_seed
    stored = world.store.applications[application.application_id]
    assert stored.state is ApplicationState.ACTIVE and stored.customer_code_hash is None
    with pytest.raises(PermissionDenied) as again:
        await world.activate(application, code)
    assert again.value.reason == "ACTIVATION_CODE_INVALID"


async def test_an_expired_code_is_refused(world: World) -> None:
    application = await world.approved()
    world.now = NOW + rules.CUSTOMER_CODE_LIFETIME
    with pytest.raises(PermissionDenied) as expired:
        await world.activate(application, world.outbox.sent[0].code)
    assert expired.value.reason == "ACTIVATION_CUSTOMER_CODE_EXPIRED"
