"""The gateway's rate-limit metric: recorded by class and outcome, exposed on the process's registry."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.ratelimit.metrics import METRIC_NAMES, REGISTRY, record_ratelimit_decision
from meshlib.metrics import process_registry


def _decisions(rate_limit_class: str, decision: str) -> float:
    return (
        REGISTRY.get_sample_value(
            "openbank_ratelimit_decisions_total", {"class": rate_limit_class, "decision": decision}
        )
        or 0.0
    )


def test_decisions_are_counted_by_class_and_outcome_and_exposed() -> None:
    allowed, limited = _decisions("unit-reads", "allowed"), _decisions("unit-reads", "limited")
    record_ratelimit_decision("unit-reads", allowed=True)
    record_ratelimit_decision("unit-reads", allowed=False)
    record_ratelimit_decision("unit-reads", allowed=False)
    assert _decisions("unit-reads", "allowed") == allowed + 1
    assert _decisions("unit-reads", "limited") == limited + 2
    exposed = {
        sample.name
        for family in text_string_to_metric_families(generate_latest(process_registry("gateway")).decode())
        for sample in family.samples
    }
    assert exposed >= METRIC_NAMES
