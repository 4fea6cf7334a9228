"""Payment's business metrics: the saga's counters, the gauges read from the database, and
the names the alert rules use really exposed on the process's registry."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from meshlib.metrics import process_registry
from services.payment import metrics
from services.payment.domain.payments import PaymentState
from services.payment.metrics import REGISTRY

NOW = dt.datetime(2026, 11, 18, 15, 30, tzinfo=dt.UTC)


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class _Payments:
    def __init__(self, counts: dict[str, int], oldest: dt.datetime | None) -> None:
        self.counts, self.oldest = counts, oldest

    async def count_unfinished_by_state(self) -> dict[str, int]:
        return self.counts

    async def oldest_unfinished_update(self) -> dt.datetime | None:
        return self.oldest


def _uow(payments: _Payments) -> Any:
    class _Work:
        def __init__(self, *, read_only: bool) -> None:
            assert read_only

        async def __aenter__(self) -> SimpleNamespace:
            return SimpleNamespace(payments=payments)

        async def __aexit__(self, *exc: object) -> None:
            return None

    return _Work


def test_saga_counters_count_states_and_recoveries() -> None:
    settled = _value("openbank_payments_total", state="SETTLED")
    compensated = _value("openbank_saga_recoveries_total", outcome="compensated")
    metrics.record_payment_state("SETTLED")
    metrics.record_saga_recovery("compensated")
    assert _value("openbank_payments_total", state="SETTLED") == settled + 1
    assert _value("openbank_saga_recoveries_total", outcome="compensated") == compensated + 1


async def test_gauges_publish_every_in_flight_state_and_the_oldest_age() -> None:
    payments = _Payments({"ACCEPTED": 3}, NOW - dt.timedelta(seconds=90))
    await metrics.publish_payment_gauges(_uow(payments), clock=lambda: NOW)
    in_flight = [state for state in PaymentState if not state.final]
    for state in in_flight:
        assert _value("openbank_payments_in_state", state=state.name) == (3 if state.name == "ACCEPTED" else 0)
    assert _value("openbank_payments_in_state", state="SETTLED") == 0  # final states are not published
    assert _value("openbank_payment_oldest_unfinished_age_seconds") == 90

    await metrics.publish_payment_gauges(_uow(_Payments({}, None)), clock=lambda: NOW)
    assert _value("openbank_payments_in_state", state="ACCEPTED") == 0
    assert _value("openbank_payment_oldest_unfinished_age_seconds") == 0
    metrics.set_oldest_unfinished_payment_age(-3)  # a clock step backwards is not a negative age
    assert _value("openbank_payment_oldest_unfinished_age_seconds") == 0


def test_the_names_alert_rules_use_are_exposed() -> None:
    metrics.record_payment_state("ACCEPTED")
    metrics.record_saga_recovery("completed")
    metrics.set_payments_in_state("ACCEPTED", 1)
    metrics.record_risk_outcome("p1", "STEP_UP")
    metrics.record_risk_resolution("p1", "confirmed")
    exposed = {
        sample.name
        for family in text_string_to_metric_families(generate_latest(process_registry("payment")).decode())
        for sample in family.samples
    }
    assert exposed >= metrics.METRIC_NAMES
