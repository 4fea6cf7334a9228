"""Outbox relays beside other replicas: two claiming a lease at once (one wins, none raises, on
both stores); a relay whose store is down logs one line and backs off."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging

import pytest
import sqlalchemy as sa

from meshlib.outbox import claim_lease, relays_table, run_ticks
from meshlib.storage import Database
from tests.support.servers import free_port

metadata = sa.MetaData()
relays = relays_table(metadata)
NOW = dt.datetime(2026, 12, 7, 20, 0, tzinfo=dt.UTC)
LEASE = dt.timedelta(seconds=30)


async def test_two_replicas_claiming_a_new_relay_together_one_wins_and_none_raises(postgres_url: str) -> None:
    # PostgreSQL only: SQLite's writers take the database in turn (BEGIN IMMEDIATE), so the
    # second claim cannot look before the first commits; the test below covers it.
    database = Database(postgres_url)
    try:
        async with database.engine.begin() as connection:
            await connection.run_sync(metadata.create_all)
        async with database.engine.connect() as first, database.engine.connect() as second:
            await first.begin()
            # The first replica created the row and has not committed yet when the second one
            # looks: it finds no row either, and its insert meets the first one's.
            assert await claim_lease(first, relays, "events", "replica-1", NOW, LEASE) == 0

            async def second_claim() -> int | None:
                async with second.begin():
                    return await claim_lease(second, relays, "events", "replica-2", NOW, LEASE)

            claiming = asyncio.ensure_future(second_claim())
            await asyncio.sleep(0.3)
            await first.commit()
            assert await asyncio.wait_for(claiming, 30) is None
        async with database.engine.connect() as connection:
            owner = await connection.scalar(sa.select(relays.c.owner).where(relays.c.name == "events"))
        assert owner == "replica-1"
    finally:
        await database.dispose()


async def test_many_replicas_claiming_at_start_up_leave_one_owner_per_relay(database_url: str) -> None:
    database = Database(database_url, pool_size=8)
    try:
        async with database.engine.begin() as connection:
            await connection.run_sync(metadata.create_all)

        async def claim(name: str, owner: str) -> int | None:
            async with database.engine.begin() as connection:
                return await claim_lease(connection, relays, name, owner, NOW, LEASE)

        for name in ("payments", "movements", "credit"):
            answers = await asyncio.gather(*(claim(name, f"replica-{i}") for i in range(4)))
            assert sorted(answers, key=lambda a: a is None) == [0, None, None, None], answers
    finally:
        await database.dispose()


async def test_a_relay_whose_store_is_down_logs_one_line_with_the_reason_and_backs_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # PostgreSQL nobody listens on: the driver's real connection refusal, as when it is stopped.
    database = Database(f"postgresql+asyncpg://obm:obm@127.0.0.1:{free_port()}/gone")
    rounds = 0

    async def tick() -> None:
        nonlocal rounds
        rounds += 1
        async with database.engine.begin() as connection:
            await claim_lease(connection, relays, "movements", "replica-1", NOW, LEASE)

    caplog.set_level(logging.WARNING, logger="meshlib.outbox")
    relaying = asyncio.ensure_future(run_ticks("account events relay", tick, 0.05))
    try:
        await asyncio.sleep(1.0)
    finally:
        relaying.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await relaying
        await database.dispose()
    records = [r for r in caplog.records if r.name == "meshlib.outbox"]
    assert [r.getMessage() for r in records] == ["account events relay: STORE_UNAVAILABLE; backing off"]
    assert records[0].exc_info is None
    assert 2 <= rounds <= 5  # 0.05, 0.1, 0.2, 0.4 s apart: backing off, not every 50 ms


async def test_a_relay_failing_on_a_bug_still_logs_its_traceback(caplog: pytest.LogCaptureFixture) -> None:
    async def tick() -> None:
        raise ValueError("a bug")

    caplog.set_level(logging.WARNING, logger="meshlib.outbox")
    relaying = asyncio.ensure_future(run_ticks("account events relay", tick, 0.05))
    await asyncio.sleep(0.2)
    relaying.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await relaying
    records = [r for r in caplog.records if r.name == "meshlib.outbox"]
    assert len(records) == 1 and records[0].exc_info is not None
