"""Prometheus scrapes the metrics endpoint after real traffic and finds RED and business metrics."""

from __future__ import annotations

import asyncio
import urllib.request

import grpc
import pytest
from google.protobuf import wrappers_pb2
from prometheus_client.parser import text_string_to_metric_families

from meshlib import errors as e
from meshlib import metrics
from meshlib.grpc_errors import ErrorMappingInterceptor
from meshlib.metrics import MetricsInterceptor, start_metrics_server

SERVICE = "openbank.test.v1.ScrapeService"


async def _echo(request: wrappers_pb2.StringValue, context: grpc.aio.ServicerContext) -> wrappers_pb2.StringValue:
    if request.value == "bad":
        raise e.InvalidArgument.field("value", "bad")
    return request


async def _start_server() -> tuple[grpc.aio.Server, int]:
    """An echo server with the interceptor order MeshServer uses: metrics outside errors."""
    server = grpc.aio.server(
        interceptors=[MetricsInterceptor(process="scrape"), ErrorMappingInterceptor("scrape.openbank.dev")]
    )
    handler = grpc.unary_unary_rpc_method_handler(
        _echo,
        request_deserializer=wrappers_pb2.StringValue.FromString,
        response_serializer=wrappers_pb2.StringValue.SerializeToString,
    )
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, {"Echo": handler})])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


def _scrape(port: int) -> dict[str, list]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        text = response.read().decode()
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


@pytest.mark.integration
async def test_scrape_after_traffic_shows_red_and_business_metrics() -> None:
    endpoint = start_metrics_server(0, "127.0.0.1", process="scrape")
    server, port = await _start_server()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        echo = channel.unary_unary(
            f"/{SERVICE}/Echo",
            request_serializer=wrappers_pb2.StringValue.SerializeToString,
            response_deserializer=wrappers_pb2.StringValue.FromString,
        )
        for _ in range(3):
            await echo(wrappers_pb2.StringValue(value="ok"))
        with pytest.raises(grpc.aio.AioRpcError):
            await echo(wrappers_pb2.StringValue(value="bad"))
        metrics.record_coalesced_batch("test.batch", 3)

        samples = await asyncio.to_thread(_scrape, endpoint.port)
    finally:
        await channel.close()
        await server.stop(0)
        endpoint.stop()

    def value(name: str, **labels: str) -> float:
        matching = [s.value for s in samples.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items())]
        assert matching, f"{name} {labels} not scraped"
        return sum(matching)

    assert value("openbank_rpc_requests_total", service=SERVICE, method="Echo", code="OK") == 3
    assert value("openbank_rpc_requests_total", service=SERVICE, method="Echo", code="INVALID_ARGUMENT") == 1
    assert value("openbank_rpc_duration_seconds_count", service=SERVICE, method="Echo") == 4
    assert value("openbank_rpc_duration_seconds_bucket", service=SERVICE, method="Echo", le="+Inf") == 4
    assert value("openbank_rpc_in_flight", service=SERVICE, method="Echo") == 0
    assert value("openbank_coalesced_batch_items_sum", batch="test.batch") >= 3
    assert "process_resident_memory_bytes" in samples
    # Every shared name the dashboards and alerts may use is really exposed (each process's own
    # metrics are checked beside them).
    assert metrics.METRIC_NAMES <= set(samples)
    # Each sample says which process recorded it, the runtime's own figures too.
    assert {s.labels.get("process") for every in samples.values() for s in every} == {"scrape"}
