"""Fixtures: a running identity service on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.integration.identity.harness import Identity, ShiftableClock, start_identity, stop_identity


@pytest.fixture
async def identity(database_url: str) -> AsyncIterator[Identity]:
    """Identity on both stores, with a clock the test may move forward."""
    running = await start_identity(database_url, ShiftableClock())
    try:
        yield running
    finally:
        await stop_identity(running)
