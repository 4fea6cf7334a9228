"""CreatePayment, the saga and recovery against in-memory fakes: no gRPC, no database.

The property test crashes the process (in memory: what was not written is lost) at any
saga point, any number of times, with peers that lose calls or answers, and checks that
every payment ends SETTLED or REJECTED with the ledger and the positions agreeing.
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshlib.errors import FailedPrecondition
from meshlib.money import Amount
from meshlib.storage import IdempotencyKey
from services.payment.commands import CancelPayment, Recovery
from services.payment.create_payment import CreatePayment, NewPayment
from services.payment.domain.fees import FeeRule, FeeSchedule
from services.payment.domain.payments import PaymentState
from services.payment.domain.saga import DEFAULT_RESUME_ATTEMPTS, Outcome, Step, failpoint_names
from services.payment.fee_charges import FeeCharges
from services.payment.ports import CANCEL_METHOD
from services.payment.saga import SagaRunner
from tests.support.consents import consent_view
from tests.unit.payment.fakes import (
    NOW,
    Crash,
    FakeConsents,
    FakeLedger,
    FakePartners,
    FakePositions,
    Faults,
    InMemoryPayments,
    Journal,
)


class World:
    """The use cases wired on fakes; ``crash_at`` names failpoints that kill the 'process'."""

    def __init__(
        self,
        *,
        funds: int = 1_000_000,
        cap: int = 1_000_000,
        fees: FeeSchedule | None = None,
        wallet_funds: int = 1_000_000,
        wallet_cap: int = 1_000_000,
        resume_attempts: int = DEFAULT_RESUME_ATTEMPTS,
    ) -> None:
        self.faults = Faults()
        self.ledger = FakeLedger(self.faults, funds=funds, wallet_funds=wallet_funds)
        self.positions = FakePositions(self.faults, cap=cap, wallet_cap=wallet_cap)
        self.store = InMemoryPayments()
        self.journal = Journal(self.store)
        self.crash_at: list[str] = []
        self.saga = SagaRunner(
            self.journal,
            self.ledger,
            self.positions,
            failpoint=self._failpoint,
            clock=lambda: NOW,
            resume_attempts=resume_attempts,
        )
        consents = FakeConsents(consent_view(consent_id="c1", partner_id="w1", customer_id="cust1"))
        self.create = CreatePayment(
            consents=consents,
            ledger=self.ledger,
            participants=self.positions,
            partners=FakePartners(),
            register=self.store,
            saga=self.saga,
            fees=FeeCharges(fees, {"EUR": "fee-income-eur"}, self.positions) if fees else None,
            clock=lambda: NOW,
        )
        self.cancel = CancelPayment(consents, self.store, clock=lambda: NOW)
        self.recovery = Recovery(self.journal, self.saga)

    def _failpoint(self, point: str) -> None:
        if self.crash_at and self.crash_at[0] == point:
            self.crash_at.pop(0)
            raise Crash(point)

    async def pay(self, amount: int, request_id: str, *, top_up: bool = True):  # type: ignore[no-untyped-def]
        new = NewPayment(
            request_id=request_id,
            fingerprint=f"fp-{request_id}",
            debtor_account_id="a1",
            creditor_account_id=None if top_up else "a2",
            creditor_wallet_partner_id="w1" if top_up else None,
            amount=Amount("EUR", amount),
            payment_type="WALLET_TOP_UP" if top_up else "TRANSFER",
        )
        return await self.create("w1", "c1", new)

    def trail(self, payment_id: str) -> list[tuple[str, str]]:
        return [(r.step.value, r.outcome.value) for r in self.store.rows[payment_id].records]


async def test_a_top_up_settles_in_one_write_after_the_one_that_created_it() -> None:
    world = World()
    payment = await world.pay(500, "r1")
    assert payment.state is PaymentState.SETTLED
    assert world.store.writes == 2
    assert world.trail(payment.payment_id) == [
        ("validate", "succeeded"),
        ("hold_funds", "started"),
        ("reserve_position", "started"),
        ("hold_funds", "succeeded"),
        ("reserve_position", "succeeded"),
        ("post_funds", "started"),
        ("post_funds", "succeeded"),
        ("commit_obligation", "started"),
        ("commit_obligation", "succeeded"),
    ]
    assert world.store.rows[payment.payment_id].events == [
        (None, PaymentState.RECEIVED),
        (PaymentState.RECEIVED, PaymentState.ACCEPTED),
        (PaymentState.ACCEPTED, PaymentState.SETTLEMENT_IN_PROCESS),
        (PaymentState.SETTLEMENT_IN_PROCESS, PaymentState.SETTLED),
    ]
    assert (world.ledger.holds[payment.payment_id], world.positions.obligations[payment.payment_id]) == (
        "POSTED",
        "COMMITTED",
    )
    replay = await world.pay(500, "r1")
    assert replay.payment_id == payment.payment_id and world.ledger.posted == 500


async def test_a_transfer_inside_the_bank_needs_no_obligation() -> None:
    world = World()
    payment = await world.pay(700, "r1", top_up=False)
    assert payment.state is PaymentState.SETTLED
    assert world.positions.obligations == {}
    assert ("reserve_position", "started") not in world.trail(payment.payment_id)


async def test_a_refused_reservation_voids_the_hold_and_rejects_with_its_reason() -> None:
    world = World(cap=100)
    payment = await world.pay(500, "r1")
    assert (payment.state, payment.status_reason) == (PaymentState.REJECTED, "NET_DEBIT_CAP_EXCEEDED")
    assert world.ledger.holds[payment.payment_id] == "VOIDED"
    assert ("void_funds", "compensated") in world.trail(payment.payment_id)


async def test_a_refused_hold_releases_the_reservation_and_never_posts() -> None:
    world = World(funds=100)
    payment = await world.pay(500, "r1")
    assert (payment.state, payment.status_reason) == (PaymentState.REJECTED, "INSUFFICIENT_FUNDS")
    assert world.positions.obligations[payment.payment_id] == "RELEASED"
    assert "post" not in world.ledger.calls


async def test_a_lost_post_waits_and_recovery_sends_it_again_and_settles() -> None:
    world = World()
    world.faults.before["post"] = 1
    payment = await world.pay(500, "r1")
    assert payment.state is PaymentState.SETTLEMENT_IN_PROCESS
    recovered = await world.recovery.recover_one(payment.payment_id)
    assert recovered is not None and recovered.state is PaymentState.SETTLED
    assert (world.ledger.holds[payment.payment_id], world.positions.obligations[payment.payment_id]) == (
        "POSTED",
        "COMMITTED",
    )
    assert world.ledger.posted == 500 and world.ledger.calls.count("post") == 2


async def test_with_no_resume_attempts_recovery_rolls_back_once_it_finds_the_hold_pending() -> None:
    world = World(resume_attempts=0)
    world.faults.before["post"] = 1
    payment = await world.pay(500, "r1")
    assert payment.state is PaymentState.SETTLEMENT_IN_PROCESS
    recovered = await world.recovery.recover_one(payment.payment_id)
    assert recovered is not None
    assert (recovered.state, recovered.status_reason) == (PaymentState.REJECTED, "SERVICE_UNAVAILABLE")
    assert world.ledger.holds[payment.payment_id] == "VOIDED"
    assert world.positions.obligations[payment.payment_id] == "RELEASED"


@pytest.mark.parametrize("crash", ["after_hold_funds_started", "after_hold_funds", "after_reserve_position"])
async def test_a_crash_before_the_post_is_carried_forward_by_recovery(crash: str) -> None:
    """The process dies with the hold sent or not (its answer never recorded): recovery finds
    the hold pending or missing, sends the steps before the pivot again with the same keys, and
    the payment settles with the money moved once."""
    world = World()
    world.crash_at = [crash]
    with pytest.raises(Crash):
        await world.pay(500, "r1")
    (payment_id,) = world.store.rows
    recovered = await world.recovery.recover_one(payment_id)
    assert recovered is not None and recovered.state is PaymentState.SETTLED
    assert (world.ledger.holds[payment_id], world.positions.obligations[payment_id]) == ("POSTED", "COMMITTED")
    assert (world.ledger.posted, world.positions.committed) == (500, 500)
    details = [r.detail for r in world.store.rows[payment_id].records if r.step is Step.RECOVER]
    assert "ledger hold: sending the steps before the pivot again" in details
    # The partner's retry of the same request finds the payment settled, not a rejection.
    assert (await world.pay(500, "r1")).state is PaymentState.SETTLED


async def test_a_step_refused_when_sent_again_still_rolls_the_payment_back_with_its_reason() -> None:
    world = World()
    world.crash_at = ["after_hold_funds_started"]  # the hold never reached the ledger
    with pytest.raises(Crash):
        await world.pay(500, "r1")
    (payment_id,) = world.store.rows
    world.ledger.funds = 100  # meanwhile the customer spent the money
    recovered = await world.recovery.recover_one(payment_id)
    assert recovered is not None
    assert (recovered.state, recovered.status_reason) == (PaymentState.REJECTED, "INSUFFICIENT_FUNDS")
    assert payment_id not in world.ledger.holds
    assert world.positions.obligations[payment_id] == "RELEASED"


async def test_a_peer_unavailable_past_the_resume_attempts_rolls_the_payment_back() -> None:
    world = World(resume_attempts=3)
    world.faults.before["reserve"] = 100  # settlement is down for good
    payment = await world.pay(500, "r1")
    assert payment.state is PaymentState.ACCEPTED
    for attempt in range(3):  # each pass sends the reservation again, in vain
        recovered = await world.recovery.recover_one(payment.payment_id)
        assert recovered is not None and recovered.state is PaymentState.ACCEPTED, attempt
    assert world.faults.before["reserve"] == 100 - 4  # the live call and three passes
    world.faults.before["reserve"] = 0  # back, but too late: this pass is past the bound
    recovered = await world.recovery.recover_one(payment.payment_id)
    assert recovered is not None
    assert (recovered.state, recovered.status_reason) == (PaymentState.REJECTED, "SERVICE_UNAVAILABLE")
    assert world.ledger.holds[payment.payment_id] == "VOIDED"
    assert world.positions.obligations.get(payment.payment_id) in (None, "RELEASED")


async def test_a_hold_that_expired_is_rolled_back_not_made_again() -> None:
    world = World()
    world.faults.before["post"] = 1
    payment = await world.pay(500, "r1")
    world.ledger.holds[payment.payment_id] = "EXPIRED"  # left longer than its timeout
    recovered = await world.recovery.recover_one(payment.payment_id)
    assert recovered is not None
    assert (recovered.state, recovered.status_reason) == (PaymentState.REJECTED, "SERVICE_UNAVAILABLE")
    assert world.ledger.calls.count("hold") == 1 and world.ledger.posted == 0


async def test_a_post_whose_answer_was_lost_is_found_posted_and_settles() -> None:
    world = World()
    world.faults.after["post"] = 1
    payment = await world.pay(500, "r1")
    assert payment.state is PaymentState.SETTLEMENT_IN_PROCESS
    recovered = await world.recovery.recover_one(payment.payment_id)
    assert recovered is not None and recovered.state is PaymentState.SETTLED
    assert ("recover", "started") in world.trail(payment.payment_id)


async def test_a_refused_commit_after_the_post_stays_in_process_and_is_retried_by_recovery() -> None:
    world = World()
    world.faults.before["commit"] = 1
    payment = await world.pay(500, "r1")
    assert payment.state is PaymentState.SETTLEMENT_IN_PROCESS
    assert world.ledger.holds[payment.payment_id] == "POSTED"
    recovered = await world.recovery.recover_one(payment.payment_id)
    assert recovered is not None and recovered.state is PaymentState.SETTLED


async def test_cancel_wins_only_before_the_money_is_asked_for() -> None:
    world = World()
    payment = await world.pay(500, "r1")
    with pytest.raises(FailedPrecondition) as refused:
        await world.cancel("w1", "c1", payment.payment_id, IdempotencyKey("w1", CANCEL_METHOD, "k1", "f"))
    assert refused.value.reason == "PAYMENT_NOT_CANCELLABLE"
    # A payment recorded but never started (its driver lost before asking for money).
    row = world.store.rows[payment.payment_id]
    row.payment = row.payment.__class__(**{**row.payment.__dict__, "state": PaymentState.RECEIVED})
    row.funds_requested = False
    cancelled = await world.cancel("w1", "c1", payment.payment_id, IdempotencyKey("w1", CANCEL_METHOD, "k2", "f"))
    assert cancelled.state is PaymentState.CANCELLED
    assert await world.recovery.recover_one(payment.payment_id) is None


async def test_a_payment_recorded_but_never_started_is_run_forward_by_recovery() -> None:
    world = World()
    world.crash_at = ["after_hold_funds_started"]
    with pytest.raises(Crash):
        await world.pay(500, "r1")
    (payment_id,) = world.store.rows
    row = world.store.rows[payment_id]
    # As if created by a version that wrote the payment before asking for money.
    row.payment = row.payment.__class__(**{**row.payment.__dict__, "state": PaymentState.RECEIVED})
    row.records = [r for r in row.records if r.step is Step.VALIDATE]
    row.funds_requested = False
    recovered = await world.recovery.recover_one(payment_id)
    assert recovered is not None and recovered.state is PaymentState.SETTLED
    assert any(r.step is Step.HOLD_FUNDS and r.outcome is Outcome.STARTED for r in row.records)


# 1 + 1 % of the amount, half-up: 500 -> 6.
FEES = FeeSchedule(default={"WALLET_TOP_UP": FeeRule(1, 100), "TRANSFER": FeeRule(1, 100)})


async def test_a_top_up_with_a_fee_holds_posts_and_commits_the_fee_with_the_payment() -> None:
    world = World(fees=FEES)
    payment = await world.pay(500, "r1")
    pid = payment.payment_id
    assert (payment.state, payment.fee_minor) == (PaymentState.SETTLED, 6)
    assert (payment.fee_debit_account_id, payment.fee_credit_account_id) == ("wallet-account-w1", "fee-income-eur")
    assert (payment.fee_payer_participant_id, payment.fee_payee_participant_id) == ("wallet-w1", "bank")
    assert world.ledger.holds == {pid: "POSTED", f"{pid}-fee": "POSTED"}
    assert world.positions.obligations == {pid: "COMMITTED", f"{pid}-fee": "COMMITTED"}
    assert (world.ledger.posted, world.ledger.fees_posted, world.positions.fees_committed) == (500, 6, 6)
    assert world.store.writes == 2  # the fee costs no journal write


async def test_a_transfer_inside_the_bank_with_a_fee_settles_only_the_fee() -> None:
    world = World(fees=FEES)
    payment = await world.pay(700, "r1", top_up=False)
    pid = payment.payment_id
    assert (payment.state, payment.fee_minor) == (PaymentState.SETTLED, 8)
    assert world.positions.obligations == {f"{pid}-fee": "COMMITTED"}
    assert world.ledger.holds == {pid: "POSTED", f"{pid}-fee": "POSTED"}


async def test_a_fee_the_wallet_cannot_cover_rejects_the_payment_with_nothing_moved() -> None:
    world = World(fees=FEES, wallet_funds=5)
    payment = await world.pay(500, "r1")
    assert (payment.state, payment.status_reason) == (PaymentState.REJECTED, "INSUFFICIENT_FUNDS")
    assert world.ledger.holds == {} and world.ledger.posted == world.ledger.fees_posted == 0
    assert set(world.positions.obligations.values()) <= {"RELEASED"}


async def test_a_refused_fee_reservation_voids_both_holds_and_releases_the_payments_reservation() -> None:
    world = World(fees=FEES, wallet_cap=5)
    payment = await world.pay(500, "r1")
    pid = payment.payment_id
    assert (payment.state, payment.status_reason) == (PaymentState.REJECTED, "NET_DEBIT_CAP_EXCEEDED")
    assert world.ledger.holds == {pid: "VOIDED", f"{pid}-fee": "VOIDED"}
    assert world.positions.obligations == {pid: "RELEASED"}


async def test_recovery_reuses_the_stored_fee_and_never_asks_the_schedule_again() -> None:
    world = World(fees=FEES)
    world.faults.before["post"] = 1
    payment = await world.pay(500, "r1")
    assert payment.state is PaymentState.SETTLEMENT_IN_PROCESS
    world.create._fees = FeeCharges(FeeSchedule(), {}, world.positions)  # the schedule changed meanwhile
    world.store.rows[payment.payment_id].payment = dataclasses.replace(payment)  # stored as created
    recovered = await world.recovery.recover_one(payment.payment_id)
    assert recovered is not None and recovered.fee_minor == 6
    assert recovered.state is PaymentState.SETTLED
    assert world.ledger.holds[f"{payment.payment_id}-fee"] == "POSTED"
    assert (world.ledger.fees_posted, world.positions.fees_committed) == (6, 6)


def test_an_unknown_failpoint_is_refused() -> None:
    from services.payment.saga import exit_at_failpoint

    with pytest.raises(ValueError, match="unknown failpoint"):
        exit_at_failpoint("after_hold")
    exit_at_failpoint("after_post_funds")


POINTS = sorted(failpoint_names())
CALLS = [
    "hold",
    "reserve",
    "post",
    "commit",
    "void",
    "release",
    "hold_state",
    "reserve_fee",
    "commit_fee",
    "release_fee",
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    crashes=st.lists(st.sampled_from(POINTS), max_size=6),
    lost_before=st.dictionaries(st.sampled_from(CALLS), st.integers(1, 2), max_size=3),
    lost_after=st.dictionaries(st.sampled_from(CALLS), st.integers(1, 2), max_size=3),
    amounts=st.lists(st.integers(1, 400), min_size=1, max_size=3),
    cap=st.sampled_from([250, 1_000_000]),
    funds=st.sampled_from([300, 1_000_000]),
    top_up=st.booleans(),
    fees=st.booleans(),
    wallet_funds=st.sampled_from([10, 1_000_000]),
    wallet_cap=st.sampled_from([10, 1_000_000]),
)
def test_any_crashes_and_restarts_end_settled_or_rejected_with_money_moved_once(
    crashes: list[str],
    lost_before: dict[str, int],
    lost_after: dict[str, int],
    amounts: list[int],
    cap: int,
    funds: int,
    top_up: bool,
    fees: bool,
    wallet_funds: int,
    wallet_cap: int,
) -> None:
    async def scenario() -> None:
        world = World(
            funds=funds, cap=cap, fees=FEES if fees else None, wallet_funds=wallet_funds, wallet_cap=wallet_cap
        )
        world.crash_at = list(crashes)
        world.faults.before.update(lost_before)
        world.faults.after.update(lost_after)
        for index, amount in enumerate(amounts):
            try:
                await world.pay(amount, f"r{index}", top_up=top_up)
            except Crash:
                pass
            # The process restarts: recovery passes (which may crash again) until all is final.
            for _ in range(20):
                try:
                    await world.recovery.run_pass()
                except Crash:
                    continue
                if all(row.payment.state.final for row in world.store.rows.values()):
                    break
        rows = world.store.rows.values()
        assert all(row.payment.state.final for row in rows), [row.payment.state for row in rows]
        settled = settled_fees = 0
        for row in rows:
            payment_id, state = row.payment.payment_id, row.payment.state
            hold = world.ledger.holds.get(payment_id)
            obligation = world.positions.obligations.get(payment_id)
            fee_hold = world.ledger.holds.get(f"{payment_id}-fee")
            fee_obligation = world.positions.obligations.get(f"{payment_id}-fee")
            assert row.payment.has_fee is fees
            # The fee's hold is created, posted and voided with the payment's, never apart.
            assert fee_hold == (hold if fees else None)
            if state is PaymentState.SETTLED:
                assert hold == "POSTED"
                assert obligation == ("COMMITTED" if top_up else None)
                assert fee_obligation == ("COMMITTED" if fees else None)
                settled += row.payment.amount.minor_units
                settled_fees += row.payment.fee_minor
            else:
                assert state is PaymentState.REJECTED and row.payment.status_reason
                assert hold in (None, "VOIDED") and obligation in (None, "RELEASED")
                assert fee_obligation in (None, "RELEASED")
        assert world.ledger.posted == settled
        assert world.positions.committed == (settled if top_up else 0)
        assert world.ledger.fees_posted == world.positions.fees_committed == settled_fees

    asyncio.run(scenario())
