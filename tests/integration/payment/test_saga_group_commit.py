"""The saga's success-path writes of payments in flight share one transaction (group commit),
with exactly the rows one transaction per payment wrote; one bad write fails only its payment."""

from __future__ import annotations

import asyncio
import datetime as dt

import sqlalchemy as sa

from meshlib.storage import Database
from services.payment.adapters.group_commit import GroupCommitJournal
from services.payment.adapters.sql_journal import SqlPaymentJournal
from services.payment.domain.payments import Payment, PaymentState
from services.payment.domain.saga import Outcome, Step, StepRecord
from services.payment.ports import JournalEntry, Move
from services.payment.tables import payment_events, payment_steps, payments
from services.payment.unit_of_work import PaymentUnitOfWork
from tests.integration.payment.samples import LEASE, NOW, CountingUnitsOfWork, sample_payment

HOLD, POST = Step.HOLD_FUNDS.value, Step.POST_FUNDS.value
PROGRESS = (StepRecord(Step.HOLD_FUNDS, Outcome.SUCCEEDED), StepRecord(Step.POST_FUNDS, Outcome.STARTED))
MOVE = Move(PaymentState.ACCEPTED, PaymentState.SETTLEMENT_IN_PROCESS)


def _payment(payment_id: str) -> Payment:
    return sample_payment(payment_id, payment_type="TRANSFER", state=PaymentState.ACCEPTED)


async def _seed(database: Database, ids: list[str]) -> None:
    async with PaymentUnitOfWork(database) as uow:
        for payment_id in ids:
            await uow.payments.add(_payment(payment_id), lease_until=NOW)
        await uow.commit()


def _journal(units: CountingUnitsOfWork) -> GroupCommitJournal:
    return GroupCommitJournal(SqlPaymentJournal(units, lease=LEASE, clock=lambda: NOW))


def _write(journal: GroupCommitJournal, payment_id: str, records=PROGRESS, move: Move | None = MOVE):  # type: ignore[no-untyped-def]
    return journal.record(JournalEntry(payment_id, tuple(records), (move,) if move else ()))


async def test_concurrent_saga_writes_share_one_transaction_and_write_every_row(database: Database) -> None:
    ids = [f"pay{i:02d}" for i in range(12)]
    await _seed(database, ids)
    units = CountingUnitsOfWork(database)
    journal = _journal(units)
    stored = await asyncio.gather(*(_write(journal, i) for i in ids))
    assert units.writes == 1
    assert [p.payment_id for p in stored if p is not None] == ids
    assert {p.state for p in stored if p is not None} == {PaymentState.SETTLEMENT_IN_PROCESS}
    async with database.engine.connect() as connection:
        steps = (await connection.execute(sa.select(payment_steps.c.payment_id, payment_steps.c.step))).all()
        events = (await connection.execute(sa.select(payment_events).order_by(payment_events.c.seq))).all()
        leases = (await connection.execute(sa.select(payments.c.lease_until))).scalars().all()
    assert sorted(steps) == sorted((i, step) for i in ids for step in (HOLD, POST))
    assert [(e.payment_id, e.previous_state, e.state) for e in events] == [
        (i, "ACCEPTED", "SETTLEMENT_IN_PROCESS") for i in ids
    ]
    assert all(lease is not None and lease.replace(tzinfo=dt.UTC) == NOW + LEASE for lease in leases)


async def test_every_write_of_a_group_renews_its_lease_whether_it_moved_or_not(database: Database) -> None:
    ids = ["moves", "records-only", "moved-before"]
    await _seed(database, ids)
    async with PaymentUnitOfWork(database) as uow:  # past the move's from-state, lease left as it was
        assert await uow.payments.move_many(["moved-before"], [MOVE.from_state], MOVE.to_state, NOW) == {"moved-before"}
        await uow.commit()
    units = CountingUnitsOfWork(database)
    journal = _journal(units)
    await asyncio.gather(
        _write(journal, "moves"),
        _write(journal, "records-only", move=None),
        _write(journal, "moved-before"),
    )
    assert units.writes == 1
    async with database.engine.connect() as connection:
        rows = (await connection.execute(sa.select(payments.c.payment_id, payments.c.lease_until))).all()
        events = (await connection.execute(sa.select(payment_events.c.payment_id, payment_events.c.state))).all()
    assert {payment_id: lease.replace(tzinfo=dt.UTC) for payment_id, lease in rows} == dict.fromkeys(ids, NOW + LEASE)
    assert events == [("moves", "SETTLEMENT_IN_PROCESS")]  # the other was past its from-state: no move


async def test_a_write_for_an_unknown_payment_fails_alone_and_writes_nothing(database: Database) -> None:
    ids = ["good1", "good2", "good3"]
    await _seed(database, ids)
    units = CountingUnitsOfWork(database)
    journal = _journal(units)
    outcomes = await asyncio.gather(*(_write(journal, i) for i in [*ids, "missing"]), return_exceptions=True)
    assert isinstance(outcomes[3], Exception)
    assert [p.state for p in outcomes[:3]] == [PaymentState.SETTLEMENT_IN_PROCESS] * 3  # type: ignore[union-attr]
    assert units.writes == 1
    async with database.engine.connect() as connection:
        steps = (await connection.execute(sa.select(sa.func.count()).select_from(payment_steps))).scalar_one()
    assert steps == 2 * len(ids)


async def test_a_moved_payment_is_not_moved_twice(database: Database) -> None:
    await _seed(database, ["once"])
    journal = _journal(CountingUnitsOfWork(database))
    first, second = await asyncio.gather(
        _write(journal, "once"),
        _write(journal, "once", records=()),
    )
    assert first is not None and second is not None
    async with database.engine.connect() as connection:
        events = (await connection.execute(sa.select(sa.func.count()).select_from(payment_events))).scalar_one()
    assert events == 1


async def test_when_the_shared_transaction_fails_each_write_is_committed_alone(database: Database) -> None:
    ids = ["ok1", "ok2", "ok3"]
    await _seed(database, ids)
    units = CountingUnitsOfWork(database)
    journal = _journal(units)
    # One write that fails mid-transaction (its target is not a state), after others were written.
    bad = Move(PaymentState.ACCEPTED, "NOT_A_STATE")  # type: ignore[arg-type]
    outcomes = await asyncio.gather(
        _write(journal, "ok1"),
        _write(journal, "ok2", move=bad),  # type: ignore[arg-type]
        _write(journal, "ok3"),
        return_exceptions=True,
    )
    assert isinstance(outcomes[1], Exception)
    assert [outcomes[0].state, outcomes[2].state] == [PaymentState.SETTLEMENT_IN_PROCESS] * 2  # type: ignore[union-attr]
    assert units.writes == 1 + 3  # the shared attempt, then one each
    async with database.engine.connect() as connection:
        steps = (await connection.execute(sa.select(payment_steps.c.payment_id))).scalars().all()
    assert sorted(steps) == ["ok1", "ok1", "ok3", "ok3"]  # the failed shared attempt left nothing
