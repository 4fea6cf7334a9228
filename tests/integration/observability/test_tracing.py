"""One partner payment through the gateway is one trace: its spans cover the gateway, the
payment saga's steps, account, settlement and the databases, with no secrets in
attributes, with the partner, consent and interaction ids; the JSON logs of the call carry
the same trace id. An idle mesh exports no traces; a partner's mistakes are no server
errors and leave no stack traces. Each process counts the calls it served, once, and
exposes only its own metric families.

The probe runs once (a subprocess: a tracer provider is installed once per process)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

CREATE_PAYMENT = 'method="CreatePayment",process="{process}",service="openbank.payment.v1.PaymentService"'


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "tests.integration.observability.trace_probe", str(tmp_path_factory.mktemp("probe"))],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        cwd=Path(__file__).resolve().parents[3],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_one_payment_is_one_trace_across_every_hop(probe: dict[str, Any]) -> None:
    assert probe["state"] == "PAYMENT_STATE_SETTLED"
    every_span = probe["spans"]
    root = [s for s in every_span if s["parent"] is None]
    assert len(root) == 1 and root[0]["kind"] == "SERVER", [s["name"] for s in root]  # no trace of its own
    trace_id = root[0]["trace_id"]
    assert {s["trace_id"] for s in every_span} == {trace_id}
    spans = every_span
    names = [s["name"] for s in spans]

    def server_spans(method: str) -> list[dict]:
        return [s for s in spans if s["kind"] == "SERVER" and s["name"].endswith(method)]

    creates = server_spans("PaymentService/CreatePayment")
    assert len(creates) == 2  # the gateway, then the payment service
    for span in creates:  # whose call it was, on the spans of both
        assert span["attributes"]["openbank.partner.id"] == "partner-1"
        assert span["attributes"]["openbank.consent.id"] == "c1"
        assert span["attributes"]["openbank.interaction.id"] == "probe-payment"
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
    assert not any(s["status"] == "ERROR" or s["events"] for s in spans)
    everything = json.dumps(spans)
    assert probe["token"] not in everything and "Bearer" not in everything
    # Logs written while serving the call carry its trace id.
    traced = [json.loads(line) for line in probe["logs"] if trace_id in line]
    assert traced and all(entry["trace_id"] == trace_id for entry in traced)
    assert probe["token"] not in "\n".join(probe["logs"])


def test_an_idle_mesh_exports_no_traces(probe: dict[str, Any]) -> None:
    # Gauges, recovery, the scheduler, hold sweeps and audit seals all ran, each several times.
    assert probe["idle_spans"] == []


def test_a_partners_mistake_is_no_server_error_and_leaves_no_stack_trace(probe: dict[str, Any]) -> None:
    refusals = probe["refusals"]
    assert refusals["codes"] == {"invalid": "INVALID_ARGUMENT", "unknown": "NOT_FOUND"}
    servers = [s for s in refusals["spans"] if s["kind"] == "SERVER"]
    assert {s["attributes"]["rpc.grpc.status_code"] for s in servers} == {"3", "5"}
    assert {s["name"].rsplit("/", 1)[1] for s in servers} == {"CreatePayment", "GetPayment"}
    for span in refusals["spans"]:
        assert span["events"] == [], span  # no exception events, no stack trace
        if span["kind"] == "SERVER":
            assert span["status"] == "UNSET", span


def samples(text: str, name: str) -> dict[str, float]:
    """``{labels: value}`` of one metric in an exposition."""
    return {
        match.group(1): float(match.group(2))
        for match in re.finditer(rf"^{name}\{{(.*)\}} (\S+)$", text, flags=re.MULTILINE)
    }


def test_each_process_counts_the_proxied_call_once_and_exposes_its_own_families(probe: dict[str, Any]) -> None:
    metrics = probe["metrics"]
    # The partner's one CreatePayment: the gateway served it once, the payment service once.
    for process in ("gateway", "payment"):
        requests = samples(metrics[process], "openbank_rpc_requests_total")
        call = CREATE_PAYMENT.format(process=process)
        assert {labels: value for labels, value in requests.items() if call in labels} == {f'code="OK",{call}': 1.0}
    assert "CreatePayment" not in metrics["account"] + metrics["settlement"]
    # Every sample names its process, and only that one.
    for process, text in metrics.items():
        labelled = re.findall(r'^[a-z_]+\{[^}]*process="([a-z]+)"', text, flags=re.MULTILINE)
        unlabelled = re.findall(r"^[a-z_]+ \S+$", text, flags=re.MULTILINE)
        assert labelled and set(labelled) == {process} and unlabelled == [], (process, unlabelled[:3])
    # RED and the business figures, each from the process that owns them.
    assert 'openbank_rpc_duration_seconds_bucket{' in metrics["settlement"]
    assert 'method="ReserveObligation"' in metrics["settlement"]
    assert 'openbank_payments_total{process="payment",state="SETTLED"}' in metrics["payment"]
    assert 'openbank_payments_in_state{process="payment",state="ACCEPTED"}' in metrics["payment"]
    assert "openbank_ratelimit_decisions_total{" in metrics["gateway"]
    assert 'openbank_upstream_replicas{process="gateway",upstream="account"} 1.0' in metrics["gateway"]
    assert "openbank_settlement_position_minor{" in metrics["settlement"]
    assert "openbank_settlement_exposure_minor{" in metrics["settlement"]
    owned = {
        "gateway": "openbank_ratelimit_",
        "payment": "openbank_payment",
        "settlement": "openbank_settlement_",
    }
    for process, text in metrics.items():
        for other, prefix in owned.items():
            if other != process:
                assert f"\n{prefix}" not in text and f"# HELP {prefix}" not in text, (process, prefix)
