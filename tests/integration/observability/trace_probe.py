"""Runs one partner payment through gateway -> payment -> account + settlement, all in this
process with an in-memory span exporter, and prints the spans and log lines as JSON.

A separate process because a tracer provider can be installed only once per process.
Usage: python -m tests.integration.observability.trace_probe <work dir>
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import grpc
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway.server import start_gateway
from gateway.settings import GatewaySettings
from meshlib.auth.testing import NeverRevoked
from meshlib.auth.verifier import static_jwks
from meshlib.logs import JsonFormatter
from meshlib.metrics import start_metrics_server
from meshlib.telemetry import configure_tracing
from openbank.payment.v1 import payment_pb2, payment_pb2_grpc
from tests.integration.payment.mesh import money, running_mesh, standard_mesh


async def main(work: Path) -> None:
    exporter = InMemorySpanExporter()
    configure_tracing("openbank-test", extra_processors=[SimpleSpanProcessor(exporter)])
    logs = io.StringIO()
    handler = logging.StreamHandler(logs)
    handler.setFormatter(JsonFormatter("mesh"))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    urls = {name: f"sqlite+aiosqlite:///{work / (name + '.db')}" for name in ("account", "settlement", "payment")}
    async with running_mesh(urls, metrics_interval_seconds=0.5) as mesh:
        await standard_mesh(mesh)
        servers = mesh.servers
        gateway = await start_gateway(
            GatewaySettings(
                port=0,
                identity_target="127.0.0.1:1",
                account_target=f"127.0.0.1:{servers['account'].port}",
                payment_target=f"127.0.0.1:{servers['payment'].port}",
                settlement_target=f"127.0.0.1:{servers['settlement'].port}",
            ),
            jwks_fetcher=static_jwks(mesh.issuer.jwks),
            revocation=NeverRevoked(),  # no identity here
            consents=mesh.consents,
        )
        metadata = mesh.partner("partner-1", "c1")
        exporter.clear()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            answer = await payment_pb2_grpc.PaymentServiceStub(channel).CreatePayment(
                payment_pb2.CreatePaymentRequest(
                    request_id=uuid.uuid4().hex,
                    debtor_account=f"accounts/{mesh.accounts['alice']}",
                    creditor_wallet="partners/partner-1",
                    amount=money(1_000),
                    type=payment_pb2.PAYMENT_TYPE_WALLET_TOP_UP,
                ),
                metadata=metadata,
                timeout=20,
            )
        metrics = await scrape_until(
            ["openbank_settlement_position_minor{", "openbank_payments_in_state{"], timeout_seconds=15
        )
        await gateway.stop(0)
    spans = [
        {
            "name": span.name,
            "trace_id": format(span.context.trace_id, "032x"),
            "span_id": format(span.context.span_id, "016x"),
            "parent": format(span.parent.span_id, "016x") if span.parent else None,
            "kind": span.kind.name,
            "attributes": {k: str(v) for k, v in (span.attributes or {}).items()},
        }
        for span in exporter.get_finished_spans()
    ]
    token = metadata[0][1].split()[1]
    print(
        json.dumps(
            {
                "state": payment_pb2.PaymentState.Name(answer.payment.state),
                "payment": answer.payment.name,
                "token": token,
                "spans": spans,
                "logs": logs.getvalue().splitlines(),
                "metrics": metrics,
            }
        )
    )


def _fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return answer.read().decode()


async def scrape_until(needles: list[str], timeout_seconds: float) -> str:
    """Scrape /metrics like Prometheus until the periodic gauges have been published."""
    endpoint = start_metrics_server(0)
    try:
        deadline = time.monotonic() + timeout_seconds
        while True:
            text = await asyncio.to_thread(_fetch, f"http://127.0.0.1:{endpoint.port}/metrics")
            if all(needle in text for needle in needles) or time.monotonic() > deadline:
                return text
            await asyncio.sleep(0.5)
    finally:
        endpoint.stop()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
