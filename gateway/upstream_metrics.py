"""The gateway's upstream pools as metrics, on the gateway's own registry
(:func:`meshlib.metrics.owned_registry`): per upstream service, how many replicas it knows,
how many are out of rotation now, and how often one was taken out. Every sample carries the
``process`` label when exposed, like every other metric."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from meshlib.metrics import owned_registry

# Only the gateway process records (and exposes) these.
REGISTRY = owned_registry("gateway")
UPSTREAM_REPLICAS = Gauge(
    "openbank_upstream_replicas",
    "Replicas the gateway knows of each upstream service (listed or resolved from its host name).",
    ("upstream",),
    registry=REGISTRY,
)
UPSTREAM_EJECTED = Gauge(
    "openbank_upstream_ejected_replicas",
    "Replicas of each upstream service the gateway holds out of rotation now (failed or timed out in a "
    "row, until a health probe answers); equal to openbank_upstream_replicas: every call is refused.",
    ("upstream",),
    registry=REGISTRY,
)
UPSTREAM_EJECTIONS = Counter(
    "openbank_upstream_ejections",
    "Times a replica of each upstream service was taken out of rotation.",
    ("upstream",),
    registry=REGISTRY,
)

# The names alert rules and dashboards may use, as Prometheus exposes them.
METRIC_NAMES = frozenset(
    {"openbank_upstream_replicas", "openbank_upstream_ejected_replicas", "openbank_upstream_ejections_total"}
)


def record_pool(upstream: str, replicas: int, ejected: int) -> None:
    """The pool of ``upstream`` now: replicas known, and how many are out of rotation."""
    UPSTREAM_REPLICAS.labels(upstream).set(replicas)
    UPSTREAM_EJECTED.labels(upstream).set(ejected)


def record_ejection(upstream: str) -> None:
    """One replica of ``upstream`` was taken out of rotation."""
    UPSTREAM_EJECTIONS.labels(upstream).inc()
