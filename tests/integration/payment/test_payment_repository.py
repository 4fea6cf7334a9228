"""Payment repositories on SQLite and PostgreSQL: the prebuilt statements answer exactly what
the per-call statements they replaced answered (those are kept here as the reference)."""

from __future__ import annotations

import datetime as dt
import itertools
import re
from collections import Counter
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from meshlib.errors import AlreadyExists
from meshlib.money import Amount
from meshlib.storage import Database, as_utc
from meshlib.storage.migrations import upgrade_to_head
from services.payment.bootstrap import VERSIONS_DIR
from services.payment.domain.checks import CustomerHistory
from services.payment.domain.payments import Payment, PaymentState
from services.payment.domain.saga import Outcome, RecordedStep, Step, StepRecord
from services.payment.repository import NOT_COUNTED
from services.payment.tables import payments
from services.payment.unit_of_work import PaymentUnitOfWork
from tests.integration.payment.samples import LEASE, NOW, sample_payment

# The statements as they were built per call before, as the reference answers.


async def _reference_spent(
    connection: AsyncConnection, column: str, value: str, currency: str, since: dt.datetime
) -> int:
    total = await connection.scalar(
        sa.select(sa.func.coalesce(sa.func.sum(payments.c.amount_minor), 0)).where(
            payments.c[column] == value,
            payments.c.currency == currency,
            payments.c.created_at >= since,
            payments.c.state.not_in(NOT_COUNTED),
        )
    )
    return int(total or 0)


async def _reference_history(
    connection: AsyncConnection, customer_id: str, beneficiary: Payment, windows: set[int], now: dt.datetime
) -> CustomerHistory:
    counts = {}
    for seconds in windows:
        counts[seconds] = int(
            await connection.scalar(
                sa.select(sa.func.count()).where(
                    payments.c.customer_id == customer_id,
                    payments.c.created_at >= now - dt.timedelta(seconds=seconds),
                )
            )
            or 0
        )
    counted = sa.and_(
        payments.c.customer_id == customer_id,
        payments.c.state.not_in(NOT_COUNTED),
        payments.c.currency == beneficiary.amount.currency,
    )
    row = (
        await connection.execute(
            sa.select(
                sa.func.count(), sa.func.avg(payments.c.amount_minor), sa.func.sum(payments.c.amount_minor)
            ).where(counted)
        )
    ).first()
    same_creditor = (
        payments.c.creditor_account_id == beneficiary.creditor_account_id
        if beneficiary.creditor_account_id
        else payments.c.creditor_wallet_partner_id == beneficiary.creditor_wallet_partner_id
    )
    seen = await connection.scalar(
        sa.select(sa.func.count()).where(
            payments.c.customer_id == customer_id, payments.c.state == PaymentState.SETTLED.name, same_creditor
        )
    )
    return CustomerHistory(
        payments_in_window=counts,
        paid_beneficiary_before=bool(seen),
        average_amount_minor=float(row[1] or 0) if row else 0.0,
        history_count=int(row[0] or 0) if row else 0,
        total_amount_minor=int(row[2] or 0) if row else 0,
    )


async def _seed(database: Database) -> None:
    """Payments of two customers across states, currencies, creditors and ages."""
    states = list(PaymentState)
    creditors: list[tuple[str | None, str | None]] = [
        ("a2", None),
        ("a3", None),
        (None, "w1"),
        (None, None),
        ("", "w1"),
    ]
    ages = [0, 30, 59, 60, 61, 3599, 3600, 7200, 86400 * 2]
    async with PaymentUnitOfWork(database) as uow:
        for number, (state, (account, wallet), age, customer, currency) in enumerate(
            itertools.product(states, creditors, ages[::2], ["cust1", "cust2"], ["EUR", "GBP"])
        ):
            created = NOW - dt.timedelta(seconds=age)
            payment = sample_payment(
                f"pay-{number:04d}",
                state=state,
                creditor_account_id=account,
                creditor_wallet_partner_id=wallet,
                customer_id=customer,
                amount=Amount(currency, 100 + number * 7),
                created_at=created,
                updated_at=created,
                partner_id=f"p{number % 3}",
                consent_id=f"c{number % 4}",
            )
            await uow.payments.add(payment)
        for age in ages[1::2]:  # the odd ages: one payment each, counted or not
            created = NOW - dt.timedelta(seconds=age)
            await uow.payments.add(
                sample_payment(f"odd-{age}", created_at=created, updated_at=created, state=PaymentState.REJECTED)
            )
        await uow.commit()


async def test_customer_history_matches_the_separate_counts(database: Database) -> None:
    await _seed(database)
    beneficiaries = [
        sample_payment("b1", creditor_account_id="a2"),
        sample_payment("b2", creditor_account_id="a9"),
        sample_payment("b3", creditor_account_id=None, creditor_wallet_partner_id="w1"),
        sample_payment("b4", creditor_account_id=None, creditor_wallet_partner_id=None),
        sample_payment("b5", creditor_account_id="", creditor_wallet_partner_id="w1"),
        sample_payment("b6", creditor_account_id="", creditor_wallet_partner_id=None, amount=Amount("GBP", 5)),
        sample_payment("b7", creditor_account_id="a3", amount=Amount("USD", 5)),
    ]
    window_sets: list[set[int]] = [set(), {60}, {60, 3600}, {3600, 60, 86400, 1}]
    async with PaymentUnitOfWork(database, read_only=True) as uow:
        for customer in ("cust1", "cust2", "nobody", ""):
            for beneficiary in beneficiaries:
                for windows in window_sets:
                    got = await uow.limits.customer_history(customer, beneficiary, windows, NOW)
                    want = await _reference_history(uow.connection, customer, beneficiary, windows, NOW)
                    assert got == want, (customer, beneficiary.payment_id, windows)
                    assert list(got.payments_in_window) == list(want.payments_in_window)
        # Something is actually counted (the comparison is not all zeros).
        history = await uow.limits.customer_history("cust1", beneficiaries[0], {60, 86400}, NOW)
        assert history.history_count > 0 and history.average_amount_minor > 0
        assert history.paid_beneficiary_before
        assert 0 < history.payments_in_window[60] < history.payments_in_window[86400]
        # One round trip per customer in CreatePayment's transaction, whatever the rules ask.
        statements: list[str] = []

        def count(*args: Any) -> None:
            statements.append(args[2])

        sa.event.listen(database.engine.sync_engine, "before_cursor_execute", count)
        try:
            await uow.limits.customer_history("cust1", beneficiaries[2], {60, 3600, 86400}, NOW)
        finally:
            sa.event.remove(database.engine.sync_engine, "before_cursor_execute", count)
        assert len(statements) == 1, statements


async def test_spent_matches_the_per_call_sum(database: Database) -> None:
    await _seed(database)
    async with PaymentUnitOfWork(database, read_only=True) as uow:
        for column, values in (("consent_id", ["c0", "c1", "c3", "none"]), ("partner_id", ["p0", "p2", "none"])):
            for value, currency, days in itertools.product(values, ["EUR", "GBP", "USD"], [-1, 0, 1, 2, 3]):
                day = (NOW - dt.timedelta(days=days)).date()
                midnight = dt.datetime.combine(day, dt.time(0), tzinfo=dt.UTC)
                want = await _reference_spent(uow.connection, column, value, currency, midnight)
                assert await uow.limits.spent(column, value, currency, day) == want, (column, value, currency, day)
        assert await uow.limits.spent("consent_id", "c0", "EUR", (NOW - dt.timedelta(days=3)).date()) > 0
        assert await uow.limits.spent("consent_id", "c1", "GBP", (NOW - dt.timedelta(days=3)).date()) > 0
        with pytest.raises(KeyError):
            await uow.limits.spent("no_such_column", "x", "EUR", NOW.date())


async def test_state_changes_and_lease(database: Database) -> None:
    later = NOW + dt.timedelta(minutes=1)
    async with PaymentUnitOfWork(database) as uow:
        await uow.payments.add(sample_payment("m1"), lease_until=NOW + LEASE)
        await uow.payments.add(sample_payment("m2", creditor_account_id=None, creditor_wallet_partner_id="w1"))
        await uow.commit()
    async with PaymentUnitOfWork(database) as uow:
        stored = await uow.payments.get("m1")
        assert stored == sample_payment("m1")
        assert await uow.payments.get("missing") is None
        assert await uow.payments.get("m2") == sample_payment(
            "m2", creditor_account_id=None, creditor_wallet_partner_id="w1"
        )
        # A guarded move only from the listed states; the message is cut to 256 characters.
        assert not await uow.payments.move("m1", [PaymentState.ACCEPTED], PaymentState.SETTLED, later)
        assert await uow.payments.move(
            "m1",
            [PaymentState.RECEIVED, PaymentState.ACCEPTED],
            PaymentState.REJECTED,
            later,
            reason="R",
            message="x" * 300,
        )
        moved = await uow.payments.get("m1")
        assert moved is not None
        assert (moved.state, moved.status_reason, moved.status_reason_message) == (
            PaymentState.REJECTED,
            "R",
            "x" * 256,
        )
        assert moved.updated_at == later
        assert not await uow.payments.move("missing", [PaymentState.RECEIVED], PaymentState.ACCEPTED, later)
        # extra_condition still narrows the update.
        assert not await uow.payments.move(
            "m2", [PaymentState.RECEIVED], PaymentState.ACCEPTED, later, extra_condition=payments.c.partner_id == "zz"
        )
        assert await uow.payments.move(
            "m2", [PaymentState.RECEIVED], PaymentState.ACCEPTED, later, extra_condition=payments.c.partner_id == "p1"
        )
        # A requested hold blocks a cancel.
        assert await uow.payments.request_hold("m2", later)
        assert await uow.payments.hold_requested("m2")
        assert not await uow.payments.hold_requested("m1")
        assert not await uow.payments.request_hold("m1", later)  # final
        assert not await uow.payments.cancel("m2", later)
        await uow.commit()
    async with PaymentUnitOfWork(database) as uow:
        await uow.payments.add(sample_payment("m3"))
        assert await uow.payments.cancel("m3", later)
        cancelled = await uow.payments.get("m3")
        assert cancelled is not None
        assert (cancelled.state, cancelled.status_reason, cancelled.updated_at) == (PaymentState.CANCELLED, "", later)
        assert not await uow.payments.cancel("m3", later)
        # Leases: claim only an unfinished payment without a live lease; renew extends it.
        await uow.payments.add(sample_payment("m4"), lease_until=NOW + LEASE)
        assert not await uow.payments.claim("m4", NOW, LEASE)
        assert await uow.payments.claim("m4", NOW + LEASE + dt.timedelta(seconds=1), LEASE)
        assert not await uow.payments.claim("m4", NOW + LEASE + dt.timedelta(seconds=2), LEASE)
        await uow.payments.renew("m4", NOW + dt.timedelta(hours=1), LEASE)
        assert "m4" not in await uow.payments.unfinished_with_expired_lease(NOW + dt.timedelta(hours=1), 10)
        assert "m4" in await uow.payments.unfinished_with_expired_lease(NOW + dt.timedelta(hours=2), 10)
        await uow.payments.add(sample_payment("m5"))  # no lease at all
        assert await uow.payments.claim("m5", NOW, LEASE)
        assert not await uow.payments.claim("m1", later + dt.timedelta(hours=9), LEASE)  # final
        await uow.commit()


async def test_steps_events_and_idempotency(database: Database) -> None:
    async with PaymentUnitOfWork(database) as uow:
        payment = sample_payment("s1")
        await uow.payments.add(payment)
        await uow.steps.add_many([RecordedStep("s1", StepRecord(Step.VALIDATE, Outcome.SUCCEEDED), "t" * 32, NOW)])
        failed = StepRecord(Step.HOLD_FUNDS, Outcome.FAILED, "d" * 300)
        await uow.steps.add_many([RecordedStep("s1", failed, "t" * 32, NOW)])
        assert await uow.events.last_seq() == 0
        await uow.events.add(payment, None, PaymentState.RECEIVED, "", NOW)
        await uow.events.add(payment, PaymentState.RECEIVED, PaymentState.REJECTED, "WHY", NOW)
        assert await uow.idempotency.lookup("p1", "Create", "r1", "f1") is None
        await uow.idempotency.save("p1", "Create", "r1", "f1", b"s1", NOW)
        await uow.commit()
    async with PaymentUnitOfWork(database) as uow:
        steps = await uow.steps.for_payment("s1")
        assert [(s.step.value, s.outcome.value, s.detail) for s in steps] == [
            ("validate", "succeeded", ""),
            ("hold_funds", "failed", "d" * 256),
        ]
        assert steps[0].recorded_at == NOW
        assert await uow.steps.for_payment("none") == []
        events = await uow.events.after("p1", 0, 10)
        assert [(e.previous_state, e.state, e.status_reason) for e in events] == [
            (None, PaymentState.RECEIVED, ""),
            (PaymentState.RECEIVED, PaymentState.REJECTED, "WHY"),
        ]
        assert await uow.events.last_seq() == events[-1].seq
        assert await uow.idempotency.lookup("p1", "Create", "r1", "f1") == b"s1"
        assert await uow.idempotency.lookup("p2", "Create", "r1", "f1") is None
        assert await uow.idempotency.lookup("p1", "Cancel", "r1", "f1") is None
        with pytest.raises(AlreadyExists):
            await uow.idempotency.lookup("p1", "Create", "r1", "f2")
        await uow.idempotency.save("p1", "Create", "r2", "f1", b"old", NOW - dt.timedelta(days=3))
        assert await uow.idempotency.purge(NOW - dt.timedelta(days=1)) == 1
        assert await uow.idempotency.lookup("p1", "Create", "r2", "f1") is None
        assert await uow.idempotency.lookup("p1", "Create", "r1", "f1") == b"s1"
        await uow.commit()
    with pytest.raises(sa.exc.IntegrityError):
        async with PaymentUnitOfWork(database) as uow:
            await uow.idempotency.save("p1", "Create", "r1", "f9", b"dup", NOW)


async def test_customer_totals_follow_rejections_and_cancellations(database: Database) -> None:
    await _seed(database)
    beneficiary = sample_payment("b1", creditor_account_id="a2")

    async def agrees() -> CustomerHistory:
        async with PaymentUnitOfWork(database, read_only=True) as uow:
            got = await uow.limits.customer_history("cust1", beneficiary, {60}, NOW)
            assert got == await _reference_history(uow.connection, "cust1", beneficiary, {60}, NOW)
            return got

    before = await agrees()
    async with PaymentUnitOfWork(database) as uow:
        await uow.payments.add(sample_payment("fresh-1", customer_id="cust1", amount=Amount("EUR", 5_000)))
        await uow.payments.add(sample_payment("fresh-2", customer_id="cust1", amount=Amount("EUR", 7_000)))
        await uow.commit()
    grown = await agrees()
    assert grown.history_count == before.history_count + 2
    async with PaymentUnitOfWork(database) as uow:
        assert await uow.payments.move("fresh-1", [PaymentState.RECEIVED], PaymentState.REJECTED, NOW)
        assert await uow.payments.cancel("fresh-2", NOW)
        # A move that does not happen (the state moved on) leaves the totals alone.
        assert not await uow.payments.move("fresh-1", [PaymentState.RECEIVED], PaymentState.REJECTED, NOW)
        await uow.commit()
    after = await agrees()
    # Counted again as before; the window counts keep every payment made, whatever its state.
    assert (after.history_count, after.average_amount_minor) == (before.history_count, before.average_amount_minor)
    assert after.payments_in_window[60] == before.payments_in_window[60] + 2


async def test_move_many_moves_only_the_payments_still_in_a_from_state_and_keeps_the_totals(
    database: Database,
) -> None:
    await _seed(database)
    beneficiary = sample_payment("b1", creditor_account_id="a2")
    async with PaymentUnitOfWork(database) as uow:
        await uow.payments.add_many(
            [
                sample_payment("m1", customer_id="cust1", amount=Amount("EUR", 100)),
                sample_payment("m2", customer_id="cust1", amount=Amount("EUR", 200)),
                sample_payment("m3", customer_id="cust1", state=PaymentState.SETTLED),
            ]
        )
        before = await uow.limits.customer_history("cust1", beneficiary, {60}, NOW)
        spent_before = [
            await uow.limits.spent(c, v, "EUR", NOW.date()) for c, v in (("consent_id", "c1"), ("partner_id", "p1"))
        ]
        moved = await uow.payments.move_many(
            ["m1", "m2", "m3", "missing"], [PaymentState.RECEIVED], PaymentState.ACCEPTED, NOW
        )
        assert moved == {"m1", "m2"}
        assert await uow.payments.move_many(["m1"], [PaymentState.ACCEPTED], PaymentState.REJECTED, NOW) == {"m1"}
        assert await uow.payments.move_many(["m1"], [PaymentState.ACCEPTED], PaymentState.REJECTED, NOW) == set()
        after = await uow.limits.customer_history("cust1", beneficiary, {60}, NOW)
        spent_after = [
            await uow.limits.spent(c, v, "EUR", NOW.date()) for c, v in (("consent_id", "c1"), ("partner_id", "p1"))
        ]
        states = {p.payment_id: p.state for p in (await uow.payments.get_many(["m1", "m2", "m3"])).values()}
        await uow.commit()
    assert states == {"m1": PaymentState.REJECTED, "m2": PaymentState.ACCEPTED, "m3": PaymentState.SETTLED}
    # The rejected one left the counted totals and the day sums, once.
    assert [b - a for b, a in zip(spent_before, spent_after, strict=True)] == [100, 100]
    assert (after.history_count, after.total_amount_minor) == (
        before.history_count - 1,
        before.total_amount_minor - 100,
    )


async def test_the_in_flight_gauges_and_recovery_read_only_unfinished_payments(database: Database) -> None:
    await _seed(database)
    async with database.engine.connect() as connection:
        rows = (await connection.execute(sa.select(payments.c.state, payments.c.updated_at))).all()
    # In flight: neither final nor waiting (for its time, the customer or a review: no saga yet).
    unfinished = [
        (state, as_utc(updated))
        for state, updated in rows
        if not PaymentState[state].final and not PaymentState[state].waiting
    ]
    assert any(state == PaymentState.SCHEDULED.name for state, _ in rows)
    seen: list[tuple[str, Any]] = []
    sa.event.listen(
        database.engine.sync_engine,
        "before_cursor_execute",
        lambda conn, cursor, statement, parameters, context, many: seen.append((statement, parameters)),
    )
    async with PaymentUnitOfWork(database, read_only=True) as uow:
        counts = await uow.payments.count_unfinished_by_state()
        oldest = await uow.payments.oldest_unfinished_update()
        await uow.payments.unfinished_with_expired_lease(NOW, 10)
        if database.is_sqlite:
            # Each reaches the in-flight rows through an index on state (the (state, updated_at)
            # one, or for a bare count the (state, requested_execution_time) one, as small),
            # never a scan of every payment ever made (NOT IN the final states would scan it all).
            raw = await uow.connection.get_raw_connection()
            for statement, parameters in seen[-3:]:
                cursor = await raw.driver_connection.execute(f"EXPLAIN QUERY PLAN {statement}", parameters)
                plan = " ".join(str(row[-1]) for row in await cursor.fetchall())
                assert re.search(r"INDEX ix_payments_state_\w+ \(state=\?\)", plan), (statement, plan)
    assert counts == dict(Counter(state for state, _ in unfinished))
    assert oldest == min(updated for _, updated in unfinished)


async def test_the_migration_fills_the_totals_from_the_payments_already_there(database_url: str) -> None:
    from alembic import command
    from sqlalchemy.engine import Connection

    from meshlib.storage.migrations import alembic_config

    db = Database(database_url)
    config = alembic_config(VERSIONS_DIR, "payment")

    def upgrade_to(revision: str) -> Any:
        def run(connection: Connection) -> None:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)

        return run

    try:
        async with db.engine.begin() as connection:
            await connection.run_sync(upgrade_to("payment_0002"))
            rows = [
                ("old-1", "REJECTED", 100, NOW),
                ("old-2", "SETTLED", 300, NOW),
                ("old-3", "ACCEPTED", 500, NOW),
                ("old-4", "CANCELLED", 700, NOW),
                ("old-5", "SETTLED", 900, NOW - dt.timedelta(days=1)),
            ]
            for payment_id, state, amount, created in rows:
                await connection.execute(
                    payments.insert().values(
                        payment_id=payment_id,
                        partner_id="p1",
                        consent_id="c1",
                        debtor_account_id="a1",
                        creditor_account_id="a2",
                        currency="EUR",
                        amount_minor=amount,
                        payment_type="TRANSFER",
                        state=state,
                        created_at=created,
                        updated_at=created,
                        customer_id="cust9",
                    )
                )
        await upgrade_to_head(db, VERSIONS_DIR, "payment")
        async with PaymentUnitOfWork(db, read_only=True) as uow:
            history = await uow.limits.customer_history(
                "cust9", sample_payment("b", creditor_account_id="a2"), set(), NOW
            )
            # The day sums (payment_0004): counted payments only, each on its own UTC day.
            spent = {
                (column, days): await uow.limits.spent(column, value, "EUR", (NOW - dt.timedelta(days=days)).date())
                for column, value in (("consent_id", "c1"), ("partner_id", "p1"))
                for days in (-1, 0, 1)
            }
        assert (history.history_count, history.average_amount_minor) == (3, 1700 / 3)
        assert history.paid_beneficiary_before
        for column in ("consent_id", "partner_id"):
            assert (spent[(column, -1)], spent[(column, 0)], spent[(column, 1)]) == (0, 800, 1700)
    finally:
        await db.dispose()
