"""Payments to other banks on fakes: the plan through the clearing scheme, the status poller, the
returns consumer, and the crash property (every payment final, money moved once, nothing
cleared that is not settled here)."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshlib.iban import make_iban
from meshlib.money import Amount
from services.payment.adapters.clearing import ClearingStatus
from services.payment.clearing_loops import ClearingStatusPoller, SchemeReturns
from services.payment.commands import Recovery
from services.payment.create_payment import CreatePayment, NewPayment
from services.payment.domain.clearing import MAX_SUBMISSIONS
from services.payment.domain.payments import ExternalCreditor, PaymentState
from services.payment.domain.saga import failpoint_names
from services.payment.refund_payment import RefundPayment
from services.payment.saga import SagaRunner
from services.payment.scheme_steps import SchemeSteps
from tests.support.consents import consent_view
from tests.unit.payment.clearing_fake import Answer, Behaviour, FakeClearingConnector
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

GOOD = make_iban("DE", "370400440532013000")


class Feeds:
    """ClearingFeeds in memory (one holder at a time)."""

    def __init__(self) -> None:
        self.cursors: dict[str, str] = {}
        self.holder: str | None = None

    async def claim(self, feed: str, holder: str, lease: dt.timedelta) -> bool:
        if self.holder not in (None, holder):
            return False
        self.holder = holder
        return True

    async def cursor(self, feed: str) -> str:
        return self.cursors.get(feed, "")

    async def save(self, feed: str, holder: str, cursor: str) -> bool:
        self.cursors[feed] = cursor
        return True

    async def release(self, feed: str, holder: str) -> None:
        self.holder = None


class World:
    def __init__(self, *, funds: int = 1_000_000) -> None:
        self.faults = Faults()
        self.ledger = FakeLedger(self.faults, funds=funds)
        self.positions = FakePositions(self.faults)
        self.scheme = FakeClearingConnector()
        self.store = InMemoryPayments()
        self.journal = Journal(self.store)
        self.crash_at: list[str] = []
        self.saga = SagaRunner(
            self.journal,
            self.ledger,
            self.positions,
            failpoint=self._failpoint,
            clock=lambda: NOW,
            scheme=SchemeSteps(self.scheme, "OBMEDEFFXXX"),
        )
        self.create = CreatePayment(
            consents=FakeConsents(consent_view(consent_id="c1", partner_id="w1", customer_id="cust1")),
            ledger=self.ledger,
            participants=self.positions,
            partners=FakePartners(),
            register=self.store,
            saga=self.saga,
            clock=lambda: NOW,
        )
        self.recovery = Recovery(self.journal, self.saga)
        self.poller = ClearingStatusPoller(self.journal, self.recovery)
        self.feeds = Feeds()
        self.returns = SchemeReturns(
            self.scheme, self.feeds, RefundPayment(register=self.store, saga=self.saga), self.recovery, self.journal
        )

    def _failpoint(self, point: str) -> None:
        if self.crash_at and self.crash_at[0] == point:
            self.crash_at.pop(0)
            raise Crash(point)

    async def pay(self, amount: int, request_id: str = "r1", iban: str = GOOD):  # type: ignore[no-untyped-def]
        new = NewPayment(
            request_id=request_id,
            fingerprint=f"fp-{request_id}",
            debtor_account_id="a1",
            creditor_account_id=None,
            creditor_wallet_partner_id=None,
            amount=Amount("EUR", amount),
            payment_type="EXTERNAL_TRANSFER",
            external_creditor=ExternalCreditor(iban, "IBAN", "Erika Mustermann", "COBADEFFXXX"),
        )
        return await self.create("w1", "c1", new)


async def test_settled_by_the_scheme_posts_to_the_clearing_account_and_commits_against_the_scheme() -> None:
    world = World()
    payment = await world.pay(500)
    assert payment.state is PaymentState.SETTLED
    assert payment.creditor_ledger_account_id == "scheme-clearing"
    assert (payment.payer_participant_id, payment.payee_participant_id) == ("bank", "scheme")
    assert world.ledger.holds[payment.payment_id] == "POSTED"
    assert world.positions.obligations[payment.payment_id] == "COMMITTED"
    assert world.scheme.submissions == [payment.payment_id]


async def test_rejected_by_the_creditor_bank_voids_and_releases_with_the_mapped_reason() -> None:
    world = World()
    world.scheme.script(GOOD, Behaviour.reject("AC04"))
    payment = await world.pay(500)
    assert (payment.state, payment.status_reason) == (PaymentState.REJECTED, "CREDITOR_ACCOUNT_CLOSED")
    assert payment.status_reason_message.startswith("AC04")
    assert world.ledger.holds[payment.payment_id] == "VOIDED"
    assert world.positions.obligations[payment.payment_id] == "RELEASED"
    assert world.ledger.posted == 0


async def test_pending_at_the_scheme_waits_parked_then_the_poller_settles_it() -> None:
    world = World()
    world.scheme.script(GOOD, Behaviour.accept())
    payment = await world.pay(500)
    assert payment.state is PaymentState.SETTLEMENT_IN_PROCESS
    assert payment.payment_id in world.store.parked
    assert await world.poller.run_pass() == 0  # still pending: nothing moves
    assert world.ledger.holds[payment.payment_id] == "PENDING"
    world.scheme.settle(payment.payment_id)
    assert await world.poller.run_pass() == 1
    assert world.store.rows[payment.payment_id].payment.state is PaymentState.SETTLED
    assert world.positions.obligations[payment.payment_id] == "COMMITTED"


async def test_a_transfer_long_in_settlement_is_asked_less_and_less_often() -> None:
    world = World()
    world.scheme.script(GOOD, Behaviour.accept())
    payment = await world.pay(500)
    delays = [world.store.parked[payment.payment_id]]
    for _ in range(8):
        await world.poller.run_pass()
        delays.append(world.store.parked[payment.payment_id])
    seconds = [delay.total_seconds() for delay in delays]
    assert seconds == [5, 10, 20, 40, 80, 160, 160, 160, 160]  # 5 s doubling, at most 32 x 5 s


async def test_accepted_then_rejected_is_undone() -> None:
    world = World()
    world.scheme.script(GOOD, Behaviour.accept())
    payment = await world.pay(500)
    world.scheme.reject(payment.payment_id, "AB05")
    await world.poller.run_pass()
    stored = world.store.rows[payment.payment_id].payment
    assert (stored.state, stored.status_reason) == (PaymentState.REJECTED, "CREDITOR_BANK_REJECTED")
    assert world.ledger.holds[payment.payment_id] == "VOIDED"


async def test_a_lost_acknowledgement_is_recovered_by_status_without_a_second_clearing() -> None:
    world = World()
    world.scheme.script(GOOD, Behaviour.settle(answer=Answer.LOST_ACKNOWLEDGEMENT))
    payment = await world.pay(500)
    assert payment.state is PaymentState.ACCEPTED
    await world.poller.run_pass()
    assert world.store.rows[payment.payment_id].payment.state is PaymentState.SETTLED
    assert world.scheme.submissions == [payment.payment_id]  # asked, not sent again


async def test_never_received_is_sent_again_with_the_same_message_id() -> None:
    world = World()
    world.scheme.script(GOOD, Behaviour.settle(answer=Answer.LOST_REQUEST))
    payment = await world.pay(500)
    await world.poller.run_pass()
    assert world.store.rows[payment.payment_id].payment.state is PaymentState.SETTLED
    assert world.scheme.submissions == [payment.payment_id, payment.payment_id]


async def test_a_scheme_that_never_receives_it_is_given_up_after_the_stated_number_of_sends() -> None:
    world = World()
    world.scheme.down = True
    payment = await world.pay(500)
    world.scheme.down = False
    world.scheme.script(GOOD, Behaviour.settle(answer=Answer.LOST_REQUEST))
    world.scheme._dropped.add(payment.payment_id)
    original_submit = world.scheme.submit

    async def always_lost(transfer):  # type: ignore[no-untyped-def]
        world.scheme.submissions.append(transfer.message_id)
        from services.payment.adapters.clearing import ClearingOutcomeUnknown

        raise ClearingOutcomeUnknown("lost")

    world.scheme.submit = always_lost  # type: ignore[method-assign]
    for _ in range(MAX_SUBMISSIONS + 1):
        await world.poller.run_pass()
    world.scheme.submit = original_submit  # type: ignore[method-assign]
    stored = world.store.rows[payment.payment_id].payment
    assert (stored.state, stored.status_reason) == (PaymentState.REJECTED, "CLEARING_NOT_RECEIVED")
    assert len(world.scheme.submissions) == MAX_SUBMISSIONS
    assert world.ledger.holds[payment.payment_id] == "VOIDED"


@pytest.mark.parametrize(
    "crash", ["after_hold_funds_started", "after_hold_funds", "after_reserve_position", "after_submit_transfer_started"]
)
async def test_a_crash_before_the_scheme_has_it_is_carried_forward_by_recovery(crash: str) -> None:
    """The process dies before or as the transfer goes to the scheme: recovery sends what was not
    answered again with the same keys (the scheme's message id included), the scheme clears it
    once and the payment settles, instead of being rolled back for the customer to pay again."""
    world = World()
    world.crash_at = [crash]
    with pytest.raises(Crash):
        await world.pay(500)
    (payment_id,) = world.store.rows
    await world.recovery.run_pass()
    stored = world.store.rows[payment_id].payment
    assert stored.state is PaymentState.SETTLED, world.store.rows[payment_id].records
    assert (world.ledger.holds[payment_id], world.positions.obligations[payment_id]) == ("POSTED", "COMMITTED")
    assert world.scheme.submissions.count(payment_id) == 1 and world.ledger.posted == 500


async def test_a_hold_that_expired_while_nothing_reached_the_scheme_is_rolled_back_not_made_again() -> None:
    world = World()
    world.crash_at = ["after_reserve_position"]
    with pytest.raises(Crash):
        await world.pay(500)
    (payment_id,) = world.store.rows
    world.ledger.holds[payment_id] = "EXPIRED"  # the outage outlasted the hold
    await world.recovery.run_pass()
    stored = world.store.rows[payment_id].payment
    assert (stored.state, stored.status_reason) == (PaymentState.REJECTED, "SERVICE_UNAVAILABLE")
    assert world.scheme.submissions == [] and world.positions.obligations[payment_id] == "RELEASED"
    assert world.ledger.calls.count("hold") == 1  # never asked for the money a second time


async def test_a_return_is_credited_back_once_as_a_refund_of_the_original() -> None:
    world = World()
    world.scheme.script(GOOD, Behaviour.settle_then_return("MD07"))
    payment = await world.pay(500)
    assert payment.state is PaymentState.SETTLED
    first = await world.returns.run_pass()
    again = await world.returns.run_pass()
    assert (first.credited, again.credited) == (1, 0)
    refunds = [row.payment for row in world.store.rows.values() if row.payment.is_refund]
    assert len(refunds) == 1
    refund = refunds[0]
    assert (refund.original_payment_id, refund.return_reason, refund.state) == (
        payment.payment_id,
        "MD07",
        PaymentState.SETTLED,
    )
    assert refund.amount == payment.amount
    assert (refund.payer_participant_id, refund.payee_participant_id) == ("scheme", "bank")
    assert refund.creditor_ledger_account_id == "a1"  # back to the debtor
    assert world.feeds.cursors["returns"] == "1"


async def test_a_return_of_a_payment_not_yet_settled_here_waits_for_it() -> None:
    world = World()
    world.scheme.script(GOOD, Behaviour.settle(answer=Answer.LOST_ACKNOWLEDGEMENT))
    payment = await world.pay(500)
    world.scheme.return_payment(payment.payment_id, "AC04")
    result = await world.returns.run_pass()  # drives the original first (status: settled)
    assert result.credited == 1
    assert world.store.rows[payment.payment_id].payment.state is PaymentState.SETTLED


POINTS = sorted(name for name in failpoint_names() if "fee" not in name)
BEHAVIOURS = [
    Behaviour.settle(),
    Behaviour.accept(),
    Behaviour.reject("AM04"),
    Behaviour.settle(answer=Answer.LOST_ACKNOWLEDGEMENT),
    Behaviour.settle(answer=Answer.LOST_REQUEST),
    Behaviour.reject("AC06", answer=Answer.LOST_ACKNOWLEDGEMENT),
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    crashes=st.lists(st.sampled_from(POINTS), max_size=5),
    lost_before=st.dictionaries(st.sampled_from(["hold", "reserve", "post", "commit", "void"]), st.integers(1, 2)),
    behaviours=st.lists(st.sampled_from(BEHAVIOURS), min_size=1, max_size=3),
    funds=st.sampled_from([300, 1_000_000]),
)
def test_any_crashes_end_final_with_money_moved_once_and_cleared_only_if_settled(
    crashes: list[str], lost_before: dict[str, int], behaviours: list[Behaviour], funds: int
) -> None:
    async def scenario() -> None:
        world = World(funds=funds)
        world.crash_at = list(crashes)
        world.faults.before.update(lost_before)
        for index, behaviour in enumerate(behaviours):
            iban = make_iban("DE", f"3704004400000001{index:02d}")
            world.scheme.script(iban, behaviour)
            try:
                await world.pay(100 + index, f"r{index}", iban)
            except Crash:
                pass
        for turn in range(30):
            if turn >= 3:  # from then on the scheme settles what it holds pending
                for message_id in list(world.scheme._held):
                    if world.scheme.report(message_id).status is ClearingStatus.ACCEPTED:
                        world.scheme.settle(message_id)
            try:
                await world.recovery.run_pass()
            except Crash:
                continue
            if all(row.payment.state.final for row in world.store.rows.values()):
                break
        settled = 0
        for row in world.store.rows.values():
            payment = row.payment
            assert payment.state.final, (payment.state, row.records)
            cleared = payment.payment_id in world.scheme._held and (
                world.scheme.report(payment.payment_id).status is ClearingStatus.SETTLED
            )
            hold = world.ledger.holds.get(payment.payment_id)
            obligation = world.positions.obligations.get(payment.payment_id)
            if payment.state is PaymentState.SETTLED:
                assert cleared and hold == "POSTED" and obligation == "COMMITTED"
                settled += payment.amount.minor_units
            else:
                # Never settled at the scheme while rejected here; nothing held or owed.
                assert not cleared and payment.status_reason
                assert hold in (None, "VOIDED") and obligation in (None, "RELEASED")
        assert world.ledger.posted == world.positions.committed == settled

    asyncio.run(scenario())
