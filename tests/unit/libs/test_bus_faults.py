"""The invalidation bus without its Redis says so in one line per attempt, not a traceback each
time (a failover makes several); a bug still logs its traceback."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from meshlib.events import RedisBus
from tests.support.servers import free_port

pytestmark = pytest.mark.asyncio


async def _records_while_running(bus: RedisBus, caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    caplog.set_level(logging.WARNING, logger="meshlib.events")
    task = asyncio.create_task(bus._run())
    await asyncio.sleep(1.2)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return [record for record in caplog.records if "invalidation bus lost" in record.getMessage()]


async def test_a_redis_nobody_listens_on_is_one_line_per_attempt(caplog: pytest.LogCaptureFixture) -> None:
    bus = RedisBus(f"redis://127.0.0.1:{free_port()}/0", "test-bus")
    records = await _records_while_running(bus, caplog)
    assert records, "the lost bus was not logged"
    assert not any(record.exc_info for record in records)


async def test_a_bug_behind_the_bus_keeps_its_traceback(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    bus = RedisBus(f"redis://127.0.0.1:{free_port()}/0", "test-bus")

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(bus._redis, "pubsub", broken)
    records = await _records_while_running(bus, caplog)
    assert records and all(record.exc_info for record in records)
