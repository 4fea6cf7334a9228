"""The gateway's upstream pool metrics: replicas known, replicas out of rotation and ejections
per upstream, exposed with the gateway's process label; a replica a health probe finds serving
again leaves the ejected count."""

from __future__ import annotations

import asyncio
import time

import grpc
from grpc_health.v1 import health, health_pb2_grpc
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.upstream_metrics import METRIC_NAMES, REGISTRY
from gateway.upstreams import EjectionPolicy, UpstreamPool
from meshlib.metrics import process_registry


def _value(name: str, upstream: str) -> float:
    return REGISTRY.get_sample_value(name, {"upstream": upstream}) or 0.0


def _exposed() -> dict[tuple[str, str], float]:
    """(name, upstream) -> value of the upstream samples the gateway process exposes."""
    text = generate_latest(process_registry("gateway")).decode()
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in METRIC_NAMES:
                assert sample.labels["process"] == "gateway", sample
                found[sample.name, sample.labels["upstream"]] = sample.value
    return found


async def test_ejections_and_replicas_out_of_rotation_are_counted_per_upstream_and_exposed() -> None:
    server = grpc.aio.server()
    port = server.add_insecure_port("127.0.0.1:0")
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    await server.start()
    ejections = _value("openbank_upstream_ejections_total", "unit-account")
    pool = UpstreamPool(
        "unit-account",
        f"127.0.0.1:{port},127.0.0.1:1",
        lambda address, _tls_name: grpc.aio.insecure_channel(address),
        EjectionPolicy(failures_to_eject=2, base_ejection_seconds=0.05),
    )
    try:
        serving, dead = pool.replicas
        assert (
            _value("openbank_upstream_replicas", "unit-account"),
            _value("openbank_upstream_ejected_replicas", "unit-account"),
        ) == (2, 0)
        for replica in (dead, dead, serving, serving):
            pool.failed(replica)
        assert _value("openbank_upstream_ejected_replicas", "unit-account") == 2
        assert _value("openbank_upstream_ejections_total", "unit-account") == ejections + 2
        exposed = _exposed()
        assert exposed["openbank_upstream_ejected_replicas", "unit-account"] == 2
        assert exposed["openbank_upstream_replicas", "unit-account"] == 2
        assert exposed["openbank_upstream_ejections_total", "unit-account"] == ejections + 2
        # The replica that answers its health probe is back in rotation; the dead one stays out.
        deadline = time.monotonic() + 10
        while serving.ejected:
            assert time.monotonic() < deadline, "the serving replica was not probed back"
            await asyncio.sleep(0.02)
        assert _value("openbank_upstream_ejected_replicas", "unit-account") == 1
        assert dead.ejected and _value("openbank_upstream_ejections_total", "unit-account") == ejections + 2
    finally:
        await pool.close()
        await server.stop(None)
