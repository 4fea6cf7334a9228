"""A service fetches identity's signing keys at start-up, not on its first call's path."""

from __future__ import annotations

import asyncio
from typing import Any

from meshlib.app import start_service
from meshlib.auth.testing import TestIssuer
from services.settlement.bootstrap import settlement_spec
from services.settlement.settings import SettlementSettings


async def test_a_started_service_has_fetched_the_keys_before_any_call(sqlite_url: str) -> None:
    issuer = TestIssuer(issuer="https://identity.openbank.local", audience="openbank-mesh")
    fetches = 0

    async def jwks() -> dict[str, Any]:
        nonlocal fetches
        fetches += 1
        return issuer.jwks

    server = await start_service(
        settlement_spec(identity=False), SettlementSettings(port=0, database_url=sqlite_url), jwks_fetcher=jwks
    )
    try:
        for _ in range(100):
            if fetches:
                break
            await asyncio.sleep(0.02)
        assert fetches == 1
        assert await server.runtime.verifier.keys.key(issuer.kid) is not None
        assert fetches == 1  # the first call's lookup found them
    finally:
        await server.stop(0)
