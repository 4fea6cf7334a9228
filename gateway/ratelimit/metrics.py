"""The gateway's rate-limit metric: decisions by limit class and outcome, on the process's
own registry (:func:`meshlib.metrics.owned_registry`)."""

from __future__ import annotations

from prometheus_client import Counter

from meshlib.metrics import owned_registry

# Only the gateway process records (and exposes) these.
REGISTRY = owned_registry("gateway")
RATELIMIT_DECISIONS = Counter(
    "openbank_ratelimit_decisions",
    "Rate-limit decisions by limit class and outcome (allowed or limited).",
    ("class", "decision"),
    registry=REGISTRY,
)

# The names alert rules and dashboards may use, as Prometheus exposes them.
METRIC_NAMES = frozenset({"openbank_ratelimit_decisions_total"})


def record_ratelimit_decision(rate_limit_class: str, allowed: bool) -> None:
    """Count one rate-limit decision for a limit class (``allowed`` or ``limited``)."""
    RATELIMIT_DECISIONS.labels(rate_limit_class, "allowed" if allowed else "limited").inc()
