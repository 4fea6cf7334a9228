"""Every service's idempotency keys lead with request_id on PostgreSQL, so a batch lookup of
many request ids is an index probe per id even on statistics taken while the table was small."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from meshlib.idempotency import IdempotencyRepository, idempotency_table
from meshlib.storage import Database, SqlUnitOfWork
from meshlib.storage.migrations import upgrade_to_head
from services.account.bootstrap import VERSIONS_DIR as ACCOUNT
from services.identity.bootstrap import VERSIONS_DIR as IDENTITY
from services.payment.bootstrap import VERSIONS_DIR as PAYMENT
from services.settlement.bootstrap import VERSIONS_DIR as SETTLEMENT

SERVICES: dict[str, Path] = {"account": ACCOUNT, "identity": IDENTITY, "payment": PAYMENT, "settlement": SETTLEMENT}
keys = idempotency_table(sa.MetaData())


class KeysUnitOfWork(SqlUnitOfWork):
    def _bind(self, connection) -> None:  # type: ignore[no-untyped-def]
        self.idempotency = IdempotencyRepository(connection, keys)


async def _primary_key(database: Database) -> list[str]:
    async with database.engine.connect() as connection:
        return await connection.run_sync(
            lambda sync: sa.inspect(sync).get_pk_constraint("idempotency_keys")["constrained_columns"]
        )


@pytest.mark.parametrize("service", sorted(SERVICES))
async def test_the_key_leads_with_request_id_on_postgresql(database_url: str, service: str) -> None:
    database = Database(database_url)
    try:
        await upgrade_to_head(database, SERVICES[service], service)
        expected = ["request_id", "scope", "method"] if database.is_postgres else ["scope", "method", "request_id"]
        assert await _primary_key(database) == expected
    finally:
        await database.dispose()


async def test_a_batch_lookup_probes_the_index_by_request_id_on_fresh_statistics(database_url: str) -> None:
    database = Database(database_url)
    try:
        await upgrade_to_head(database, PAYMENT, "payment")
        now = dt.datetime.now(dt.UTC)
        async with database.engine.begin() as connection:
            await connection.execute(sa.text("ANALYZE idempotency_keys"))  # statistics of an empty table
        async with KeysUnitOfWork(database) as uow:
            await uow.idempotency.save_many("p1", "Create", [(uuid.uuid4().hex, "f", b"x") for _ in range(3000)], now)
            await uow.commit()
        query = (
            "SELECT request_id FROM idempotency_keys "
            "WHERE scope = 'p1' AND method = 'Create' AND request_id IN ('a', 'b', 'c')"
        )
        async with database.engine.connect() as connection:
            if database.is_postgres:
                plan = "\n".join(row[0] for row in await connection.execute(sa.text(f"EXPLAIN {query}")))
                probe = next(line for line in plan.splitlines() if "Index Cond" in line)
            else:  # SQLite probes the IN list on the (scope, method, request_id) key
                plan = "\n".join(
                    str(row[-1]) for row in await connection.execute(sa.text(f"EXPLAIN QUERY PLAN {query}"))
                )
                probe = plan
        assert "request_id" in probe, plan
    finally:
        await database.dispose()
