"""The saga runner and recovery on the SQL journal (plain and group commit), SQLite and
PostgreSQL, with in-memory ledger and positions."""

from __future__ import annotations

import asyncio
import datetime as dt
from functools import partial

import pytest

from meshlib.errors import FailedPrecondition
from meshlib.money import Amount
from meshlib.storage import Database
from meshlib.storage.migrations import upgrade_to_head
from services.payment.adapters.group_commit import GroupCommitJournal
from services.payment.adapters.sql_journal import SqlPaymentJournal
from services.payment.bootstrap import VERSIONS_DIR
from services.payment.commands import Recovery
from services.payment.domain.payments import Payment, PaymentState
from services.payment.domain.saga import DEFAULT_RESUME_ATTEMPTS, Outcome, RecordedStep, Step, StepRecord
from services.payment.saga import SagaRunner, traced
from services.payment.unit_of_work import PaymentUnitOfWork
from tests.unit.payment.fakes import FakeLedger, FakePositions, Faults

LEASE = dt.timedelta(seconds=30)


class Clock:
    """A clock tests move forward (to let leases expire)."""

    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


class Env:
    """The runner and recovery over a journal; ``run`` drives a stored payment, ``recover`` one pass."""

    def __init__(self, database: Database, *, grouped: bool) -> None:
        self.clock = Clock()
        self.uow = partial(PaymentUnitOfWork, database)
        self.faults = Faults()
        self.ledger, self.positions = FakeLedger(self.faults), FakePositions(self.faults)
        self.writes = 0
        journal = SqlPaymentJournal(self._counting, lease=LEASE, clock=self.clock)
        self.journal = GroupCommitJournal(journal) if grouped else journal
        self.saga = SagaRunner(self.journal, self.ledger, self.positions, clock=self.clock)
        self.recovery = Recovery(self.journal, self.saga)

    def _counting(self, **options):  # type: ignore[no-untyped-def]
        if not options.get("read_only"):
            self.writes += 1
        return self.uow(**options)

    async def run(self, payment_id: str) -> Payment:
        with traced("payment.saga", payment_id):
            return await self.saga.drive(*await self.journal.load(payment_id))

    async def recover(self):  # type: ignore[no-untyped-def]
        return await self.recovery.run_pass()

    async def steps(self, payment_id: str) -> list[tuple[str, str, str]]:
        async with self.uow(read_only=True) as unit:
            return [(s.step.value, s.outcome.value, s.detail) for s in await unit.steps.for_payment(payment_id)]


@pytest.fixture(params=["plain", "group commit"])
async def env(request: pytest.FixtureRequest, database_url: str):  # type: ignore[no-untyped-def]
    database = Database(database_url)
    await upgrade_to_head(database, VERSIONS_DIR, "payment")
    try:
        yield Env(database, grouped=request.param == "group commit")
    finally:
        await database.dispose()


async def _new_payment(env: Env, payment_id: str, *, wallet: bool = True) -> None:
    uow, clock = env.uow, env.clock
    payment = Payment(
        payment_id=payment_id,
        partner_id="p1",
        consent_id="c1",
        debtor_account_id="a1",
        creditor_account_id=None if wallet else "a2",
        creditor_wallet_partner_id="p1" if wallet else None,
        amount=Amount("EUR", 500),
        payment_type="WALLET_TOP_UP" if wallet else "TRANSFER",
        state=PaymentState.RECEIVED,
        created_at=clock(),
        updated_at=clock(),
        creditor_ledger_account_id="w1" if wallet else "a2",
        payer_participant_id="bank" if wallet else "",
        payee_participant_id="wallet-p1" if wallet else "",
    )
    async with uow() as unit:
        await unit.payments.add(payment, lease_until=clock() + LEASE)
        validated = StepRecord(Step.VALIDATE, Outcome.SUCCEEDED)
        await unit.steps.add_many([RecordedStep(payment_id, validated, "0" * 32, clock())])
        await unit.events.add(payment, None, PaymentState.RECEIVED, "", clock())
        await unit.commit()


async def test_the_saga_settles_and_records_every_step(env: Env) -> None:
    await _new_payment(env, "p-ok")
    payment = await env.run("p-ok")
    assert payment.state is PaymentState.SETTLED
    assert (env.ledger.holds["p-ok"], env.positions.obligations["p-ok"]) == ("POSTED", "COMMITTED")
    async with env.uow(read_only=True) as unit:
        events = await unit.events.after("p1", 0, 100)
    assert [e.state.name for e in events] == ["RECEIVED", "ACCEPTED", "SETTLEMENT_IN_PROCESS", "SETTLED"]
    assert [e.seq for e in events] == sorted(e.seq for e in events)


async def test_from_the_hold_to_settled_the_saga_writes_once_and_keeps_the_trail_in_order(env: Env) -> None:
    for payment_id, wallet in (("p-once", True), ("p-once-int", False)):
        await _new_payment(env, payment_id, wallet=wallet)
        env.writes = 0
        assert (await env.run(payment_id)).state is PaymentState.SETTLED
        # The money asked for (RECEIVED -> ACCEPTED), then nothing until the final write, which
        # carries the progress rows and both moves (SETTLEMENT_IN_PROCESS, then SETTLED).
        assert env.writes == 2, payment_id
        async with env.uow(read_only=True) as unit:
            rows = await unit.steps.for_payment(payment_id)
            events = [e for e in await unit.events.after("p1", 0, 100) if e.payment_id == payment_id]
        steps = [(s.step.value, s.outcome.value) for s in rows]
        # No exporter here, so no spans: one random id still correlates the run's steps.
        (trace_id,) = {s.trace_id for s in rows[1:]}
        assert len(trace_id) == 32 and trace_id != "0" * 32
        assert steps == [
            ("validate", "succeeded"),
            ("hold_funds", "started"),
            *([("reserve_position", "started")] if wallet else []),
            ("hold_funds", "succeeded"),
            *([("reserve_position", "succeeded")] if wallet else []),
            ("post_funds", "started"),
            ("post_funds", "succeeded"),
            *([("commit_obligation", "started"), ("commit_obligation", "succeeded")] if wallet else []),
        ], payment_id
        assert [(e.previous_state, e.state) for e in events][-2:] == [
            (PaymentState.ACCEPTED, PaymentState.SETTLEMENT_IN_PROCESS),
            (PaymentState.SETTLEMENT_IN_PROCESS, PaymentState.SETTLED),
        ]


async def test_a_refused_commit_after_the_post_writes_the_progress_and_stays_in_process(env: Env) -> None:
    await _new_payment(env, "p-stuck")
    env.faults.refuse["commit"] = FailedPrecondition("window closed", reason="WINDOW_CLOSED")
    assert (await env.run("p-stuck")).state is PaymentState.SETTLEMENT_IN_PROCESS
    steps = [(step, outcome) for step, outcome, _ in await env.steps("p-stuck")]
    assert steps[-4:] == [
        ("post_funds", "started"),
        ("post_funds", "succeeded"),
        ("commit_obligation", "started"),
        ("commit_obligation", "failed"),
    ]
    assert env.ledger.holds["p-stuck"] == "POSTED"  # the money moved: never undone


async def test_a_refused_reservation_voids_the_hold_and_rejects_with_its_reason(env: Env) -> None:
    await _new_payment(env, "p-cap")
    env.faults.refuse["reserve"] = FailedPrecondition("cap", reason="NET_DEBIT_CAP_EXCEEDED")
    payment = await env.run("p-cap")
    assert (payment.state, payment.status_reason) == (PaymentState.REJECTED, "NET_DEBIT_CAP_EXCEEDED")
    assert env.ledger.holds["p-cap"] == "VOIDED"


async def test_a_post_lost_to_an_outage_is_sent_again_by_recovery_once_the_lease_expires(env: Env) -> None:
    await _new_payment(env, "p-down")
    env.faults.before["post"] = 1
    payment = await env.run("p-down")
    assert payment.state is PaymentState.SETTLEMENT_IN_PROCESS
    result = await env.recover()
    assert result.examined == 0  # the driver's lease is still live: recovery keeps its hands off
    assert env.ledger.holds["p-down"] == "PENDING"
    env.clock.now += LEASE * 2
    result = await env.recover()
    assert (result.examined, result.completed) == (1, 1)
    assert (env.ledger.holds["p-down"], env.positions.obligations["p-down"]) == ("POSTED", "COMMITTED")
    assert ("recover", "started", "ledger hold: sending the steps before the pivot again") in await env.steps("p-down")


async def test_an_outage_longer_than_the_resume_attempts_is_rolled_back(env: Env) -> None:
    """Each pass, a lease apart, sends the post again (its attempt written first); the pass
    after the last attempt rolls the payment back."""
    await _new_payment(env, "p-gone")
    env.faults.before["post"] = 100
    assert (await env.run("p-gone")).state is PaymentState.SETTLEMENT_IN_PROCESS
    for _ in range(DEFAULT_RESUME_ATTEMPTS):
        env.clock.now += LEASE * 2
        assert (await env.recover()).pending == 1
    assert env.faults.before["post"] == 100 - 1 - DEFAULT_RESUME_ATTEMPTS
    env.clock.now += LEASE * 2
    assert (await env.recover()).compensated == 1
    async with env.uow(read_only=True) as unit:
        stored = await unit.payments.get("p-gone")
    assert stored is not None
    assert (stored.state, stored.status_reason) == (PaymentState.REJECTED, "SERVICE_UNAVAILABLE")
    assert (env.ledger.holds["p-gone"], env.positions.obligations["p-gone"]) == ("VOIDED", "RELEASED")


async def test_after_the_post_recovery_only_rolls_forward(env: Env) -> None:
    await _new_payment(env, "p-commit")
    env.faults.before["commit"] = 1
    assert (await env.run("p-commit")).state is PaymentState.SETTLEMENT_IN_PROCESS
    env.clock.now += LEASE * 2
    assert (await env.recover()).completed == 1
    assert (env.ledger.holds["p-commit"], env.positions.obligations["p-commit"]) == ("POSTED", "COMMITTED")
    # A post whose answer was lost: the ledger says POSTED, so recovery settles rather than voids.
    await _new_payment(env, "p-lost")
    env.faults.after["post"] = 1
    assert (await env.run("p-lost")).state is PaymentState.SETTLEMENT_IN_PROCESS
    env.clock.now += LEASE * 2
    assert (await env.recover()).completed == 1
    assert env.positions.obligations["p-lost"] == "COMMITTED"
    assert ("recover", "started", "ledger hold: rolling forward") in await env.steps("p-lost")


async def test_a_transfer_inside_the_bank_needs_no_obligation(env: Env) -> None:
    await _new_payment(env, "p-int", wallet=False)
    assert (await env.run("p-int")).state is PaymentState.SETTLED
    assert "p-int" not in env.positions.obligations


async def test_a_refusal_recorded_before_a_crash_is_the_rejection_reason(env: Env) -> None:
    await _new_payment(env, "p-poor")
    clock = env.clock
    async with env.uow() as unit:  # the state a crash right after a refused hold leaves behind
        await unit.payments.move("p-poor", [PaymentState.RECEIVED], PaymentState.ACCEPTED, clock())
        await unit.payments.request_hold("p-poor", clock())
        refused = StepRecord.failure(Step.HOLD_FUNDS, "INSUFFICIENT_FUNDS", "no")
        await unit.steps.add_many([RecordedStep("p-poor", refused, "0" * 32, clock())])
        await unit.commit()
    clock.now += LEASE * 2
    assert (await env.recover()).compensated == 1
    async with env.uow(read_only=True) as unit:
        stored = await unit.payments.get("p-poor")
    assert stored is not None
    assert (stored.state, stored.status_reason) == (PaymentState.REJECTED, "INSUFFICIENT_FUNDS")
    assert "p-poor" not in env.ledger.holds


async def test_two_replicas_recovering_at_once_finish_each_payment_once(env: Env) -> None:
    """Two payment replicas run their recovery pass over the same stuck payments at the same
    moment: the lease claim gives each payment to one of them, which finishes it; the other
    skips it. Money moves once per payment."""
    ids = [f"pr{index}" for index in range(12)]
    for payment_id in ids:
        await _new_payment(env, payment_id)
    env.clock.now += LEASE + dt.timedelta(seconds=1)  # their drivers died: the leases ran out
    journal = SqlPaymentJournal(env.uow, lease=LEASE, clock=env.clock)
    other = Recovery(journal, SagaRunner(journal, env.ledger, env.positions, clock=env.clock))
    results = await asyncio.gather(env.recover(), other.run_pass())
    assert sum(result.completed for result in results) == len(ids), results
    async with env.uow(read_only=True) as unit:
        states = {p.state for p in (await unit.payments.get_many(ids)).values()}
    assert states == {PaymentState.SETTLED}
    assert env.ledger.posted == 500 * len(ids) and not env.ledger.twice
    assert env.positions.committed == 500 * len(ids)
