"""CreatePayment's recording transactions of payments created together share one transaction:
checked in order as if the ones before were recorded (limits and velocity rules stay exact), a
refused payment writes nothing, a request_id seen before answers its payment, and a failed
shared transaction falls back to one transaction each."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import sqlalchemy as sa

from meshlib.errors import AlreadyExists, FailedPrecondition
from meshlib.money import Amount
from meshlib.storage import Database, IdempotencyKey
from services.payment.adapters.group_commit import GroupCommitRegister
from services.payment.adapters.sql_register import SqlPaymentRegister
from services.payment.domain.checks import PartnerLimits
from services.payment.domain.payments import PaymentState
from services.payment.domain.risk import RiskRule, RiskRules
from services.payment.domain.saga import IN_BANK_TRANSFER, opening
from services.payment.ports import CREATE_METHOD, Registration
from services.payment.tables import customer_totals, idempotency_keys, payment_events, payments
from tests.integration.payment.mesh import running_mesh, standard_mesh
from tests.integration.payment.samples import LEASE, NOW, CountingUnitsOfWork, sample_payment
from tests.support.consents import consent_view


def _register(units: CountingUnitsOfWork, rules: RiskRules | None = None) -> GroupCommitRegister:
    in_force = rules or RiskRules()
    return GroupCommitRegister(SqlPaymentRegister(units, lambda: in_force, lease=LEASE, clock=lambda: NOW))


def _recording(payment_id: str, *, request_id: str = "", amount: int = 1000, **consent: object) -> Registration:
    payment = sample_payment(payment_id, amount=Amount("EUR", amount))
    key = IdempotencyKey("p1", CREATE_METHOD, request_id or f"req-{payment_id}", f"fp-{amount}")
    return Registration(payment, key, consent_view(**consent), PartnerLimits("p1"), opening(IN_BANK_TRANSFER), "0" * 32)


async def _rows(database: Database, table: sa.Table, column: str) -> list[str]:
    async with database.engine.connect() as connection:
        return sorted((await connection.execute(sa.select(table.c[column]))).scalars())


async def test_recordings_share_one_transaction_and_a_refused_payment_writes_nothing(database: Database) -> None:
    units = CountingUnitsOfWork(database)
    register = _register(units)
    limit = {"period_limit_minor": 2_500, "limit_currency": "EUR", "period": "DAY"}
    outcomes = await asyncio.gather(
        *(register.record(_recording(f"p{i}", **limit)) for i in range(1, 4)), return_exceptions=True
    )
    # 1,000 + 1,000 fit under 2,500; the third would make 3,000: refused as if the two were stored.
    assert isinstance(outcomes[2], FailedPrecondition) and outcomes[2].reason == "CONSENT_LIMIT_EXCEEDED"
    assert [(o[0].payment_id, o[0].state, o[1]) for o in outcomes[:2]] == [  # type: ignore[index]
        ("p1", PaymentState.ACCEPTED, True),
        ("p2", PaymentState.ACCEPTED, True),
    ]
    assert units.writes == 1
    assert await _rows(database, payments, "payment_id") == ["p1", "p2"]
    assert await _rows(database, idempotency_keys, "request_id") == ["req-p1", "req-p2"]
    assert await _rows(database, payment_events, "payment_id") == ["p1", "p1", "p2", "p2"]
    async with database.engine.connect() as connection:
        totals = (await connection.execute(sa.select(customer_totals.c.payments, customer_totals.c.amount_minor))).one()
    assert tuple(totals) == (2, 2_000)


async def test_the_velocity_rules_see_the_payments_before_in_the_group(database: Database) -> None:
    rules = RiskRules(
        rules=(RiskRule("burst", "max_payments_per_window", outcome="refuse", window_seconds=60, max_count=2),)
    )
    register = _register(CountingUnitsOfWork(database), rules)
    outcomes = await asyncio.gather(
        *(register.record(_recording(f"v{i}")) for i in range(1, 4)), return_exceptions=True
    )
    assert isinstance(outcomes[2], FailedPrecondition) and outcomes[2].reason == "VELOCITY_RULE_TRIGGERED"
    assert await _rows(database, payments, "payment_id") == ["v1", "v2"]


async def test_a_request_id_seen_earlier_in_the_group_or_saved_answers_its_payment(database: Database) -> None:
    register = _register(CountingUnitsOfWork(database))
    first, again, reused = await asyncio.gather(
        register.record(_recording("r1", request_id="same")),
        register.record(_recording("r2", request_id="same")),
        register.record(_recording("r3", request_id="same", amount=5)),
        return_exceptions=True,
    )
    assert first[1] is True and again == (first[0], False)  # type: ignore[index]
    assert isinstance(reused, AlreadyExists)  # another payload under the same key
    later = await register.record(_recording("r4", request_id="same"))
    assert later[0].payment_id == "r1" and later[1] is False
    assert await _rows(database, payments, "payment_id") == ["r1"]


async def test_a_failed_shared_transaction_records_each_payment_alone(database: Database) -> None:
    units = CountingUnitsOfWork(database)
    register = _register(units)
    # The same payment id twice: the shared insert fails (not a refusal).
    outcomes = await asyncio.gather(
        register.record(_recording("q1")),
        register.record(_recording("q1", request_id="other")),
        register.record(_recording("q2")),
        return_exceptions=True,
    )
    assert not isinstance(outcomes[0], BaseException) and not isinstance(outcomes[2], BaseException)
    assert isinstance(outcomes[1], Exception)
    # The shared attempt, then one each; the duplicate is run twice more (a unique violation may
    # be a concurrent twin's, which a rerun would replay) before it fails.
    assert units.writes == 1 + 3 + 2
    assert await _rows(database, payments, "payment_id") == ["q1", "q2"]


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
