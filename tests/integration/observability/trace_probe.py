"""Runs one partner payment through gateway -> payment -> account + settlement, all in this
process with an in-memory span exporter, and prints the spans and log lines as JSON; before
it the mesh idles (its background loops at a fast pace) and the spans of that time are kept
apart; after it two calls a partner gets wrong (INVALID_ARGUMENT, NOT_FOUND). The metrics
are scraped as each process exposes them.

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
from typing import Any

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

# Long enough for every background loop to run at least twice at the test pace.
IDLE_SECONDS = 3.0


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
        # Idle: every loop (gauges every 0.5 s, recovery, sweeps, audit seals) runs a few times.
        exporter.clear()
        await asyncio.sleep(IDLE_SECONDS)
        idle_spans = [span.name for span in exporter.get_finished_spans()]
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
                metadata=(*metadata, ("x-fapi-interaction-id", "probe-payment")),
                timeout=20,
            )
            metrics = await scrape_until(
                {
                    "payment": ["openbank_payments_in_state{"],
                    "settlement": ["openbank_settlement_position_minor{"],
                    "gateway": ["openbank_ratelimit_decisions_total{"],
                    "account": ["openbank_rpc_requests_total{"],
                },
                timeout_seconds=15,
            )
            spans = describe(exporter.get_finished_spans())
            refusals = await refused_calls(payment_pb2_grpc.PaymentServiceStub(channel), metadata, exporter)
        await gateway.stop(0)
    token = metadata[0][1].split()[1]
    print(
        json.dumps(
            {
                "state": payment_pb2.PaymentState.Name(answer.payment.state),
                "payment": answer.payment.name,
                "token": token,
                "spans": spans,
                "idle_spans": idle_spans,
                "refusals": refusals,
                "logs": logs.getvalue().splitlines(),
                "metrics": metrics,
            }
        )
    )


def describe(spans: Any) -> list[dict[str, Any]]:
    """The spans as the tests read them."""
    return [
        {
            "name": span.name,
            "trace_id": format(span.context.trace_id, "032x"),
            "span_id": format(span.context.span_id, "016x"),
            "parent": format(span.parent.span_id, "016x") if span.parent else None,
            "kind": span.kind.name,
            "status": span.status.status_code.name,
            "events": [event.name for event in span.events],
            "attributes": {k: str(v) for k, v in (span.attributes or {}).items()},
        }
        for span in spans
    ]


async def refused_calls(
    payments: payment_pb2_grpc.PaymentServiceStub, metadata: Any, exporter: InMemorySpanExporter
) -> dict[str, Any]:
    """A payment without an amount (INVALID_ARGUMENT) and an unknown payment (NOT_FOUND): their
    codes and their spans."""
    exporter.clear()
    codes = {}
    for name, call in (
        (
            "invalid",
            payments.CreatePayment(
                payment_pb2.CreatePaymentRequest(
                    request_id=uuid.uuid4().hex,
                    creditor_wallet="partners/partner-1",
                    type=payment_pb2.PAYMENT_TYPE_WALLET_TOP_UP,
                ),
                metadata=metadata,
                timeout=20,
            ),
        ),
        ("unknown", payments.GetPayment(payment_pb2.GetPaymentRequest(name="payments/nope"), metadata=metadata)),
    ):
        try:
            await call
            codes[name] = "OK"
        except grpc.aio.AioRpcError as error:
            codes[name] = error.code().name
    return {"codes": codes, "spans": describe(exporter.get_finished_spans())}


def _fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return answer.read().decode()


async def scrape_until(needles: dict[str, list[str]], timeout_seconds: float) -> dict[str, str]:
    """Scrape each process's /metrics like Prometheus until the periodic gauges are published."""
    endpoints = {process: start_metrics_server(0, "127.0.0.1", process=process) for process in needles}
    try:
        deadline = time.monotonic() + timeout_seconds
        while True:
            texts = {
                process: await asyncio.to_thread(_fetch, f"http://127.0.0.1:{endpoint.port}/metrics")
                for process, endpoint in endpoints.items()
            }
            published = all(all(n in texts[p] for n in wanted) for p, wanted in needles.items())
            if published or time.monotonic() > deadline:
                return texts
            await asyncio.sleep(0.5)
    finally:
        for endpoint in endpoints.values():
            endpoint.stop()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
