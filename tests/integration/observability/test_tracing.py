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
        capture_output=True, text=True, timeout=180, check=False, cwd=Path(__file__).resolve().parents[3],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    assert probe["state"] == "PAYMENT_STATE_SETTLED"
    spans = probe["spans"]
    root = [s for s in spans if s["parent"] is None]
    assert len(root) == 1, [s["name"] for s in root]  # the gateway's server span starts the one trace
    trace_id = root[0]["trace_id"]
    assert {s["trace_id"] for s in spans} == {trace_id}
    names = [s["name"] for s in spans]

    def server_spans(method: str) -> list[dict]:
        return [s for s in spans if s["kind"] == "SERVER" and s["name"].endswith(method)]

    assert len(server_spans("PaymentService/CreatePayment")) == 2  # the gateway, then the payment service
    for hop in ("LedgerService/CreateTransfer", "LedgerService/PostTransfer",
                "PositionService/ReserveObligation", "PositionService/CommitObligation"):
        assert server_spans(hop), f"no server span for {hop}: {names}"
    assert sum(name == "db.transaction" for name in names) >= 6  # payment, account and settlement stores
    assert any(s["attributes"].get("payment.id") for s in spans)  # the saga's own step spans
    everything = json.dumps(spans)
    assert probe["token"] not in everything and "Bearer" not in everything
    # Logs written while serving the call carry its trace id.
    traced = [json.loads(line) for line in probe["logs"] if trace_id in line]
    assert traced and all(entry["trace_id"] == trace_id for entry in traced)
    assert probe["token"] not in "\n".join(probe["logs"])
