"""Disputes against in-memory fakes: the loss split (exact in minor units, the remainder the
bank's), an accepted dispute refunding the customer out of the partner's wallet (an obligation
wallet -> bank) and the bank's loss account (none), once however often it is retried; a
rejected one moving nothing; the deadlines."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshlib.errors import FailedPrecondition, NotFound
from meshlib.money import Amount
from meshlib.storage import IdempotencyKey
from services.payment.disputes import OPEN_DISPUTE_METHOD, Disputes
from services.payment.domain.disputes import (
    Dispute,
    DisputeCategory,
    DisputeDeadlines,
    DisputeRequest,
    DisputeState,
    RiskSharing,
    split_loss,
)
from services.payment.domain.payments import PaymentState
from tests.unit.payment.fakes import NOW
from tests.unit.payment.test_refunds import RefundWorld

LOSS_ACCOUNT = "bank-dispute-loss-eur"


@given(amount=st.integers(min_value=0, max_value=10**15), bps=st.integers(min_value=0, max_value=10_000))
def test_the_split_adds_up_exactly_and_the_partner_never_pays_more_than_its_share(amount: int, bps: int) -> None:
    split = split_loss(amount, bps)
    assert split.partner_minor + split.bank_minor == amount
    assert split.partner_minor >= 0 and split.bank_minor >= 0
    # Rounded down for the partner: the remainder (under one minor unit of share) is the bank's.
    assert split.partner_minor * 10_000 <= amount * bps < (split.partner_minor + 1) * 10_000


def test_the_split_of_odd_amounts() -> None:
    assert split_loss(1001, 5000) == split_loss(1001, 5000).__class__(500, 501)
    assert split_loss(1, 9999).partner_minor == 0
    assert split_loss(777, 10_000).bank_minor == 0
    with pytest.raises(ValueError):
        split_loss(100, 10_001)


class InMemoryDisputes:
    def __init__(self) -> None:
        self.rows: dict[str, Dispute] = {}
        self.keys: dict[str, str] = {}

    async def add(self, dispute: Dispute, key: IdempotencyKey) -> Dispute:
        if key.request_id in self.keys:
            return self.rows[self.keys[key.request_id]]
        if any(d.payment_id == dispute.payment_id and not d.state.final for d in self.rows.values()):
            raise FailedPrecondition("open", reason="DISPUTE_ALREADY_OPEN")
        self.rows[dispute.dispute_id] = dispute
        self.keys[key.request_id] = dispute.dispute_id
        return dispute

    async def get(self, dispute_id: str) -> Dispute | None:
        return self.rows.get(dispute_id)

    async def move(self, dispute: Dispute, from_state: DisputeState) -> Dispute:
        if self.rows[dispute.dispute_id].state is from_state:
            self.rows[dispute.dispute_id] = dispute
        return self.rows[dispute.dispute_id]

    async def set_refunds(self, dispute_id: str, refund_ids: tuple[str, ...]) -> Dispute:
        self.rows[dispute_id] = dataclasses.replace(self.rows[dispute_id], refund_payment_ids=refund_ids)
        return self.rows[dispute_id]

    async def page(self, partner_id: str | None, before: object, limit: int) -> list[Dispute]:
        return [d for d in self.rows.values() if partner_id in (None, d.partner_id)][:limit]

    async def due(self, now: dt.datetime, limit: int) -> list[Dispute]:
        return [
            d
            for d in self.rows.values()
            if d.overdue(now) or (d.state is DisputeState.ACCEPTED and not d.refund_payment_ids)
        ][:limit]


class Agreements:
    def __init__(self, sharing: RiskSharing) -> None:
        self.sharing = sharing

    async def risk_sharing(self, partner_id: str) -> RiskSharing:
        return self.sharing


class DisputeWorld(RefundWorld):
    def __init__(self, sharing: RiskSharing, now: dt.datetime = NOW) -> None:
        super().__init__()
        self.now = now
        self.disputes_store = InMemoryDisputes()
        self.disputes = Disputes(
            store=self.disputes_store,
            payments=self.store,
            refund=self.refund,
            agreements=Agreements(sharing),
            participants=self.positions,
            loss_accounts={"EUR": LOSS_ACCOUNT},
            deadlines=DisputeDeadlines(dt.timedelta(days=120), dt.timedelta(days=30)),
            clock=lambda: self.now,
        )

    async def dispute(  # type: ignore[no-untyped-def]
        self, payment_id: str, category: DisputeCategory = DisputeCategory.FRAUD, amount: int | None = None
    ):
        request = DisputeRequest(
            payment_id, category, Amount("EUR", amount) if amount else None, "not me", "customer", customer_id="cust1"
        )
        return await self.disputes.open(request, IdempotencyKey("cust1", OPEN_DISPUTE_METHOD, f"d-{payment_id}", "fp"))


async def test_an_accepted_fraud_dispute_refunds_the_whole_amount_split_by_the_agreement() -> None:
    world = DisputeWorld(RiskSharing(fraud_bps=2500))
    payment = await world.pay(1001, "p1")
    committed_before = world.positions.committed
    dispute = await world.dispute(payment.payment_id)
    assert (dispute.state, dispute.amount.minor_units) == (DisputeState.OPENED, 1001)

    decided = await world.disputes.accept(dispute.dispute_id, "confirmed")
    assert (decided.state, decided.partner_share_minor, decided.bank_share_minor) == (DisputeState.ACCEPTED, 250, 751)
    partner_refund, bank_refund = [world.store.rows[r].payment for r in decided.refund_payment_ids]
    # The partner's share out of its wallet's settlement account, the wallet owing the bank ...
    assert (partner_refund.state, partner_refund.amount.minor_units, partner_refund.return_reason) == (
        PaymentState.SETTLED,
        250,
        "FRAD",
    )
    assert partner_refund.debtor_account_id == "wallet-account-w1"
    assert (partner_refund.payer_participant_id, partner_refund.payee_participant_id) == ("wallet-w1", "bank")
    assert world.positions.committed - committed_before == 250
    # ... the bank's out of its loss account, inside the bank; the customer gets both.
    assert (bank_refund.state, bank_refund.amount.minor_units, bank_refund.debtor_account_id) == (
        PaymentState.SETTLED,
        751,
        LOSS_ACCOUNT,
    )
    assert not bank_refund.needs_settlement
    assert {partner_refund.creditor_ledger_account_id, bank_refund.creditor_ledger_account_id} == {"a1"}

    # Retried (a lost answer): the same refunds, nothing moves twice; nothing left to refund.
    posted = world.ledger.posted
    assert (await world.disputes.accept(dispute.dispute_id)).refund_payment_ids == decided.refund_payment_ids
    assert world.ledger.posted == posted
    assert (await world.store.refund_facts(payment.payment_id))[1] == 0  # type: ignore[index]


async def test_a_rejected_dispute_moves_nothing_and_stays_rejected() -> None:
    world = DisputeWorld(RiskSharing(fraud_bps=2500))
    payment = await world.pay(500, "p1")
    dispute = await world.dispute(payment.payment_id)
    await world.disputes.investigate(dispute.dispute_id)
    posted = world.ledger.posted
    rejected = await world.disputes.reject(dispute.dispute_id, "the customer's own device")
    assert (rejected.state, rejected.refund_payment_ids, rejected.decision_note) == (
        DisputeState.REJECTED,
        (),
        "the customer's own device",
    )
    assert world.ledger.posted == posted
    with pytest.raises(FailedPrecondition) as refused:
        await world.disputes.accept(dispute.dispute_id)
    assert refused.value.reason == "DISPUTE_ALREADY_DECIDED"
    # Decided: the payment may be disputed again (a new fact), not while one is open.
    again = await world.disputes.open(
        DisputeRequest(payment.payment_id, DisputeCategory.NOT_RECEIVED, None, "", "operator"),
        IdempotencyKey("ops", OPEN_DISPUTE_METHOD, "d2", "fp"),
    )
    with pytest.raises(FailedPrecondition) as twice:
        await world.disputes.open(
            DisputeRequest(payment.payment_id, DisputeCategory.FRAUD, None, "", "operator"),
            IdempotencyKey("ops", OPEN_DISPUTE_METHOD, "d3", "fp"),
        )
    assert (again.state, twice.value.reason) == (DisputeState.OPENED, "DISPUTE_ALREADY_OPEN")


async def test_what_cannot_be_disputed() -> None:
    world = DisputeWorld(RiskSharing(fraud_bps=2500))
    payment = await world.pay(500, "p1")
    with pytest.raises(NotFound):  # another customer's payment, as if missing
        await world.disputes.open(
            DisputeRequest(payment.payment_id, DisputeCategory.FRAUD, None, "", "customer", customer_id="cust2"),
            IdempotencyKey("cust2", OPEN_DISPUTE_METHOD, "x", "fp"),
        )
    with pytest.raises(FailedPrecondition) as over:
        await world.dispute(payment.payment_id, DisputeCategory.WRONG_AMOUNT, amount=501)
    assert over.value.reason == "REFUND_AMOUNT_EXCEEDED"
    world.now = NOW + dt.timedelta(days=121)
    with pytest.raises(FailedPrecondition) as late:
        await world.dispute(payment.payment_id)
    assert late.value.reason == "DISPUTE_FILING_PERIOD_OVER"


async def test_an_undecided_dispute_is_accepted_at_its_deadline_and_a_wrong_amount_refunds_the_difference() -> None:
    world = DisputeWorld(RiskSharing(wrong_amount_bps=10_000))
    payment = await world.pay(900, "p1")
    dispute = await world.dispute(payment.payment_id, DisputeCategory.WRONG_AMOUNT, amount=300)
    world.now = NOW + dt.timedelta(days=29, hours=23)
    assert await world.disputes.sweep() == 0
    world.now = NOW + dt.timedelta(days=30)
    assert await world.disputes.sweep() == 1
    decided = world.disputes_store.rows[dispute.dispute_id]
    assert (decided.state, decided.partner_share_minor, decided.bank_share_minor) == (DisputeState.ACCEPTED, 300, 0)
    assert len(decided.refund_payment_ids) == 1
    assert (await world.store.refund_facts(payment.payment_id))[1] == 600  # type: ignore[index]


async def test_an_accepted_dispute_whose_refunds_were_lost_is_completed_by_the_sweep() -> None:
    world = DisputeWorld(RiskSharing(fraud_bps=10_000))
    payment = await world.pay(400, "p1")
    dispute = await world.dispute(payment.payment_id)
    # The process died after writing ACCEPTED, before any refund.
    await world.disputes_store.move(
        dataclasses.replace(dispute, state=DisputeState.ACCEPTED, partner_share_minor=400), DisputeState.OPENED
    )
    assert await world.disputes.sweep() == 1
    assert world.disputes_store.rows[dispute.dispute_id].refund_payment_ids
    assert world.positions.committed == 400 + 400  # the payment's obligation and the partner's share
