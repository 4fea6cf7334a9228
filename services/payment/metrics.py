"""Payment's business metrics: payments by state and the age of the oldest unfinished one,
read from the database (every replica publishes the same figures)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from meshlib.metrics import set_oldest_unfinished_payment_age, set_payments_in_state
from services.payment.domain.payments import PaymentState
from services.payment.unit_of_work import PaymentUnitOfWork


async def publish_payment_gauges(
    uow: Callable[..., PaymentUnitOfWork], clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)
) -> None:
    """Set the payments-in-flight-by-state and oldest-unfinished-age gauges."""
    async with uow(read_only=True) as work:
        counts = await work.payments.count_unfinished_by_state()
        oldest = await work.payments.oldest_unfinished_update()
    for state in PaymentState:
        if not state.final:
            set_payments_in_state(state.name, counts.get(state.name, 0))
    set_oldest_unfinished_payment_age((clock() - oldest).total_seconds() if oldest else 0.0)
