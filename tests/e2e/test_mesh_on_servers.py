"""With DATABASE_URL and REDIS_URL set, the local mesh runs on PostgreSQL (a database per
service on that server) and Redis, and a payment still settles end to end."""

from __future__ import annotations

import asyncpg
import pytest

from meshcli.demo import run_journey
from meshcli.mesh import LocalMesh
from meshcli.operator import Operator
from meshcli.seed import seed_demo_data
from tests.support.servers import free_port

pytestmark = pytest.mark.e2e


async def test_the_mesh_uses_postgresql_and_redis_when_their_urls_are_set(
    tmp_path, postgres_srv, redis_url: str, key_prefix: str
) -> None:  # type: ignore[no-untyped-def]
    ports = {name: free_port() for name in ("identity", "account", "settlement", "payment", "gateway")}
    base = f"mesh{free_port()}"
    mesh = LocalMesh(
        tmp_path / "data",
        ports=ports,
        quiet=True,
        extra_env={
            "DATABASE_URL": postgres_srv.url_for(base),
            "REDIS_URL": redis_url,
            "OBM_INVALIDATION_CHANNEL": f"{key_prefix}inv",
            "OBM_RATELIMIT_KEY_PREFIX": f"{key_prefix}rl:",
        },
    )
    assert set(mesh.service_databases) == {"identity", "account", "payment", "settlement", "console"}
    await mesh.start()
    try:
        operator = Operator(mesh.data_dir, ports=ports)
        await seed_demo_data(operator, say=lambda _: None)
        await operator.close()
        result = await run_journey(mesh.data_dir, ports=ports, say=lambda _: None)
        assert dict(result.steps)["wallet top-up (EUR 25.00)"].endswith("SETTLED")
    finally:
        assert await mesh.stop(grace=10) == [0, 0, 0, 0, 0]
    connection = await asyncpg.connect(postgres_srv.admin_url)
    try:
        names = {r["datname"] for r in await connection.fetch("SELECT datname FROM pg_database")}
    finally:
        await connection.close()
    assert {f"{base}_{s}" for s in ("identity", "account", "payment", "settlement")} <= names
    assert not (mesh.data_dir / "account.db").exists()  # nothing fell back to SQLite
