"""The sample Grafana dashboard and Prometheus alert rules parse and use only metrics that
the processes really export: the METRIC_NAMES of libs/meshlib/metrics.py (shared) and of each
process's own metrics module (the scrape tests check that those names are exposed)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway import upstream_metrics
from gateway.ratelimit import metrics as ratelimit_metrics
from meshlib import metrics as shared_metrics
from services.payment import metrics as payment_metrics
from services.settlement import metrics as settlement_metrics

OBSERVABILITY = Path(__file__).resolve().parents[2] / "deploy" / "observability"
# Standard series from Prometheus itself and prometheus_client's process collector.
STANDARD_METRICS = {"up", "process_resident_memory_bytes", "process_cpu_seconds_total"}
METRIC = re.compile(r"\b((?:openbank|process)_[a-z0-9_]+|up)\b")
SEVERITIES = {"page", "warn", "info"}
METRIC_NAMES = (
    shared_metrics.METRIC_NAMES
    | ratelimit_metrics.METRIC_NAMES
    | upstream_metrics.METRIC_NAMES
    | payment_metrics.METRIC_NAMES
    | settlement_metrics.METRIC_NAMES
)


def metric_names(expr: str) -> set[str]:
    """Metric names used in a PromQL expression (recording rules, with colons, excluded)."""
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    return set(METRIC.findall(without_strings))


def balanced(expr: str) -> bool:
    """Brackets open and close in order (a cheap syntax guard without promtool)."""
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    for char in re.sub(r'"[^"]*"', '""', expr):
        if char in "([{":
            stack.append(char)
        elif char in pairs:
            if not stack or stack.pop() != pairs[char]:
                return False
    return not stack


@pytest.fixture(scope="module")
def rules() -> list[dict[str, Any]]:
    """Every rule of every group."""
    document = yaml.safe_load((OBSERVABILITY / "prometheus-rules.yaml").read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    """The Grafana dashboard."""
    return json.loads((OBSERVABILITY / "grafana-dashboard.json").read_text())


def test_metric_name_extraction() -> None:
    assert metric_names('sum by (x) (rate(openbank_rpc_requests_total{code=~"openbank_nope"}[5m])) / up') == {
        "openbank_rpc_requests_total",
        "up",
    }
    assert metric_names("openbank:rpc_server_errors:ratio_rate5m > 0.02") == set()


def test_alert_rules_cover_the_issue_and_use_exported_metrics(rules) -> None:  # type: ignore[no-untyped-def]
    alerts = {rule["alert"]: rule for rule in rules if "alert" in rule}
    for wanted in ("OpenbankHighErrorRate", "OpenbankHighLatency", "OpenbankPaymentsStuck"):
        assert wanted in alerts
    assert "OpenbankSettlementPositionNearCap" in alerts
    recorded = {rule["record"] for rule in rules if "record" in rule}
    for rule in rules:
        expr = rule["expr"]
        assert balanced(expr), expr
        used = metric_names(expr)
        assert used <= METRIC_NAMES | STANDARD_METRICS, used - METRIC_NAMES - STANDARD_METRICS
        assert used or set(re.findall(r"openbank:[a-z0-9_:]+", expr)) <= recorded
    for name, alert in alerts.items():
        assert alert["labels"]["severity"] in SEVERITIES, name
        assert alert["annotations"]["summary"] and alert["annotations"]["description"], name


def per_process(expr: str) -> bool:
    """Every aggregation in ``expr`` keeps the process label, or the selector names one process."""
    groupings = re.findall(r"\b(?:sum|avg|max|min|count|topk\(\d+,\s*\w+)\s*by\s*\(([^)]*)\)", expr)
    bare = re.findall(r"\b(?:sum|avg|max|min|count)\s*\(", expr)
    one_process = re.search(r'process="[a-z]+"', expr) is not None
    return one_process or (not bare and all("process" in group.split(", ") for group in groupings))


def test_per_process_check() -> None:
    assert per_process("sum by (process, le) (rate(openbank_rpc_duration_seconds_bucket[5m]))")
    assert per_process('sum by (code) (rate(openbank_rpc_requests_total{process="gateway"}[5m]))')
    assert not per_process('sum by (code) (rate(openbank_rpc_requests_total{process=~"$process"}[5m]))')
    assert not per_process("sum(rate(openbank_rpc_requests_total[5m]))")


def test_alert_rules_keep_rpc_figures_per_process(rules) -> None:  # type: ignore[no-untyped-def]
    rpc = [rule["expr"] for rule in rules if "openbank_rpc_" in rule["expr"]]
    assert rpc and all(per_process(expr) for expr in rpc), [e for e in rpc if not per_process(e)]


def test_alert_rules_pass_promtool_when_available() -> None:
    if not shutil.which("promtool"):
        pytest.skip("promtool not installed")
    result = subprocess.run(
        ["promtool", "check", "rules", str(OBSERVABILITY / "prometheus-rules.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_panels_query_exported_metrics_without_overlapping(dashboard) -> None:  # type: ignore[no-untyped-def]
    assert dashboard["uid"] and dashboard["title"]
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "process"} <= variables
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    occupied: set[tuple[int, int]] = set()
    used: set[str] = set()
    for panel in panels:
        grid = panel["gridPos"]
        cells = {
            (x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert grid["x"] + grid["w"] <= 24 and not cells & occupied, panel["title"]
        occupied |= cells
        for target in panel.get("targets", []):
            assert balanced(target["expr"]), target["expr"]
            used |= metric_names(target["expr"])
    assert used <= METRIC_NAMES | STANDARD_METRICS, used - METRIC_NAMES - STANDARD_METRICS
    # A call the gateway proxies is served twice (gateway, then the service): an rpc figure is
    # kept per process or taken from one process, never added up over processes.
    rpc_exprs = [t["expr"] for p in panels for t in p.get("targets", []) if "openbank_rpc_" in t["expr"]]
    assert rpc_exprs and all(per_process(expr) for expr in rpc_exprs), [e for e in rpc_exprs if not per_process(e)]
    # Every business metric has a panel.
    business = {name for name in METRIC_NAMES if not name.startswith("openbank_rpc_")}
    assert business <= used, business - used
