"""CreatePayment under a mandate against in-memory fakes: a payment outside the mandate is
refused before anything is written or any money asked for; one inside it runs as any other."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from meshlib.errors import FailedPrecondition
from meshlib.mandates import Mandate
from meshlib.money import Amount
from services.payment.create_payment import NewPayment
from tests.unit.payment.fakes import NOW, FakeConsents
from tests.unit.payment.test_saga import World

MANDATE = Mandate(
    mandate_type="SWEEPING",
    creditor_account_id=None,
    creditor_wallet_partner_id="w1",
    currency="EUR",
    maximum_individual_minor=1_000,
    periodic_limits=(),
    valid_from=NOW - dt.timedelta(days=1),
    valid_to=NOW + dt.timedelta(days=1),
)


def _mandated(world: World, mandate: Mandate) -> None:
    consents: FakeConsents = world.create._consents  # type: ignore[assignment]
    consents.views["c1"] = dataclasses.replace(consents.views["c1"], mandate=mandate)


def _transfer(request_id: str, amount: int) -> NewPayment:
    return NewPayment(
        request_id=request_id,
        fingerprint=f"fp-{request_id}",
        debtor_account_id="a1",
        creditor_account_id="a2",
        creditor_wallet_partner_id=None,
        amount=Amount("EUR", amount),
        payment_type="TRANSFER",
    )


@pytest.mark.parametrize(
    ("mandate", "pay", "reason"),
    [
        (MANDATE, lambda w: w.create("w1", "c1", _transfer("t1", 10)), "MANDATE_CREDITOR_MISMATCH"),
        (MANDATE, lambda w: w.pay(1_001, "r1"), "MANDATE_AMOUNT_EXCEEDED"),
        (dataclasses.replace(MANDATE, valid_from=NOW), lambda w: w.pay(10, "r1"), None),
        (dataclasses.replace(MANDATE, valid_to=NOW), lambda w: w.pay(10, "r1"), "MANDATE_NOT_VALID_NOW"),
        (dataclasses.replace(MANDATE, currency="GBP"), lambda w: w.pay(10, "r1"), "MANDATE_AMOUNT_EXCEEDED"),
    ],
)
async def test_a_payment_outside_the_mandate_writes_nothing_and_asks_for_no_money(mandate, pay, reason) -> None:  # type: ignore[no-untyped-def]
    world = World()
    _mandated(world, mandate)
    if reason is None:  # valid from exactly now: paid
        assert (await pay(world)).state.name == "SETTLED"
        return
    with pytest.raises(FailedPrecondition) as refused:
        await pay(world)
    assert refused.value.reason == reason
    assert world.store.writes == 0 and world.ledger.holds == {}


async def test_a_replay_answers_the_first_payment_even_once_the_mandate_would_refuse_it() -> None:
    world = World()
    _mandated(world, MANDATE)
    first = await world.pay(1_000, "r1")
    _mandated(world, dataclasses.replace(MANDATE, maximum_individual_minor=1))
    assert (await world.pay(1_000, "r1")).payment_id == first.payment_id
