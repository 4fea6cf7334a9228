"""Two replicas claiming an outbox relay's lease at once, on both stores: one wins, none raises."""

from __future__ import annotations

import asyncio
import datetime as dt

import sqlalchemy as sa

from meshlib.outbox import claim_lease, relays_table
from meshlib.storage import Database

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
