"""One partner payment through the gateway is one trace: its spans cover the gateway, the
payment saga's steps, account, settlement and the databases, with no secrets in
attributes; and the JSON logs of the call carry the same trace id."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_one_payment_is_one_trace_across_every_hop(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tests.integration.observability.trace_probe", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        cwd=Path(__file__).resolve().parents[3],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    assert probe["state"] == "PAYMENT_STATE_SETTLED"
    every_span = probe["spans"]
    root = [s for s in every_span if s["parent"] is None and s["kind"] == "SERVER"]
    assert len(root) == 1, [s["name"] for s in root]  # the gateway's server span starts the one trace
    trace_id = root[0]["trace_id"]
    # Background jobs (metrics gauges, recovery) have traces of their own; every rpc and saga
    # step of the call belongs to the call's trace.
    assert {
        s["trace_id"] for s in every_span if s["kind"] in ("SERVER", "CLIENT") and s["name"] != "db.transaction"
    } == {trace_id}
    spans = [s for s in every_span if s["trace_id"] == trace_id]
    names = [s["name"] for s in spans]

    def server_spans(method: str) -> list[dict]:
        return [s for s in spans if s["kind"] == "SERVER" and s["name"].endswith(method)]

    assert len(server_spans("PaymentService/CreatePayment")) == 2  # the gateway, then the payment service
    # A lone payment's saga calls go out as single rpcs (batches of one), inside its trace.
    for hop in (
        "LedgerService/GetLedgerAccount",
        "LedgerService/CreateTransfer",
        "LedgerService/PostTransfer",
        "PositionService/ReserveObligation",
        "PositionService/CommitObligation",
    ):
        assert server_spans(hop), f"no server span for {hop}: {names}"
    assert sum(name == "db.transaction" for name in names) >= 6  # payment, account and settlement stores
    assert any(s["attributes"].get("payment.id") for s in spans)  # the saga's own step spans
    everything = json.dumps(spans)
    assert probe["token"] not in everything and "Bearer" not in everything
    # Logs written while serving the call carry its trace id.
    traced = [json.loads(line) for line in probe["logs"] if trace_id in line]
    assert traced and all(entry["trace_id"] == trace_id for entry in traced)
    assert probe["token"] not in "\n".join(probe["logs"])


def test_metrics_after_traffic_show_red_and_business_figures(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tests.integration.observability.trace_probe", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        cwd=Path(__file__).resolve().parents[3],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads(done.stdout.strip().splitlines()[-1])["metrics"]
    # RED per method: rate and errors (by code) and a duration histogram.
    assert (
        'openbank_rpc_requests_total{code="OK",method="CreatePayment",service="openbank.payment.v1.PaymentService"}'
        in metrics
    )
    assert "openbank_rpc_duration_seconds_bucket{" in metrics and 'method="ReserveObligation"' in metrics
    # Business: payments by state, rate-limit decisions, positions against caps.
    assert 'openbank_payments_total{state="SETTLED"}' in metrics
    assert 'openbank_payments_in_state{state="ACCEPTED"}' in metrics  # in-flight states only
    assert "openbank_ratelimit_decisions_total{" in metrics
    assert "openbank_settlement_position_minor{" in metrics and "openbank_settlement_exposure_minor{" in metrics
