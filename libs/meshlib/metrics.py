"""Prometheus metrics: RED metrics per rpc and the mesh's business metrics.

Every process exposes what it records on ``OBM_METRICS_PORT``, each sample labelled with the
``process`` that recorded it (gateway, identity, account, payment, settlement), so a sum
over the mesh never counts one partner call twice (the gateway and the payment service both
serve ``PaymentService/CreatePayment``):

* RED per method, recorded by :class:`MetricsInterceptor` for all four call shapes:
  ``openbank_rpc_requests_total{process,service,method,code}``,
  ``openbank_rpc_duration_seconds{process,service,method}`` (histogram, 1 ms .. 10 s) and
  ``openbank_rpc_in_flight{process,service,method}``. ``service`` is the protobuf service.
* Business metrics: a family one process records lives on that process's own registry
  (:func:`owned_registry`), with the names it exposes in a ``METRIC_NAMES`` beside its code
  (``gateway.ratelimit.metrics``, ``services.payment.metrics``, ``services.settlement.metrics``);
  only that process exposes it (:func:`start_metrics_server`).

Install the interceptor outside ``ErrorMappingInterceptor`` (right after tracing) so that the
code it records is the one the caller sees; it also understands domain errors when placed
inside. Label values are bounded: methods come from registered handlers only (unknown methods
are not counted), states and decisions are enums, participants are settlement members.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from threading import Thread
from typing import Any

import grpc
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from meshlib import errors as e
from meshlib.grpc_errors import WrappingInterceptor, to_rpc_status, wrap_handler

# What every process records: the RED family, coalesced batches, and the process/platform/GC
# collectors of the default registry (so that a scrape also shows CPU, memory and file
# descriptors).
REGISTRY = CollectorRegistry(auto_describe=True)
for _collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
    REGISTRY.register(_collector)

# The label naming the process that recorded a sample.
PROCESS_LABEL = "process"
_OWNED: dict[str, CollectorRegistry] = {}


def owned_registry(process: str) -> CollectorRegistry:
    """The registry of the metric families only ``process`` records; only that process exposes it."""
    registry = _OWNED.get(process)
    if registry is None:
        registry = _OWNED[process] = CollectorRegistry(auto_describe=True)
    return registry

# 1 ms .. 10 s: in-memory answers sit in the first buckets, database writes and saga steps in
# the middle, a partner's 10 s upstream timeout in the last one.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# Probes and tooling call these constantly; counting them would drown the partner traffic.
DEFAULT_EXCLUDED_SERVICES = frozenset({"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"})


class RpcMetrics:
    """The RED metric family for rpcs, bound to one registry (tests pass a fresh one)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "openbank_rpc_requests",
            "Completed rpcs by the process serving them, service, method and final gRPC status code.",
            (PROCESS_LABEL, "service", "method", "code"),
            registry=registry,
        )
        self.duration = Histogram(
            "openbank_rpc_duration_seconds",
            "Server-side rpc duration, from the handler's start to its last response.",
            (PROCESS_LABEL, "service", "method"),
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "openbank_rpc_in_flight",
            "Rpcs being handled right now.",
            (PROCESS_LABEL, "service", "method"),
            registry=registry,
        )


RPC_METRICS = RpcMetrics(REGISTRY)


def split_method(full_method: str) -> tuple[str, str]:
    """``/pkg.Service/Method`` -> ``("pkg.Service", "Method")``."""
    service, _, method = full_method.lstrip("/").rpartition("/")
    return service or "unknown", method or "unknown"


def final_code(context: grpc.aio.ServicerContext) -> grpc.StatusCode:
    """The status the handler set (``set_code``/``abort``), OK when it set none."""
    try:
        code = context.code()
    except (AttributeError, NotImplementedError):  # pragma: no cover - very old grpc
        return grpc.StatusCode.OK
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(code, int):  # some grpc releases hand back the raw integer
        for status in grpc.StatusCode:
            if status.value[0] == code:
                return status
    return grpc.StatusCode.OK


def code_of(exc: BaseException, context: grpc.aio.ServicerContext) -> grpc.StatusCode:
    """The status code a failure turns into, however far out the interceptor sits."""
    if isinstance(exc, grpc.aio.AbortError):
        code = final_code(context)
        return grpc.StatusCode.UNKNOWN if code is grpc.StatusCode.OK else code
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):  # the caller went away mid-call
        return grpc.StatusCode.CANCELLED
    if isinstance(exc, e.MeshError):
        return to_rpc_status(exc, "")[0]
    # ErrorMappingInterceptor turns anything unexpected into INTERNAL; so do we.
    return grpc.StatusCode.INTERNAL


class MetricsInterceptor(WrappingInterceptor):
    """Records requests, errors, duration and in-flight calls per method (streams included)."""

    def __init__(
        self,
        metrics: RpcMetrics = RPC_METRICS,
        *,
        process: str = "openbank",
        excluded_services: Iterable[str] = DEFAULT_EXCLUDED_SERVICES,
    ) -> None:
        self._metrics = metrics
        self._process = process
        self._excluded = frozenset(excluded_services)

    def wrap(
        self, handler: grpc.RpcMethodHandler | None, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        """Count and time the call."""
        if handler is None:
            return handler  # unknown method: grpc answers UNIMPLEMENTED; not a label value we keep
        service, method = split_method(handler_call_details.method)
        if service in self._excluded:
            return handler
        return wrap_handler(handler, lambda behavior: self._wrap(behavior, service, method))

    def _wrap(self, behavior: Callable[..., Any], service: str, method: str) -> Callable[..., Any]:
        metrics = self._metrics
        process = self._process
        # The method's labelled series, looked up once rather than on every call.
        in_flight = metrics.in_flight.labels(process, service, method)
        duration = metrics.duration.labels(process, service, method)
        requests: dict[grpc.StatusCode, Any] = {}

        def finish(started: float, code: grpc.StatusCode) -> None:
            in_flight.dec()
            duration.observe(time.perf_counter() - started)
            counter = requests.get(code)
            if counter is None:
                counter = requests[code] = metrics.requests.labels(process, service, method, code.name)
            counter.inc()

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            in_flight.inc()
            started = time.perf_counter()
            try:
                response = await behavior(request, context)
            except BaseException as exc:
                finish(started, code_of(exc, context))
                raise
            finish(started, final_code(context))
            return response

        async def streaming(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            in_flight.inc()
            started = time.perf_counter()
            try:
                async for item in behavior(request, context):
                    yield item
            except BaseException as exc:
                finish(started, code_of(exc, context))
                raise
            finish(started, final_code(context))

        if getattr(behavior, "_meshlib_streaming", False):
            streaming._meshlib_streaming = True  # type: ignore[attr-defined]
            return streaming
        return unary


# --- Business metrics -------------------------------------------------------------------
# Module-level so any layer can record without wiring; each helper names its labels. A
# family with no sample yet is not exposed, so only a process that coalesces shows this one.

COALESCED_BATCH_ITEMS = Histogram(
    "openbank_coalesced_batch_items",
    "Items per coalesced batch (a batch rpc or a group commit), by batch kind: small batches under load "
    "mean each call's fixed cost is paid often.",
    ("batch",),
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
    registry=REGISTRY,
)

# The names alert rules and dashboards may use, as Prometheus exposes them (the shared ones;
# a process's own metrics list theirs beside them). Every one carries a ``process`` label.
METRIC_NAMES = frozenset(
    {
        "openbank_rpc_requests_total",
        "openbank_rpc_duration_seconds_bucket",
        "openbank_rpc_duration_seconds_count",
        "openbank_rpc_duration_seconds_sum",
        "openbank_rpc_in_flight",
        "openbank_coalesced_batch_items_bucket",
        "openbank_coalesced_batch_items_count",
        "openbank_coalesced_batch_items_sum",
    }
)


def record_coalesced_batch(batch: str, items: int) -> None:
    """Observe the size of one coalesced batch of kind ``batch`` as it leaves."""
    COALESCED_BATCH_ITEMS.labels(batch).observe(items)


# --- Exposition -------------------------------------------------------------------------


class ProcessExposition(Collector):
    """What one process exposes: the shared registry and its own, every sample labelled with it.

    A family without samples is left out, and so is a sample another process recorded
    (several services share one Python process only in tests).
    """

    def __init__(self, process: str, registries: Iterable[CollectorRegistry]) -> None:
        self._process = process
        self._registries = tuple(registries)

    def collect(self) -> Iterator[Metric]:
        """The families, relabelled."""
        process = self._process
        for registry in self._registries:
            for family in registry.collect():
                samples = []
                for sample in family.samples:
                    owner = sample.labels.get(PROCESS_LABEL)
                    if owner is None:
                        samples.append(sample._replace(labels={PROCESS_LABEL: process, **sample.labels}))
                    elif owner == process:
                        samples.append(sample)
                if samples:
                    family.samples = samples
                    yield family


def process_registry(process: str) -> CollectorRegistry:
    """A registry exposing what ``process`` records (see :class:`ProcessExposition`)."""
    exposed = CollectorRegistry(auto_describe=False)
    exposed.register(ProcessExposition(process, (REGISTRY, owned_registry(process))))
    return exposed


@dataclass
class MetricsEndpoint:
    """A running ``/metrics`` HTTP endpoint (a daemon thread); ``stop()`` closes it."""

    port: int
    _server: ThreadingHTTPServer
    _thread: Thread

    def stop(self) -> None:
        """Stop answering scrapes and release the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def start_metrics_server(
    port: int,
    host: str = "0.0.0.0",  # noqa: S104 - in a pod the scraper comes from another address
    registry: CollectorRegistry | None = None,
    *,
    process: str | None = None,
) -> MetricsEndpoint:
    """Serve metrics for Prometheus on ``host:port`` (port 0 picks a free one).

    With ``process``: what that process records (:func:`process_registry`); else ``registry``
    (default: the shared registry as it is).
    """
    if process is not None:
        registry = process_registry(process)
    server, thread = start_http_server(port, addr=host, registry=registry or REGISTRY)
    return MetricsEndpoint(port=server.server_address[1], _server=server, _thread=thread)
