"""Scheduled payments: future-dated payments and standing orders, as plain rules.

A standing order executes its payment at ``first`` and then every day, week or month (a
monthly order keeps the first execution's day of month, clamped to the month's last day, so
the 31st runs on the 30th in April and on the 31st again in May), ``count`` times or until
``final``. Execution ``n`` (1 for the first) is due at :func:`execution_time`; the scheduler
runs each due execution once, in order. An execution more than the catch-up window late (the
bank was down) does not run: it is recorded REJECTED ``EXECUTION_WINDOW_MISSED``.

Plain Python: no gRPC, no SQL.
"""

from __future__ import annotations

import calendar
import dataclasses
import datetime as dt
import enum
from collections.abc import Callable
from dataclasses import dataclass

from meshlib.money import Amount

MAX_EXECUTIONS = 1_000
MAX_AHEAD = dt.timedelta(days=366)
# A requested execution time closer than this is "now": the payment runs at once.
IMMEDIATE_WITHIN = dt.timedelta(minutes=1)
DEFAULT_CATCH_UP = dt.timedelta(days=3)
MISSED_REASON = "EXECUTION_WINDOW_MISSED"
# Crash-test points of the scheduler: an execution taken, and its payment made (the order not
# advanced yet).
SCHEDULER_FAILPOINTS = frozenset({"after_execution_claimed", "after_execution_made"})


class Frequency(enum.Enum):
    """How often a standing order executes."""

    DAILY = "DAILY"
    WEEKLY = "WEEKLY"
    MONTHLY = "MONTHLY"


class OrderState(enum.Enum):
    """A standing order's lifecycle."""

    ACTIVE = "ACTIVE"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"


def _add_months(moment: dt.datetime, months: int) -> dt.datetime:
    month_index = moment.month - 1 + months
    year, month = moment.year + month_index // 12, month_index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def execution_time(first: dt.datetime, frequency: Frequency, number: int) -> dt.datetime:
    """When execution ``number`` (1 for the first) is due (always computed from the first, so
    a clamped month does not shift the ones after it)."""
    steps = number - 1
    if frequency is Frequency.DAILY:
        return first + dt.timedelta(days=steps)
    if frequency is Frequency.WEEKLY:
        return first + dt.timedelta(weeks=steps)
    return _add_months(first, steps)


@dataclass(frozen=True)
class StandingOrder:
    """A payment executed on a schedule under a consent."""

    order_id: str
    partner_id: str
    consent_id: str
    customer_id: str
    debtor_account_id: str
    creditor_account_id: str | None
    creditor_wallet_partner_id: str | None
    amount: Amount
    payment_type: str
    frequency: Frequency
    first_execution_at: dt.datetime
    execution_count: int | None  # None: bounded by final_execution_at
    final_execution_at: dt.datetime | None
    state: OrderState
    executions_done: int
    created_at: dt.datetime
    updated_at: dt.datetime
    remittance_information: str = ""

    def due_at(self, number: int) -> dt.datetime | None:
        """When execution ``number`` is due; None when the order has no such execution."""
        if number < 1 or (self.execution_count is not None and number > self.execution_count):
            return None
        moment = execution_time(self.first_execution_at, self.frequency, number)
        if self.final_execution_at is not None and moment > self.final_execution_at:
            return None
        return moment

    @property
    def next_number(self) -> int:
        """The number of the next execution to run."""
        return self.executions_done + 1

    @property
    def next_execution_at(self) -> dt.datetime | None:
        """When the next execution is due; None once the order is final or has none left."""
        return self.due_at(self.next_number) if self.state is OrderState.ACTIVE else None

    def executed(self, number: int, now: dt.datetime) -> StandingOrder:
        """After execution ``number`` ran (or was recorded missed): COMPLETED when none is left."""
        assert number == self.next_number, (number, self.next_number)
        done = dataclasses.replace(self, executions_done=number, updated_at=now)
        if done.due_at(number + 1) is None:
            return dataclasses.replace(done, state=OrderState.COMPLETED)
        return done

    def cancelled(self, now: dt.datetime) -> StandingOrder:
        """No execution after this."""
        return dataclasses.replace(self, state=OrderState.CANCELLED, updated_at=now)


def missed(due: dt.datetime, now: dt.datetime, catch_up: dt.timedelta = DEFAULT_CATCH_UP) -> bool:
    """An execution found this late does not run (the bank was down longer than the window)."""
    return now - due > catch_up


def scaled_clock(wall: Callable[[], dt.datetime], anchor: dt.datetime, scale: float) -> Callable[[], dt.datetime]:
    """A clock running ``scale`` times faster than ``wall`` from ``anchor`` (sandbox time travel)."""

    def now() -> dt.datetime:
        return anchor + (wall() - anchor) * scale

    return now


def execution_request_id(order_id: str, number: int) -> str:
    """The idempotency key of an order's execution: whoever runs it, it makes one payment."""
    return f"so-{order_id}-{number}"
