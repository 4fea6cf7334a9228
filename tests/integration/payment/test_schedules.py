"""Future-dated payments and standing orders over real gRPC and a real database (SQLite and
PostgreSQL): the scheduler on a test clock runs what is due, each execution once, checked
when it runs; two replicas never run one twice; a crash between making an execution's payment
and advancing the order makes no second payment; downtime is caught up by the stated rule."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest

from meshlib.grpc_errors import decode_rpc_error
from openbank.payment.v1 import payment_pb2
from services.payment.scheduler import Scheduler
from tests.integration.payment.mesh import Mesh, money, running_mesh, standard_mesh
from tests.support.servers import create_database

PERMISSIONS = frozenset({"INITIATE_PAYMENTS", "SCHEDULE_PAYMENTS", "READ_BALANCES", "READ_ACCOUNTS"})


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


class Crash(BaseException):
    """The process died here."""


@pytest.fixture(params=["sqlite", "postgresql"])
async def mesh(request: pytest.FixtureRequest, tmp_path) -> AsyncIterator[Mesh]:  # type: ignore[no-untyped-def]
    names = ("account", "settlement", "payment")
    if request.param == "sqlite":
        urls = {n: f"sqlite+aiosqlite:///{tmp_path / f'{n}.db'}" for n in names}
    else:
        server = request.getfixturevalue("postgres_srv")
        urls = {n: await create_database(server, f"t_{n}_{uuid.uuid4().hex[:12]}") for n in names}
    # The service's own scheduler loop stays off: the tests run passes on their own clock.
    async with running_mesh(urls, schedule_interval_seconds=0) as running:
        ready = await standard_mesh(running)
        ready.grant("c1", "partner-1", ["alice", "bob"], permissions=PERMISSIONS)
        yield ready


def _scheduler(mesh: Mesh, clock: Clock, failpoint=None) -> Scheduler:  # type: ignore[no-untyped-def]
    return mesh.servers["payment"].components.scheduler.with_clock(clock, failpoint)


def _ts(moment: dt.datetime):  # type: ignore[no-untyped-def]
    from google.protobuf import timestamp_pb2

    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


async def _future_top_up(mesh: Mesh, amount: int, at: dt.datetime) -> payment_pb2.Payment:
    answer = await mesh.payments.CreatePayment(
        payment_pb2.CreatePaymentRequest(
            request_id=uuid.uuid4().hex,
            debtor_account=f"accounts/{mesh.accounts['alice']}",
            creditor_wallet="partners/partner-1",
            amount=money(amount),
            type=payment_pb2.PAYMENT_TYPE_WALLET_TOP_UP,
            requested_execution_time=_ts(at),
        ),
        metadata=mesh.partner(),
    )
    return answer.payment


async def _order(
    mesh: Mesh, amount: int, first: dt.datetime, frequency: int, count: int, request_id: str | None = None
) -> payment_pb2.StandingOrder:
    answer = await mesh.payments.CreateStandingOrder(
        payment_pb2.CreateStandingOrderRequest(
            request_id=request_id or uuid.uuid4().hex,
            debtor_account=f"accounts/{mesh.accounts['alice']}",
            creditor_account=f"accounts/{mesh.accounts['bob']}",
            amount=money(amount),
            type=payment_pb2.PAYMENT_TYPE_TRANSFER,
            frequency=frequency,
            first_execution_time=_ts(first),
            execution_count=count,
            remittance_information="rent",
        ),
        metadata=mesh.partner(),
    )
    return answer.standing_order


async def _get(mesh: Mesh, name: str) -> payment_pb2.Payment:
    return (await mesh.payments.GetPayment(payment_pb2.GetPaymentRequest(name=name), metadata=mesh.partner())).payment


async def _executions(mesh: Mesh, order: str) -> list[payment_pb2.Payment]:
    listed = await mesh.payments.ListPayments(payment_pb2.ListPaymentsRequest(page_size=500), metadata=mesh.partner())
    return sorted((p for p in listed.payments if p.standing_order == order), key=lambda p: p.execution_number)


async def _get_order(mesh: Mesh, name: str) -> payment_pb2.StandingOrder:
    answer = await mesh.payments.GetStandingOrder(
        payment_pb2.GetStandingOrderRequest(name=name), metadata=mesh.partner()
    )
    return answer.standing_order


async def test_a_future_dated_payment_waits_then_settles_at_its_time(mesh: Mesh) -> None:
    clock = Clock()
    scheduled = await _future_top_up(mesh, 1_500, clock.now + dt.timedelta(hours=1))
    assert (scheduled.state, scheduled.iso20022_status) == (payment_pb2.PAYMENT_STATE_SCHEDULED, "PDNG")
    assert scheduled.requested_execution_time.ToDatetime(dt.UTC) > clock.now
    assert await mesh.balance("alice") == (100_000, 100_000)  # nothing held yet
    await _scheduler(mesh, clock).run_pass()  # not due
    assert (await _get(mesh, scheduled.name)).state == payment_pb2.PAYMENT_STATE_SCHEDULED
    clock.now += dt.timedelta(hours=1, seconds=1)
    result = await _scheduler(mesh, clock).run_pass()
    assert result.payments == 1
    done = await _get(mesh, scheduled.name)
    assert done.state == payment_pb2.PAYMENT_STATE_SETTLED
    # The partner is told: scheduled when made, then each change of its execution (issue 23).
    states = (await mesh.told_states([scheduled.name]))[scheduled.name]
    assert states[0] == payment_pb2.PAYMENT_STATE_SCHEDULED and states[-1] == payment_pb2.PAYMENT_STATE_SETTLED
    assert len(states) == len(set(states)) >= 3, states
    assert await mesh.balance("alice") == (98_500, 98_500)
    assert await mesh.ledger_balanced()


async def test_a_scheduled_payment_is_checked_when_it_executes_and_can_be_cancelled(mesh: Mesh) -> None:
    clock = Clock()
    later = clock.now + dt.timedelta(hours=2)
    cancelled = await _future_top_up(mesh, 100, later)
    over_limit = await _future_top_up(mesh, 900, later)
    revoked = await _future_top_up(mesh, 50, later + dt.timedelta(hours=1))
    answer = await mesh.payments.CancelPayment(
        payment_pb2.CancelPaymentRequest(request_id=uuid.uuid4().hex, name=cancelled.name), metadata=mesh.partner()
    )
    assert answer.payment.state == payment_pb2.PAYMENT_STATE_CANCELLED
    # The consent's period limit is lowered before the payment's time: checked when it runs.
    mesh.grant(
        "c1",
        "partner-1",
        ["alice", "bob"],
        permissions=PERMISSIONS,
        period_limit_minor=500,
        limit_currency="EUR",
        period="DAY",
    )
    clock.now = later + dt.timedelta(seconds=1)
    await _scheduler(mesh, clock).run_pass()
    refused = await _get(mesh, over_limit.name)
    assert (refused.state, refused.status_reason) == (payment_pb2.PAYMENT_STATE_REJECTED, "CONSENT_LIMIT_EXCEEDED")
    assert (await _get(mesh, cancelled.name)).state == payment_pb2.PAYMENT_STATE_CANCELLED
    # The customer revokes the consent: the next one is refused with that reason.
    mesh.grant("c1", "partner-1", ["alice", "bob"], permissions=PERMISSIONS, state="REVOKED")
    clock.now += dt.timedelta(hours=1)
    await _scheduler(mesh, clock).run_pass()
    mesh.grant("c1", "partner-1", ["alice", "bob"], permissions=PERMISSIONS)
    shown = await _get(mesh, revoked.name)
    assert (shown.state, shown.status_reason) == (payment_pb2.PAYMENT_STATE_REJECTED, "CONSENT_REVOKED")
    assert await mesh.balance("alice") == (100_000, 100_000)


async def test_a_monthly_standing_order_runs_each_execution_once_on_its_day(mesh: Mesh) -> None:
    clock = Clock()
    first = (clock.now + dt.timedelta(days=1)).replace(hour=9, minute=0, second=0, microsecond=0)
    order = await _order(mesh, 1_000, first, payment_pb2.STANDING_ORDER_FREQUENCY_MONTHLY, 3)
    assert order.state == payment_pb2.STANDING_ORDER_STATE_ACTIVE
    assert order.next_execution_time.ToDatetime(dt.UTC) == first
    scheduler = _scheduler(mesh, clock)
    due_times = []
    for number in range(1, 4):
        shown = await _get_order(mesh, order.name)
        due = shown.next_execution_time.ToDatetime(dt.UTC)
        due_times.append(due)
        clock.now = due - dt.timedelta(seconds=1)
        assert (await scheduler.run_pass()).executions == 0  # not yet
        clock.now = due + dt.timedelta(seconds=1)
        assert (await scheduler.run_pass()).executions == 1
        assert (await scheduler.run_pass()).executions == 0  # once
        assert (await _get_order(mesh, order.name)).executions_done == number
    assert [d.day for d in due_times] == [first.day] * 3 or first.day > 28  # the same day each month
    finished = await _get_order(mesh, order.name)
    assert finished.state == payment_pb2.STANDING_ORDER_STATE_COMPLETED and not finished.HasField("next_execution_time")
    executions = await _executions(mesh, order.name)
    assert [p.execution_number for p in executions] == [1, 2, 3]
    assert all(p.state == payment_pb2.PAYMENT_STATE_SETTLED for p in executions)
    # Each execution is a payment whose changes the partner is told (issue 23).
    told = await mesh.told_states([p.name for p in executions])
    assert all(states[-1] == payment_pb2.PAYMENT_STATE_SETTLED and len(states) >= 2 for states in told.values()), told
    assert await mesh.balance("bob") == (3_000, 3_000)


async def test_two_replicas_never_run_an_execution_twice(mesh: Mesh) -> None:
    clock = Clock()
    first = clock.now + dt.timedelta(minutes=5)
    orders = [await _order(mesh, 100, first, payment_pb2.STANDING_ORDER_FREQUENCY_DAILY, 3) for _ in range(4)]
    payments = [await _future_top_up(mesh, 10, first) for _ in range(4)]
    replicas = [_scheduler(mesh, clock), _scheduler(mesh, clock)]
    for day in range(3):
        clock.now = first + dt.timedelta(days=day, seconds=1)
        await asyncio.gather(*(replica.run_pass() for replica in replicas))
    for order in orders:
        assert [p.execution_number for p in await _executions(mesh, order.name)] == [1, 2, 3]
    assert [(await _get(mesh, p.name)).state for p in payments] == [payment_pb2.PAYMENT_STATE_SETTLED] * 4
    assert await mesh.balance("bob") == (4 * 3 * 100, 4 * 3 * 100)


async def test_a_crash_after_an_execution_made_its_payment_makes_no_second_one(mesh: Mesh) -> None:
    clock = Clock()
    first = clock.now + dt.timedelta(minutes=5)
    order = await _order(mesh, 700, first, payment_pb2.STANDING_ORDER_FREQUENCY_WEEKLY, 2)
    crashes = ["after_execution_made"]

    def failpoint(point: str) -> None:
        if crashes and crashes[0] == point:
            crashes.pop()
            raise Crash(point)

    clock.now = first + dt.timedelta(seconds=1)
    with pytest.raises(Crash):
        await _scheduler(mesh, clock, failpoint).run_pass()
    assert len(await _executions(mesh, order.name)) == 1  # made, the order not advanced
    assert (await _get_order(mesh, order.name)).executions_done == 0
    # Another replica while the dead one's lease lasts: nothing; once it ran out: the same payment.
    assert (await _scheduler(mesh, clock).run_pass()).executions == 0
    clock.now += dt.timedelta(seconds=31)
    assert (await _scheduler(mesh, clock).run_pass()).executions == 1
    assert [p.execution_number for p in await _executions(mesh, order.name)] == [1]
    assert (await _get_order(mesh, order.name)).executions_done == 1
    assert await mesh.balance("bob") == (700, 700)


async def test_downtime_is_caught_up_in_order_and_executions_too_late_are_recorded_missed(mesh: Mesh) -> None:
    clock = Clock()
    first = clock.now + dt.timedelta(minutes=5)
    order = await _order(mesh, 100, first, payment_pb2.STANDING_ORDER_FREQUENCY_DAILY, 6)
    # The bank is down for five and a half days: executions 1 to 3 (due on days 0, 1 and 2) are
    # more than three days late and do not run; 4 to 6 run late, in order, each once.
    clock.now = first + dt.timedelta(days=5, hours=12)
    result = await _scheduler(mesh, clock).run_pass()
    assert (result.missed, result.executions) == (3, 3)
    executions = await _executions(mesh, order.name)
    assert [(p.execution_number, p.status_reason) for p in executions] == [
        (1, "EXECUTION_WINDOW_MISSED"),
        (2, "EXECUTION_WINDOW_MISSED"),
        (3, "EXECUTION_WINDOW_MISSED"),
        (4, ""),
        (5, ""),
        (6, ""),
    ]
    assert (await _get_order(mesh, order.name)).state == payment_pb2.STANDING_ORDER_STATE_COMPLETED
    assert await mesh.balance("bob") == (300, 300)


async def test_a_refused_execution_is_visible_and_the_order_goes_on_until_cancelled(mesh: Mesh) -> None:
    clock = Clock()
    first = clock.now + dt.timedelta(minutes=5)
    order = await _order(mesh, 300, first, payment_pb2.STANDING_ORDER_FREQUENCY_DAILY, 5)
    mesh.grant("c1", "partner-1", ["alice", "bob"], permissions=PERMISSIONS, per_payment_limit_minor=200)
    clock.now = first + dt.timedelta(seconds=1)
    await _scheduler(mesh, clock).run_pass()
    mesh.grant("c1", "partner-1", ["alice", "bob"], permissions=PERMISSIONS)
    clock.now += dt.timedelta(days=1)
    await _scheduler(mesh, clock).run_pass()
    executions = await _executions(mesh, order.name)
    assert [(p.state, p.status_reason) for p in executions] == [
        (payment_pb2.PAYMENT_STATE_REJECTED, "PAYMENT_LIMIT_EXCEEDED"),
        (payment_pb2.PAYMENT_STATE_SETTLED, ""),
    ]
    cancelled = await mesh.payments.CancelStandingOrder(
        payment_pb2.CancelStandingOrderRequest(request_id=uuid.uuid4().hex, name=order.name), metadata=mesh.partner()
    )
    assert cancelled.standing_order.state == payment_pb2.STANDING_ORDER_STATE_CANCELLED
    clock.now += dt.timedelta(days=2)
    assert (await _scheduler(mesh, clock).run_pass()).executions == 0
    assert len(await _executions(mesh, order.name)) == 2


async def test_creation_refusals(mesh: Mesh) -> None:
    clock = Clock()

    async def refused(call) -> tuple[str, list[str]]:  # type: ignore[no-untyped-def]
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await call
        status = decode_rpc_error(error.value)
        return status.reason, [v.field for v in getattr(status, "violations", ())]

    assert await refused(
        _order(mesh, 100, clock.now - dt.timedelta(days=1), payment_pb2.STANDING_ORDER_FREQUENCY_DAILY, 2)
    ) == ("FIELD_INVALID", ["first_execution_time"])
    assert await refused(
        _order(mesh, 100, clock.now + dt.timedelta(days=1), payment_pb2.STANDING_ORDER_FREQUENCY_UNSPECIFIED, 2)
    ) == ("FIELD_INVALID", ["frequency"])
    assert (await refused(_order(mesh, 100, clock.now + dt.timedelta(days=1), 1, 1001)))[1] == ["execution_count"]
    mesh.grant("c1", "partner-1", ["alice", "bob"], permissions=frozenset({"INITIATE_PAYMENTS"}))
    assert (await refused(_order(mesh, 100, clock.now + dt.timedelta(days=1), 1, 2)))[0] == "CONSENT_PERMISSION_MISSING"
    assert (await refused(_future_top_up(mesh, 100, clock.now + dt.timedelta(days=1))))[
        0
    ] == "CONSENT_PERMISSION_MISSING"
    # A replay answers the first order.
    mesh.grant("c1", "partner-1", ["alice", "bob"], permissions=PERMISSIONS)
    first = await _order(mesh, 100, clock.now + dt.timedelta(days=1), 1, 2, request_id="so-1")
    again = await _order(mesh, 100, clock.now + dt.timedelta(days=1), 1, 2, request_id="so-1")
    assert again.name == first.name
    listed = await mesh.payments.ListStandingOrders(payment_pb2.ListStandingOrdersRequest(), metadata=mesh.partner())
    assert [o.name for o in listed.standing_orders] == [first.name]


async def test_reads_of_standing_orders_need_a_usable_consent(mesh: Mesh) -> None:
    order = await _order(mesh, 100, Clock().now + dt.timedelta(days=1), 1, 2)
    mesh.grant("c1", "partner-1", ["alice", "bob"], permissions=PERMISSIONS, state="REVOKED")
    for call in (
        mesh.payments.GetStandingOrder(payment_pb2.GetStandingOrderRequest(name=order.name), metadata=mesh.partner()),
        mesh.payments.ListStandingOrders(payment_pb2.ListStandingOrdersRequest(), metadata=mesh.partner()),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call
        assert decode_rpc_error(refused.value).reason == "CONSENT_REVOKED"
