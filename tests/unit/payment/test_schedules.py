"""The schedule rules: when each execution of a standing order is due, when an order is done,
and which executions are too late to run."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from meshlib.money import Amount
from services.payment.domain.schedules import (
    Frequency,
    OrderState,
    StandingOrder,
    execution_time,
    missed,
    scaled_clock,
)

UTC = dt.UTC


def _order(
    first: dt.datetime, frequency: Frequency, count: int | None, final: dt.datetime | None = None
) -> StandingOrder:
    return StandingOrder(
        order_id="o1",
        partner_id="w1",
        consent_id="c1",
        customer_id="cust1",
        debtor_account_id="a1",
        creditor_account_id="a2",
        creditor_wallet_partner_id=None,
        amount=Amount("EUR", 100),
        payment_type="TRANSFER",
        frequency=frequency,
        first_execution_at=first,
        execution_count=count,
        final_execution_at=final,
        state=OrderState.ACTIVE,
        executions_done=0,
        created_at=first,
        updated_at=first,
    )


def test_a_monthly_order_keeps_its_day_and_clamps_short_months() -> None:
    first = dt.datetime(2027, 1, 31, 9, 0, tzinfo=UTC)
    days = [execution_time(first, Frequency.MONTHLY, n).date() for n in range(1, 6)]
    assert days == [
        dt.date(2027, 1, 31),
        dt.date(2027, 2, 28),
        dt.date(2027, 3, 31),  # back to the 31st: computed from the first, not the last
        dt.date(2027, 4, 30),
        dt.date(2027, 5, 31),
    ]
    assert execution_time(dt.datetime(2027, 12, 15, tzinfo=UTC), Frequency.MONTHLY, 2).date() == dt.date(2028, 1, 15)
    assert execution_time(dt.datetime(2028, 1, 31, tzinfo=UTC), Frequency.MONTHLY, 2).date() == dt.date(2028, 2, 29)


def test_daily_and_weekly_steps() -> None:
    first = dt.datetime(2027, 3, 1, 8, 30, tzinfo=UTC)
    assert execution_time(first, Frequency.DAILY, 3) == first + dt.timedelta(days=2)
    assert execution_time(first, Frequency.WEEKLY, 3) == first + dt.timedelta(weeks=2)


def test_an_order_ends_after_its_count_or_its_final_time() -> None:
    first = dt.datetime(2027, 3, 1, tzinfo=UTC)
    counted = _order(first, Frequency.DAILY, 2)
    assert counted.next_execution_at == first
    once = counted.executed(1, first)
    assert once.state is OrderState.ACTIVE and once.next_execution_at == first + dt.timedelta(days=1)
    twice = once.executed(2, first)
    assert twice.state is OrderState.COMPLETED and twice.next_execution_at is None
    bounded = _order(first, Frequency.WEEKLY, None, final=first + dt.timedelta(days=15))
    assert [bounded.due_at(n) is not None for n in (1, 2, 3, 4)] == [True, True, True, False]
    assert bounded.cancelled(first).next_execution_at is None


@given(st.integers(1, 40), st.sampled_from(list(Frequency)))
def test_executions_are_due_strictly_in_order(count: int, frequency: Frequency) -> None:
    order = _order(dt.datetime(2027, 1, 29, tzinfo=UTC), frequency, count)
    due = [order.due_at(n) for n in range(1, count + 1)]
    assert all(d is not None for d in due) and due == sorted(set(due))  # type: ignore[type-var]
    assert order.due_at(count + 1) is None and order.due_at(0) is None


def test_the_catch_up_window() -> None:
    due = dt.datetime(2027, 1, 1, tzinfo=UTC)
    assert not missed(due, due + dt.timedelta(days=3))
    assert missed(due, due + dt.timedelta(days=3, seconds=1))


def test_the_sandbox_clock_runs_faster_from_its_anchor() -> None:
    anchor = dt.datetime(2027, 1, 1, tzinfo=UTC)
    wall = [anchor + dt.timedelta(seconds=10)]
    fast = scaled_clock(lambda: wall[0], anchor, 8640.0)  # a day every 10 s
    assert fast() == anchor + dt.timedelta(days=1)
