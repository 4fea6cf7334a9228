"""The simulator's use cases over an in-memory store, a hand-moved clock and a recorded sleep:
receipt and answers, idempotency by message id, statuses over time, the returns feed."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import Callable

import pytest

from meshlib.errors import AlreadyExists, NotFound, Unavailable
from meshlib.storage import Transactions
from schemesim.clearing import ClearingService
from schemesim.domain.rules import parse_rules
from schemesim.domain.transfers import Outcome, Status
from tests.unit.scheme.fakes import FakeUnitOfWork, Store
from tests.unit.scheme.samples import iban, transfer

START = dt.datetime(2030, 1, 7, 9, 0, tzinfo=dt.UTC)
RULES = {
    "rules": [
        {"name": "closed", "match": {"creditor_account": r"DE\d{10}0000000404"}, "action": "reject", "reason": "AC04"},
        {
            "name": "slow",
            "match": {"creditor_account": r"DE\d{10}0000000910"},
            "action": "settle",
            "settle_after_seconds": 30,
        },
        {
            "name": "late",
            "match": {"creditor_account": r"DE\d{10}0000000900"},
            "action": "settle",
            "answer_delay_seconds": 5,
        },
        {"name": "silent", "match": {"creditor_account": r"DE\d{10}0000000901"}, "action": "settle", "answer": "never"},
        {
            "name": "lost",
            "match": {"creditor_account": r"DE\d{10}0000000902"},
            "action": "settle",
            "answer": "never_received",
        },
        {
            "name": "back",
            "match": {"creditor_account": r"DE\d{10}0000000707"},
            "action": "return",
            "reason": "MD07",
            "settle_after_seconds": 10,
            "return_after_seconds": 259200,
        },
    ]
}


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += dt.timedelta(**delta)


class Sleeps:
    """Records every sleep; moves the clock by it."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.slept: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.clock.advance(seconds=seconds)


@pytest.fixture
def world():  # type: ignore[no-untyped-def]
    store, clock = Store(), Clock()
    sleeps = Sleeps(clock)
    transactions = Transactions(lambda **options: FakeUnitOfWork(store, **options))
    service = ClearingService(
        transactions, parse_rules(RULES), clock=clock, sleep=sleeps, silence_seconds=3600, references=references()
    )
    return service, store, clock, sleeps


def references() -> Callable[[], str]:
    counter = iter(range(1, 1_000_000))
    return lambda: f"S{next(counter):06d}"


async def test_settles_at_once_and_answers_the_same_on_a_resubmission(world) -> None:  # type: ignore[no-untyped-def]
    service, store, clock, sleeps = world
    first = await service.submit("m1", transfer(), "fp-1", submitted_by="service:payment")
    assert (first.status, first.settled_at, first.clearing_reference) == (Status.SETTLED, START, "S000001")
    clock.advance(seconds=60)
    again = await service.submit("m1", transfer(), "fp-1")
    assert again == first  # the same transfer, not cleared twice: one record, the first reference
    assert list(store.transfers) == ["m1"] and store.transfers["m1"].submitted_by == "service:payment"
    assert sleeps.slept == []


async def test_the_same_message_id_with_another_transfer_is_refused_and_changes_nothing(world) -> None:  # type: ignore[no-untyped-def]
    service, store, _, _ = world
    await service.submit("m1", transfer(minor=100), "fp-1")
    with pytest.raises(AlreadyExists) as refused:
        await service.submit("m1", transfer(minor=200), "fp-2")
    assert refused.value.reason == "REQUEST_ID_REUSED"
    assert store.transfers["m1"].transfer.amount.minor_units == 100


async def test_rejection_is_an_answer_with_its_reason(world) -> None:  # type: ignore[no-untyped-def]
    service, _, _, _ = world
    report = await service.submit("m1", transfer(iban("404")), "fp")
    assert (report.status, report.reason_code, report.reason_message) == (
        Status.REJECTED,
        "AC04",
        "closed account number",
    )
    assert report.clearing_reference == "" and report.settled_at is None
    assert (await service.status("m1")) == report


async def test_accepted_until_it_settles(world) -> None:  # type: ignore[no-untyped-def]
    service, _, clock, _ = world
    assert (await service.submit("m1", transfer(iban("910")), "fp")).status is Status.ACCEPTED
    clock.advance(seconds=29.999)
    assert (await service.status("m1")).status is Status.ACCEPTED
    clock.advance(seconds=0.001)
    settled = await service.status("m1")
    assert (settled.status, settled.settled_at) == (Status.SETTLED, START + dt.timedelta(seconds=30))


async def test_a_late_answer_is_recorded_first(world) -> None:  # type: ignore[no-untyped-def]
    service, store, _, sleeps = world
    report = await service.submit("m1", transfer(iban("900")), "fp")
    assert sleeps.slept == [5] and report.status is Status.SETTLED
    assert store.transfers["m1"].accepted_at == START  # stored before the wait
    await service.submit("m1", transfer(iban("900")), "fp")
    assert sleeps.slept == [5]  # a resubmission is answered at once


async def test_never_answered_but_processed_a_lost_acknowledgement(world) -> None:  # type: ignore[no-untyped-def]
    service, _, _, sleeps = world
    with pytest.raises(Unavailable):
        await service.submit("m1", transfer(iban("901")), "fp")
    assert sleeps.slept == [3600]
    assert (await service.status("m1")).status is Status.SETTLED  # recovered by asking
    assert (await service.submit("m1", transfer(iban("901")), "fp")).status is Status.SETTLED


async def test_never_answered_and_cancelled_by_the_callers_deadline() -> None:
    store = Store()
    service = ClearingService(
        Transactions(lambda **options: FakeUnitOfWork(store, **options)), parse_rules(RULES), silence_seconds=3600
    )
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(service.submit("m1", transfer(iban("901")), "fp"), timeout=0.05)
    assert store.transfers["m1"].outcome is Outcome.SETTLE


async def test_lost_on_the_way_in_then_delivered_again(world) -> None:  # type: ignore[no-untyped-def]
    service, store, clock, sleeps = world
    with pytest.raises(Unavailable):
        await service.submit("m1", transfer(iban("902")), "fp")
    with pytest.raises(NotFound) as unknown:
        await service.status("m1")
    assert unknown.value.reason == "RESOURCE_NOT_FOUND" and unknown.value.metadata == {"message_id": "m1"}
    # The next delivery is the first the scheme gets: processed and answered at once.
    clock.advance(seconds=10)
    report = await service.submit("m1", transfer(iban("902")), "fp")
    assert (report.status, report.accepted_at) == (Status.SETTLED, clock.now)
    assert sleeps.slept == [3600]
    assert store.transfers["m1"].outcome is Outcome.SETTLE


async def test_unknown_message_id(world) -> None:  # type: ignore[no-untyped-def]
    service, _, _, _ = world
    with pytest.raises(NotFound):
        await service.status("never-sent")


async def test_a_return_comes_days_later_once_into_the_feed(world) -> None:  # type: ignore[no-untyped-def]
    service, store, clock, _ = world
    await service.submit("m1", transfer(iban("707"), minor=4_200), "fp")
    await service.submit("m2", transfer(iban("1")), "fp")
    clock.advance(seconds=10)
    assert (await service.status("m1")).status is Status.SETTLED
    clock.advance(days=3, seconds=-1)
    assert await service.list_returns(0, 10) == []
    assert (await service.status("m1")).payment_return is None
    clock.advance(seconds=1)
    [item] = await service.list_returns(0, 10)
    assert (item.message_id, item.reason_code, item.amount.minor_units, item.sequence) == ("m1", "MD07", 4_200, 1)
    assert item.returned_at == START + dt.timedelta(days=3, seconds=10)
    assert (await service.status("m1")).payment_return == dataclasses.replace(item, sequence=None)
    # Collected once, whoever asks and however often.
    assert await service.collect_returns() == 0
    assert await service.list_returns(1, 10) == []
    assert len(store.feed) == 1


async def test_the_feed_is_in_due_order_and_pages_after_a_position(world) -> None:  # type: ignore[no-untyped-def]
    service, _, clock, _ = world
    for index in range(5):
        await service.submit(f"m{index}", transfer(iban("707")), "fp")
        clock.advance(seconds=1)
    clock.advance(days=4)
    page = await service.list_returns(0, 2)
    assert [(r.message_id, r.sequence) for r in page] == [("m0", 1), ("m1", 2)]
    rest = await service.list_returns(2, 10)
    assert [(r.message_id, r.sequence) for r in rest] == [("m2", 3), ("m3", 4), ("m4", 5)]
