"""Dynamic isolation on the payment database (SQLite and PostgreSQL): payments recorded where the
writers queue note what each customer used; the leased sweep, on a clock moved by hand, pauses
what was not used (audited, into the outbox) and lowers the daily limit; the register then
refuses with the reasons; the customer's restore makes it pass again; the lease lets one
replica sweep at a time; the relay tells each consent the customer paid through, once."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import sqlalchemy as sa

from meshlib.audit import Actor
from meshlib.errors import FailedPrecondition
from meshlib.money import Amount
from meshlib.storage import Database, IdempotencyKey, Transactions
from services.payment.adapters.sql_register import SqlPaymentRegister
from services.payment.domain.checks import PartnerLimits
from services.payment.domain.isolation import (
    DAILY_LIMIT,
    NEW_CREDITOR,
    IsolationPolicy,
    Status,
    parse_isolation_policy,
)
from services.payment.domain.payments import PaymentState
from services.payment.domain.risk import RiskRules
from services.payment.domain.saga import IN_BANK_TRANSFER, opening
from services.payment.isolation import CustomerIsolation, IsolationSweep
from services.payment.isolation_repository import IsolationEvent
from services.payment.ports import CREATE_METHOD, Registration
from services.payment.tables import audit, payments
from services.payment.unit_of_work import PaymentUnitOfWork
from tests.integration.payment.samples import LEASE, NOW, sample_payment
from tests.support.consents import consent_view

POLICY = parse_isolation_policy(
    {
        "version": "store.1",
        "new_creditor": {"pause_after_days": 30},
        "payment_types": {"pause_after_days": 30, "types": ["BILL_PAYMENT"]},
        "daily_limit": {"after_days": 30, "low_use_below_minor": 5_000, "floor_minor": 2_500, "currency": "EUR"},
    }
)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> dt.datetime:
        return self.now


class Sink:
    def __init__(self) -> None:
        self.events: list[tuple[IsolationEvent, str, str]] = []

    async def append(self, events: list[tuple[IsolationEvent, str, str]]) -> None:
        self.events += events


class World:
    def __init__(self, database: Database) -> None:
        self.clock = Clock()
        units = lambda **options: PaymentUnitOfWork(database, **options)  # noqa: E731
        self.database = database
        self.register = SqlPaymentRegister(units, RiskRules, lease=LEASE, clock=self.clock)
        self.transactions = Transactions(units, clock=self.clock)
        self.sink = Sink()
        self.isolation = CustomerIsolation(self.transactions, clock=self.clock)
        self.paid = 0

    def sweep(self, sink: Sink | None = None, policy: IsolationPolicy = POLICY) -> IsolationSweep:
        return IsolationSweep(
            self.transactions,
            lambda: policy,
            sink or self.sink,
            interval_seconds=0,
            sweep_every_seconds=0,
            clock=self.clock,
        )

    async def pay(self, creditor: str, amount: int = 1000, payment_type: str = "TRANSFER") -> Any:
        self.paid += 1
        payment = sample_payment(
            f"p{self.paid}", creditor_account_id=creditor, amount=Amount("EUR", amount), payment_type=payment_type
        )
        key = IdempotencyKey("p1", CREATE_METHOD, f"r{self.paid}", "fp")
        registration = Registration(
            payment, key, consent_view(), PartnerLimits("p1"), opening(IN_BANK_TRANSFER), "0" * 32
        )
        stored, _ = await self.register.record(registration)
        async with self.database.engine.begin() as connection:  # as if its saga settled it
            await connection.execute(
                payments.update().where(payments.c.payment_id == stored.payment_id).values(state="SETTLED")
            )
        return stored

    async def states(self) -> dict[str, Any]:
        return {s.capability: s for s in await self.isolation.capabilities("cust1")}


@pytest.fixture
def world(database: Database) -> World:
    return World(database)


async def test_unused_for_the_period_the_sweep_pauses_and_the_register_refuses_until_the_customer_restores(
    world: World,
) -> None:
    assert (await world.pay("a2")).state is PaymentState.ACCEPTED
    states = await world.states()
    assert states["TRANSFER"].last_used_at == NOW and states[NEW_CREDITOR].last_used_at == NOW
    assert states["BILL_PAYMENT"].last_used_at is None and states["BILL_PAYMENT"].since == NOW

    world.clock.now = NOW + dt.timedelta(days=29)
    assert await world.sweep().tick() == 0
    world.clock.now = NOW + dt.timedelta(days=30)
    assert await world.sweep().tick() == 3  # NEW_CREDITOR, BILL_PAYMENT paused; DAILY_LIMIT lowered
    states = await world.states()
    assert {c: s.status for c, s in states.items() if s.status is not Status.ACTIVE} == {
        NEW_CREDITOR: Status.PAUSED,
        "BILL_PAYMENT": Status.PAUSED,
        DAILY_LIMIT: Status.LOWERED,
    }
    assert states[NEW_CREDITOR].policy_version == "store.1" and states[NEW_CREDITOR].reason == "not used for 30 days"

    with pytest.raises(FailedPrecondition) as refused:
        await world.pay("a3")  # a creditor never paid
    assert (refused.value.reason, refused.value.metadata["capability"]) == ("CAPABILITY_PAUSED", NEW_CREDITOR)
    with pytest.raises(FailedPrecondition) as refused:
        await world.pay("a2", payment_type="BILL_PAYMENT")
    assert refused.value.metadata["capability"] == "BILL_PAYMENT"
    await world.pay("a2", amount=2_000)  # the creditor paid before, under the floor
    with pytest.raises(FailedPrecondition) as refused:
        await world.pay("a2", amount=501)  # 2,000 + 501 > 2,500 today
    assert refused.value.reason == "DAILY_LIMIT_LOWERED"
    await world.pay("a2", amount=500)

    customer = Actor("customer", "cust1", client_id="bank-app", customer_id="cust1")
    back = await world.isolation.restore("cust1", NEW_CREDITOR, customer)
    assert (back.status, back.changed_by, back.last_used_at) == (Status.ACTIVE, "customer:cust1", world.clock.now)
    with pytest.raises(FailedPrecondition) as refused:
        await world.pay("a3")  # a new creditor again, but today's lowered limit is used up
    assert refused.value.reason == "DAILY_LIMIT_LOWERED"
    await world.isolation.restore("cust1", DAILY_LIMIT, customer)
    assert (await world.pay("a3")).state is PaymentState.ACCEPTED
    assert (await world.isolation.restore("cust1", NEW_CREDITOR, customer)).status is Status.ACTIVE  # no-op
    await world.pay("a2", amount=10_000)

    async with world.database.engine.connect() as connection:
        rows = (
            await connection.execute(
                sa.select(audit.records.c.action, audit.records.c.outcome, audit.records.c.actor)
                .where(audit.records.c.action == "payment.isolation")
                .order_by(audit.records.c.occurred_at)
            )
        ).all()
    async with world.database.engine.connect() as connection:
        attempts = (
            await connection.execute(
                sa.select(audit.records.c.details).where(audit.records.c.action == "payment.isolation_refuse")
            )
        ).scalars()
        refusals = sorted(str(details) for details in attempts)
    assert len(refusals) == 4 and sum("CAPABILITY_PAUSED" in r for r in refusals) == 2, refusals
    assert sum("DAILY_LIMIT_LOWERED" in r for r in refusals) == 2, refusals
    assert sorted((r.outcome, r.actor) for r in rows) == sorted(
        [
            ("PAUSED", "system:payment-isolation"),
            ("PAUSED", "system:payment-isolation"),
            ("LOWERED", "system:payment-isolation"),
            ("ACTIVE", "cust1"),
            ("ACTIVE", "cust1"),
        ]
    )


async def test_one_replica_sweeps_at_a_time_and_each_change_reaches_each_consent_once(world: World) -> None:
    await world.pay("a2")
    world.clock.now = NOW + dt.timedelta(days=31)
    first, second = world.sweep(), world.sweep(Sink())
    assert await first.tick() == 3
    assert await second.tick() == 0  # the lease is the first's
    told = [(e.capability, e.status, partner, consent) for e, partner, consent in world.sink.events]
    assert sorted(told) == sorted(
        [
            (NEW_CREDITOR, "PAUSED", "p1", "c1"),
            ("BILL_PAYMENT", "PAUSED", "p1", "c1"),
            (DAILY_LIMIT, "LOWERED", "p1", "c1"),
        ]
    )
    assert await first.tick() == 0 and len(world.sink.events) == 3  # nothing new, nothing again
    await world.isolation.restore("cust1", NEW_CREDITOR, Actor("customer", "cust1", customer_id="cust1"))
    await first.tick()
    assert [(e.capability, e.status) for e, _, _ in world.sink.events[3:]] == [(NEW_CREDITOR, "ACTIVE")]
    lowered = next(e for e, _, _ in world.sink.events if e.capability == DAILY_LIMIT)
    assert (lowered.limit_minor, lowered.currency) == (2_500, "EUR")


async def test_the_sweep_goes_through_every_customer_batch_by_batch(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("services.payment.isolation.BATCH", 2)
    for customer in ("cust1", "cust2", "cust3"):
        payment = sample_payment(f"x-{customer}", customer_id=customer)
        key = IdempotencyKey("p1", CREATE_METHOD, f"x-{customer}", "fp")
        await world.register.record(
            Registration(payment, key, consent_view(), PartnerLimits("p1"), opening(IN_BANK_TRANSFER), "0" * 32)
        )
    world.clock.now = NOW + dt.timedelta(days=30)
    assert await world.sweep().tick() == 9  # three changes for each of the three
    for customer in ("cust1", "cust2", "cust3"):
        states = {s.capability: s.status for s in await world.isolation.capabilities(customer)}
        assert states["BILL_PAYMENT"] is Status.PAUSED and states[DAILY_LIMIT] is Status.LOWERED
    assert await world.sweep().tick() == 0  # nothing left to change


async def test_a_loosened_policy_releases_at_the_next_sweep_audited_and_told_and_the_register_pays_again(
    world: World,
) -> None:
    await world.pay("a2")
    world.clock.now = NOW + dt.timedelta(days=31)
    assert await world.sweep().tick() == 3
    loosened = parse_isolation_policy(
        {
            "version": "store.2",
            "new_creditor": {"pause_after_days": 90},
            "payment_types": {"pause_after_days": 30, "types": ["BILL_PAYMENT"]},
        }
    )
    world.sink.events.clear()
    world.clock.now += dt.timedelta(minutes=1)  # the first sweep's lease lapsed: a restarted replica
    sweep = world.sweep(policy=loosened)
    assert await sweep.tick() == 2  # BILL_PAYMENT stays paused
    states = await world.states()
    assert (states[NEW_CREDITOR].status, states[DAILY_LIMIT].status) == (Status.ACTIVE, Status.ACTIVE)
    assert states[NEW_CREDITOR].reason == "released: policy store.2 no longer isolates it"
    assert states[NEW_CREDITOR].last_used_at == NOW  # a release is not a use
    assert states["BILL_PAYMENT"].status is Status.PAUSED
    assert sorted((e.capability, e.status) for e, _, _ in world.sink.events) == [
        (DAILY_LIMIT, "ACTIVE"),
        (NEW_CREDITOR, "ACTIVE"),
    ]
    assert await sweep.tick() == 0  # released once
    assert (await world.pay("a3", amount=10_000)).state is PaymentState.ACCEPTED  # new creditor, above the floor
    async with world.database.engine.connect() as connection:
        released = (
            await connection.execute(
                sa.select(audit.records.c.actor).where(
                    audit.records.c.action == "payment.isolation", audit.records.c.outcome == "ACTIVE"
                )
            )
        ).scalars()
        assert list(released) == ["system:payment-isolation"] * 2


async def test_whom_to_tell_is_read_for_a_batchs_customers_at_once_most_recent_first(world: World) -> None:
    paid = [
        ("cust1", "p1", "c1", 1),
        ("cust1", "p2", "c7", 3),  # cust1's most recent
        ("cust1", "p1", "c1", 2),  # the same pair again: told once
        ("cust2", "p3", "c9", 1),
    ]
    for index, (customer, partner, consent, minutes) in enumerate(paid):
        payment = sample_payment(
            f"w{index}",
            customer_id=customer,
            partner_id=partner,
            consent_id=consent,
            created_at=NOW + dt.timedelta(minutes=minutes),
        )
        world.clock.now = payment.created_at  # the register stamps its own time
        key = IdempotencyKey(partner, CREATE_METHOD, f"w{index}", "fp")
        await world.register.record(
            Registration(
                payment, key, consent_view(consent_id=consent, partner_id=partner, customer_id=customer),
                PartnerLimits(partner), opening(IN_BANK_TRANSFER), "0" * 32,
            )
        )  # fmt: skip
    async with PaymentUnitOfWork(world.database, read_only=True) as uow:
        told = await uow.isolation.consents_of(["cust2", "cust1", "cust1", "nobody"])
        assert told == {"cust1": [("p2", "c7"), ("p1", "c1")], "cust2": [("p3", "c9")], "nobody": []}
        assert await uow.isolation.consents_of(["cust1"], limit=1) == {"cust1": [("p2", "c7")]}
        assert await uow.isolation.consents_of([]) == {}
