"""A trace backend for tests: an OTLP/gRPC receiver that keeps every span it is sent.

Processes started with ``OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:<port>`` export to it
exactly as they would to a collector. ``python -m tests.support.otlp SECONDS [SPANS.json]``
listens on a free port, prints it, then every 10 s (for SECONDS) how many traces and spans
have arrived so far by root span name, and at the end writes every span to SPANS.json: the
measurement behind "an idle mesh exports no traces".
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


@dataclasses.dataclass(frozen=True)
class ReceivedSpan:
    """One span as the backend stores it."""

    service: str
    name: str
    trace_id: str
    parent_span_id: str
    kind: int
    status_code: int
    events: tuple[str, ...]
    attributes: dict[str, Any]
    start_unix: float
    duration_ms: float


@dataclasses.dataclass
class TraceReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    """The OTLP TraceService: stores spans, answers success."""

    spans: list[ReceivedSpan] = dataclasses.field(default_factory=list)

    async def Export(self, request: Any, context: Any) -> Any:
        for resource_spans in request.resource_spans:
            service = next(
                (a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name"), ""
            )
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(
                        ReceivedSpan(
                            service=service,
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            kind=span.kind,
                            status_code=span.status.code,
                            events=tuple(event.name for event in span.events),
                            attributes={a.key: _value(a.value) for a in span.attributes},
                            start_unix=span.start_time_unix_nano / 1e9,
                            duration_ms=(span.end_time_unix_nano - span.start_time_unix_nano) / 1e6,
                        )
                    )
        return trace_service_pb2.ExportTraceServiceResponse()

    def traces(self) -> dict[str, list[ReceivedSpan]]:
        """Spans grouped by trace id."""
        grouped: dict[str, list[ReceivedSpan]] = collections.defaultdict(list)
        for span in self.spans:
            grouped[span.trace_id].append(span)
        return dict(grouped)

    def root_names(self) -> collections.Counter[str]:
        """How many root spans (traces started here) of each ``service: name``."""
        return collections.Counter(f"{s.service}: {s.name}" for s in self.spans if not s.parent_span_id)


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


async def start_receiver(host: str = "127.0.0.1") -> tuple[grpc.aio.Server, TraceReceiver, int]:
    """A running receiver on a free port: (server, receiver, port)."""
    receiver = TraceReceiver()
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    port = server.add_insecure_port(f"{host}:0")
    await server.start()
    return server, receiver, port


async def _measure(seconds: float, dump: str | None) -> None:
    server, receiver, port = await start_receiver()
    print(port, flush=True)
    loop = asyncio.get_running_loop()
    started = loop.time()
    while loop.time() - started < seconds:
        await asyncio.sleep(10)
        counts = {"traces": len(receiver.traces()), "spans": len(receiver.spans), "roots": receiver.root_names()}
        print(round(loop.time() - started), json.dumps(counts), flush=True)
    await server.stop(0)
    if dump:
        text = json.dumps([dataclasses.asdict(span) for span in receiver.spans], default=str)
        await asyncio.to_thread(Path(dump).write_text, text)


if __name__ == "__main__":
    asyncio.run(_measure(float(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else None))
