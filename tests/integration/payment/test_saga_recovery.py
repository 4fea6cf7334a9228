"""The saga and its recovery against fake downstream ports, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from functools import partial

import pytest

from meshlib.errors import FailedPrecondition, Unavailable
from meshlib.money import Amount
from meshlib.storage import Database
from meshlib.storage.migrations import upgrade_to_head
from services.payment.bootstrap import VERSIONS_DIR
from services.payment.domain.payments import Payment, PaymentState
from services.payment.saga import PaymentSaga
from services.payment.unit_of_work import PaymentUnitOfWork

LEASE = dt.timedelta(seconds=30)


class FakeLedger:
    """Holds by payment id, with scripted failures."""

    def __init__(self) -> None:
        self.holds: dict[str, str] = {}
        self.fail: dict[str, list[Exception]] = {}
        self.calls: list[str] = []

    def _maybe_fail(self, what: str) -> None:
        self.calls.append(what)
        if self.fail.get(what):
            raise self.fail[what].pop(0)

    async def hold(self, payment: Payment) -> str:
        self._maybe_fail("hold")
        self.holds.setdefault(payment.payment_id, "PENDING")
        return f"transfers/{payment.payment_id}-hold"

    async def post(self, payment: Payment) -> None:
        self._maybe_fail("post")
        self.holds[payment.payment_id] = "POSTED"

    async def void(self, payment: Payment) -> None:
        self._maybe_fail("void")
        if self.holds.get(payment.payment_id) == "POSTED":
            raise FailedPrecondition("posted", reason="TRANSFER_ALREADY_POSTED")
        if payment.payment_id in self.holds:
            self.holds[payment.payment_id] = "VOIDED"

    async def hold_state(self, payment: Payment) -> str | None:
        self._maybe_fail("hold_state")
        return self.holds.get(payment.payment_id)


class FakePositions:
    """Obligations by payment id, with scripted failures."""

    def __init__(self) -> None:
        self.obligations: dict[str, str] = {}
        self.fail: dict[str, list[Exception]] = {}

    def _maybe_fail(self, what: str) -> None:
        if self.fail.get(what):
            raise self.fail[what].pop(0)

    async def reserve(self, payment: Payment) -> None:
        self._maybe_fail("reserve")
        self.obligations.setdefault(payment.payment_id, "RESERVED")

    async def commit(self, payment: Payment) -> None:
        self._maybe_fail("commit")
        self.obligations[payment.payment_id] = "COMMITTED"

    async def release(self, payment: Payment) -> None:
        self._maybe_fail("release")
        if payment.payment_id in self.obligations:
            self.obligations[payment.payment_id] = "RELEASED"


class Clock:
    """A clock tests move forward (to let leases expire)."""

    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
async def saga_env(database_url: str):  # type: ignore[no-untyped-def]
    database = Database(database_url)
    await upgrade_to_head(database, VERSIONS_DIR, "payment")
    ledger, positions, clock = FakeLedger(), FakePositions(), Clock()
    uow = partial(PaymentUnitOfWork, database)
    saga = PaymentSaga(uow, ledger, positions, lease=LEASE, clock=clock)
    try:
        yield saga, uow, ledger, positions, clock
    finally:
        await database.dispose()


async def _new_payment(uow, clock: Clock, payment_id: str, *, wallet: bool = True) -> None:  # type: ignore[no-untyped-def]
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
        await unit.events.add(payment, None, PaymentState.RECEIVED, "", clock())
        await unit.commit()


async def test_the_saga_settles_and_records_every_step(saga_env) -> None:  # type: ignore[no-untyped-def]
    saga, uow, ledger, positions, clock = saga_env
    await _new_payment(uow, clock, "p-ok")
    payment = await saga.run("p-ok")
    assert payment.state is PaymentState.SETTLED
    assert (ledger.holds["p-ok"], positions.obligations["p-ok"]) == ("POSTED", "COMMITTED")
    async with uow(read_only=True) as unit:
        events = await unit.events.after("p1", 0, 100)
    assert [e.state.name for e in events] == ["RECEIVED", "ACCEPTED", "SETTLEMENT_IN_PROCESS", "SETTLED"]
    assert [e.seq for e in events] == sorted(e.seq for e in events)


async def test_from_the_hold_to_settled_the_saga_writes_once_and_keeps_the_trail_in_order(saga_env) -> None:  # type: ignore[no-untyped-def]
    _, uow, ledger, positions, clock = saga_env
    writes: list[str] = []

    def counting(**options):  # type: ignore[no-untyped-def]
        if not options.get("read_only"):
            writes.append("write")
        return uow(**options)

    counted = PaymentSaga(counting, ledger, positions, lease=LEASE, clock=clock)
    for payment_id, wallet in (("p-once", True), ("p-once-int", False)):
        await _new_payment(uow, clock, payment_id, wallet=wallet)
        writes.clear()
        assert (await counted.run(payment_id)).state is PaymentState.SETTLED
        # The hold request (RECEIVED -> ACCEPTED), then nothing until the final write, which
        # carries the progress rows and both moves (SETTLEMENT_IN_PROCESS, then SETTLED).
        assert len(writes) == 2, payment_id
        async with uow(read_only=True) as unit:
            rows = await unit.steps.for_payment(payment_id)
            events = [e for e in await unit.events.after("p1", 0, 100) if e.payment_id == payment_id]
        steps = [(s.step, s.outcome) for s in rows]
        # No exporter here, so no spans: one random id still correlates the run's steps.
        (trace_id,) = {s.trace_id for s in rows}
        assert len(trace_id) == 32 and trace_id != "0" * 32
        assert steps == [
            ("hold_funds", "started"),
            *([("reserve_position", "started")] if wallet else []),
            ("hold_funds", "succeeded"),
            ("reserve_position", "succeeded"),
            ("post_funds", "started"),
            ("post_funds", "succeeded"),
            *([("commit_obligation", "started")] if wallet else []),
            ("commit_obligation", "succeeded"),
        ], payment_id
        assert [(e.previous_state, e.state) for e in events][-2:] == [
            (PaymentState.ACCEPTED, PaymentState.SETTLEMENT_IN_PROCESS),
            (PaymentState.SETTLEMENT_IN_PROCESS, PaymentState.SETTLED),
        ]


async def test_a_refused_commit_after_the_post_writes_the_progress_and_stays_in_process(saga_env) -> None:  # type: ignore[no-untyped-def]
    saga, uow, _ledger, positions, clock = saga_env
    await _new_payment(uow, clock, "p-stuck")
    positions.fail["commit"] = [FailedPrecondition("window closed", reason="WINDOW_CLOSED")]
    assert (await saga.run("p-stuck")).state is PaymentState.SETTLEMENT_IN_PROCESS
    async with uow(read_only=True) as unit:
        steps = [(s.step, s.outcome) for s in await unit.steps.for_payment("p-stuck")]
    assert steps[-4:] == [
        ("post_funds", "started"),
        ("post_funds", "succeeded"),
        ("commit_obligation", "started"),
        ("commit_obligation", "failed"),
    ]


async def test_a_refused_reservation_voids_the_hold_and_rejects_with_its_reason(saga_env) -> None:  # type: ignore[no-untyped-def]
    saga, uow, ledger, positions, clock = saga_env
    await _new_payment(uow, clock, "p-cap")
    positions.fail["reserve"] = [FailedPrecondition("cap", reason="NET_DEBIT_CAP_EXCEEDED")]
    payment = await saga.run("p-cap")
    assert (payment.state, payment.status_reason) == (PaymentState.REJECTED, "NET_DEBIT_CAP_EXCEEDED")
    assert ledger.holds["p-cap"] == "VOIDED"


async def test_a_post_lost_to_an_outage_is_rolled_back_by_recovery_once_the_lease_expires(saga_env) -> None:  # type: ignore[no-untyped-def]
    saga, uow, ledger, positions, clock = saga_env
    await _new_payment(uow, clock, "p-down")
    ledger.fail["post"] = [Unavailable("down")]
    payment = await saga.run("p-down")
    assert payment.state is PaymentState.SETTLEMENT_IN_PROCESS
    result = await saga.recover()
    assert result.examined == 0  # the driver's lease is still live: recovery keeps its hands off
    assert ledger.holds["p-down"] == "PENDING"
    clock.now += LEASE * 2
    result = await saga.recover()
    assert (result.examined, result.compensated) == (1, 1)
    async with uow(read_only=True) as unit:
        stored = await unit.payments.get("p-down")
    assert (stored.state, stored.status_reason) == (PaymentState.REJECTED, "SERVICE_UNAVAILABLE")
    assert (ledger.holds["p-down"], positions.obligations["p-down"]) == ("VOIDED", "RELEASED")


async def test_after_the_post_recovery_only_rolls_forward(saga_env) -> None:  # type: ignore[no-untyped-def]
    saga, uow, ledger, positions, clock = saga_env
    await _new_payment(uow, clock, "p-commit")
    positions.fail["commit"] = [Unavailable("down")]
    assert (await saga.run("p-commit")).state is PaymentState.SETTLEMENT_IN_PROCESS
    clock.now += LEASE * 2
    result = await saga.recover()
    assert result.completed == 1
    assert (ledger.holds["p-commit"], positions.obligations["p-commit"]) == ("POSTED", "COMMITTED")
    # A post whose answer was lost: the ledger says POSTED, so recovery settles rather than voids.
    await _new_payment(uow, clock, "p-lost")
    ledger.fail["post"] = [Unavailable("answer lost")]
    assert (await saga.run("p-lost")).state is PaymentState.SETTLEMENT_IN_PROCESS
    ledger.holds["p-lost"] = "POSTED"  # the post did land
    clock.now += LEASE * 2
    assert (await saga.recover()).completed == 1
    assert positions.obligations["p-lost"] == "COMMITTED"
    async with uow(read_only=True) as unit:
        steps = [(s.step, s.outcome, s.detail) for s in await unit.steps.for_payment("p-lost")]
    assert ("recover", "started", "hold posted: rolling forward") in steps


async def test_a_transfer_inside_the_bank_needs_no_obligation(saga_env) -> None:  # type: ignore[no-untyped-def]
    saga, uow, _ledger, positions, clock = saga_env
    await _new_payment(uow, clock, "p-int", wallet=False)
    assert (await saga.run("p-int")).state is PaymentState.SETTLED
    assert "p-int" not in positions.obligations


async def test_a_refusal_recorded_before_a_crash_is_the_rejection_reason(saga_env) -> None:  # type: ignore[no-untyped-def]
    from services.payment.repository import SagaStep

    saga, uow, ledger, _positions, clock = saga_env
    await _new_payment(uow, clock, "p-poor")
    async with uow() as unit:  # the state a crash right after a refused hold leaves behind
        await unit.payments.move("p-poor", [PaymentState.RECEIVED], PaymentState.ACCEPTED, clock())
        await unit.payments.request_hold("p-poor", clock())
        await unit.steps.add(SagaStep("p-poor", "hold_funds", "failed", "INSUFFICIENT_FUNDS: no", "0" * 32, clock()))
        await unit.commit()
    clock.now += LEASE * 2
    assert (await saga.recover()).compensated == 1
    async with uow(read_only=True) as unit:
        stored = await unit.payments.get("p-poor")
    assert (stored.state, stored.status_reason) == (PaymentState.REJECTED, "INSUFFICIENT_FUNDS")
    assert "p-poor" not in ledger.holds
