"""The audit record is written on the event loop's next turn, after the answer, with the call's ids."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator

import pytest

from gateway.audit import _emit, audit_log
from meshlib.logs import JsonFormatter, interaction_id_var


class _Lines(logging.Handler):
    """Formats each record as it is emitted, as the process's stderr handler does."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(JsonFormatter("gateway"))
        self.lines: list[dict[str, object]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


@pytest.fixture
def audit_lines() -> Iterator[_Lines]:
    handler = _Lines()
    level = audit_log.level
    audit_log.addHandler(handler)
    audit_log.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        audit_log.removeHandler(handler)
        audit_log.setLevel(level)


async def test_a_record_is_written_after_the_call_with_its_own_interaction_id(audit_lines: _Lines) -> None:
    async def call(interaction_id: str) -> int:
        interaction_id_var.set(interaction_id)
        _emit({"method": "/x.v1.S/M", "decision": "allowed", "status": "OK"}, time.perf_counter())
        # Still inside the call: grpc starts sending the answer before the loop's next turn.
        return len(audit_lines.lines)

    assert await asyncio.gather(call("first-call"), call("second-call")) == [0, 0]
    await asyncio.sleep(0)
    assert [(line["interaction_id"], line["status"]) for line in audit_lines.lines] == [
        ("first-call", "OK"),
        ("second-call", "OK"),
    ]
    assert all(isinstance(line["latency_ms"], float) for line in audit_lines.lines)


def test_without_a_running_loop_the_record_is_written_at_once(audit_lines: _Lines) -> None:
    _emit({"method": "/x.v1.S/M", "decision": "unknown_method", "status": "UNIMPLEMENTED"}, time.perf_counter())
    assert [line["status"] for line in audit_lines.lines] == ["UNIMPLEMENTED"]
