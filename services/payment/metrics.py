"""Payment's business metrics, on the payment process's own registry (:func:`meshlib.metrics.owned_registry`):
payments entering each state and saga recoveries (counted by the saga), and the payments in
flight by state with the age of the oldest unfinished one (read from the database; every
replica publishes the same figures)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge

from meshlib.metrics import owned_registry
from services.payment.domain.payments import PaymentState

if TYPE_CHECKING:
    from services.payment.unit_of_work import PaymentUnitOfWork

# Only the payment process records (and exposes) these.
REGISTRY = owned_registry("payment")
PAYMENTS = Counter(
    "openbank_payments",
    "Payments entering a state (state is the PaymentState name without its prefix).",
    ("state",),
    registry=REGISTRY,
)
PAYMENTS_IN_STATE = Gauge(
    "openbank_payments_in_state",
    "Payments currently in an in-flight (not final) state, as last counted by the payment service.",
    ("state",),
    registry=REGISTRY,
)
OLDEST_UNFINISHED_PAYMENT_AGE = Gauge(
    "openbank_payment_oldest_unfinished_age_seconds",
    "Age of the oldest payment not yet in a final state (stuck sagas show up here).",
    registry=REGISTRY,
)
SAGA_RECOVERIES = Counter(
    "openbank_saga_recoveries",
    "Payment sagas resumed after a crash or timeout, by how the recovery ended.",
    ("outcome",),
    registry=REGISTRY,
)

RISK_DECISIONS = Counter(
    "openbank_payment_risk_decisions",
    "Risk decisions of new payments per partner (outcome: ALLOW, STEP_UP, REVIEW, REFUSE).",
    ("partner", "outcome"),
    registry=REGISTRY,
)
RISK_RESOLUTIONS = Counter(
    "openbank_payment_risk_resolutions",
    "How waiting payments ended per partner (confirmed, expired, approved, refused).",
    ("partner", "resolution"),
    registry=REGISTRY,
)

# The names alert rules and dashboards may use, as Prometheus exposes them.
METRIC_NAMES = frozenset(
    {
        "openbank_payment_risk_decisions_total",
        "openbank_payment_risk_resolutions_total",
        "openbank_payments_total",
        "openbank_payments_in_state",
        "openbank_payment_oldest_unfinished_age_seconds",
        "openbank_saga_recoveries_total",
    }
)


def record_payment_state(state: str) -> None:
    """Count a payment entering ``state`` (e.g. ``"COMPLETED"``); call after the commit."""
    PAYMENTS.labels(state).inc()


def record_risk_outcome(partner_id: str, outcome: str) -> None:
    """Count a new payment's risk decision for its partner; call after the commit."""
    RISK_DECISIONS.labels(partner_id, outcome).inc()


def record_risk_resolution(partner_id: str, resolution: str) -> None:
    """Count how a waiting payment ended; call after the commit."""
    RISK_RESOLUTIONS.labels(partner_id, resolution).inc()


def set_payments_in_state(state: str, count: int) -> None:
    """Publish how many payments are in ``state`` now (from a periodic count)."""
    PAYMENTS_IN_STATE.labels(state).set(count)


def set_oldest_unfinished_payment_age(seconds: float) -> None:
    """Publish the age of the oldest payment not yet final (0 when there is none)."""
    OLDEST_UNFINISHED_PAYMENT_AGE.set(max(0.0, seconds))


def record_saga_recovery(outcome: str) -> None:
    """Count a recovered saga by its outcome (``completed``, ``compensated``, ``failed``)."""
    SAGA_RECOVERIES.labels(outcome).inc()


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
