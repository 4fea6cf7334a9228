"""Fixtures of the payment integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from meshlib.storage import Database
from meshlib.storage.migrations import upgrade_to_head
from services.payment.bootstrap import VERSIONS_DIR


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    """A payment database at the newest revision, on each store (``database_url``)."""
    db = Database(database_url)
    await upgrade_to_head(db, VERSIONS_DIR, "payment")
    try:
        yield db
    finally:
        await db.dispose()
