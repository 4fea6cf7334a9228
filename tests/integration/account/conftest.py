"""Fixtures of the account integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.integration.account.harness import AccountHarness, running_account_service


@pytest.fixture
async def harness(database_url: str) -> AsyncIterator[AccountHarness]:
    """The account service on SQLite and on PostgreSQL."""
    async with running_account_service(database_url) as running:
        yield running
