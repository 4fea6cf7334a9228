"""Fixtures for settlement's integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import grpc
import pytest

from meshlib.app import start_service
from meshlib.auth.testing import TestIssuer
from meshlib.auth.verifier import static_jwks
from services.settlement.bootstrap import settlement_spec
from services.settlement.settings import SettlementSettings
from tests.integration.settlement.fake_ledger import serving_fake_ledger
from tests.integration.settlement.grpc_support import Mesh
from tests.integration.settlement.support import Layer, migrated_layer


@pytest.fixture
async def layer(database_url: str) -> AsyncIterator[Layer]:
    """The service layer on a fresh database (SQLite and PostgreSQL)."""
    built = await migrated_layer(database_url)
    try:
        yield built
    finally:
        await built.database.dispose()


@pytest.fixture
async def sqlite_layer(sqlite_url: str) -> AsyncIterator[Layer]:
    """The service layer on a fresh SQLite file only."""
    built = await migrated_layer(sqlite_url)
    try:
        yield built
    finally:
        await built.database.dispose()


@pytest.fixture
async def mesh(database_url: str) -> AsyncIterator[Mesh]:
    """A settlement service on port 0 (SQLite and PostgreSQL), trusting a TestIssuer."""
    async with running_settlement(database_url) as running:
        yield running


@asynccontextmanager
async def running_settlement(database_url: str, **overrides: object) -> AsyncIterator[Mesh]:
    """Start settlement in-process (without identity: a TestIssuer's tokens), yield its client
    side, stop it. Its ledger is a fake LedgerService (``mesh.ledger``) unless ``account_target``
    names another."""
    async with AsyncExitStack() as stack:
        ledger = None
        if "account_target" not in overrides:
            ledger, port = await stack.enter_async_context(serving_fake_ledger())
            overrides["account_target"] = f"127.0.0.1:{port}"
        issuer = TestIssuer()
        settings = SettlementSettings(
            port=0,
            database_url=database_url,
            service_name="settlement",
            token_issuer=issuer.issuer,
            token_audience=issuer.audience,
            **overrides,
        )
        server = await start_service(settlement_spec(identity=False), settings, jwks_fetcher=static_jwks(issuer.jwks))
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                yield Mesh(channel, issuer, ledger)
        finally:
            await server.stop(0)
