"""CreatePayment's recording transactions of payments created together share one transaction:
each under its own SAVEPOINT, so a refused payment rolls back alone, and in order, so limits
stay exact; a failed shared transaction falls back to one transaction each."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import sqlalchemy as sa

from meshlib.errors import FailedPrecondition
from meshlib.storage import Database
from services.payment.domain.checks import VelocityRules
from services.payment.domain.payments import Payment
from services.payment.payments_service import PaymentCommands
from services.payment.tables import payments
from services.payment.unit_of_work import PaymentUnitOfWork
from tests.integration.payment.mesh import running_mesh, standard_mesh
from tests.integration.payment.samples import LEASE, CountingUnitsOfWork, sample_payment


def _commands(units: CountingUnitsOfWork) -> PaymentCommands:
    return PaymentCommands(
        units,
        saga=None,
        consents=None,
        partners=None,
        participants=None,  # type: ignore[arg-type]
        rules=VelocityRules(),
        lease=LEASE,
    )


def _adding(payment: Payment, *, refuse: bool = False):  # type: ignore[no-untyped-def]
    async def recording(uow: PaymentUnitOfWork) -> tuple[Payment, bool]:
        await uow.payments.add(payment)
        if refuse:  # refused after writing: its savepoint must take the row back
            raise FailedPrecondition("refused", reason="CONSENT_LIMIT_EXCEEDED")
        return payment, True

    return recording


async def _stored_ids(database: Database) -> list[str]:
    async with database.engine.connect() as connection:
        return sorted((await connection.execute(sa.select(payments.c.payment_id))).scalars())


async def test_recordings_share_one_transaction_and_a_refusal_rolls_back_alone(database: Database) -> None:
    units = CountingUnitsOfWork(database)
    commands = _commands(units)
    outcomes = await asyncio.gather(
        commands._recorder.submit(_adding(sample_payment("p1"))),
        commands._recorder.submit(_adding(sample_payment("p2"), refuse=True)),
        commands._recorder.submit(_adding(sample_payment("p3"))),
        return_exceptions=True,
    )
    assert isinstance(outcomes[1], FailedPrecondition)
    assert [o[0].payment_id for o in (outcomes[0], outcomes[2])] == ["p1", "p3"]  # type: ignore[index]
    assert units.writes == 1
    assert await _stored_ids(database) == ["p1", "p3"]


async def test_a_failed_shared_transaction_records_each_payment_alone(database: Database) -> None:
    units = CountingUnitsOfWork(database)
    commands = _commands(units)
    # The same payment twice: the second insert breaks the shared transaction (not a refusal).
    outcomes = await asyncio.gather(
        commands._recorder.submit(_adding(sample_payment("q1"))),
        commands._recorder.submit(_adding(sample_payment("q1"))),
        commands._recorder.submit(_adding(sample_payment("q2"))),
        return_exceptions=True,
    )
    assert not isinstance(outcomes[0], BaseException) and not isinstance(outcomes[2], BaseException)
    assert isinstance(outcomes[1], Exception)
    assert units.writes == 1 + 3
    assert await _stored_ids(database) == ["q1", "q2"]


async def test_payments_created_together_never_pass_a_consent_period_limit_together(tmp_path) -> None:  # type: ignore[no-untyped-def]
    urls = {n: f"sqlite+aiosqlite:///{tmp_path / f'{n}.db'}" for n in ("account", "settlement", "payment")}
    async with running_mesh(urls) as running:
        mesh = await standard_mesh(running, funds=100_000)
        mesh.grant("c1", "partner-1", ["alice", "bob"], period_limit_minor=5_000, limit_currency="EUR", period="DAY")
        results = await asyncio.gather(
            *(mesh.transfer(1_000, request_id=uuid.uuid4().hex) for _ in range(9)), return_exceptions=True
        )
        settled = [r for r in results if not isinstance(r, BaseException)]
        refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
        assert len(settled) == 5 and len(refused) == 4
        assert {r.code() for r in refused} == {grpc.StatusCode.FAILED_PRECONDITION}
        assert await mesh.balance("bob") == (5_000, 5_000)
