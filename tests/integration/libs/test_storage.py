"""Storage on both stores: migrations, unit of work, idempotency, concurrent writers."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest
import sqlalchemy as sa
from google.protobuf import struct_pb2

from meshlib.errors import AlreadyExists, InvalidArgument
from meshlib.idempotency import IdempotencyRepository, fingerprint, idempotency_table, validate_request_id
from meshlib.storage import Database, SqlUnitOfWork, retry_on_conflict
from meshlib.storage.migrations import head_revision, upgrade_to_head

VERSIONS = Path(__file__).parent / "sample_migrations"
metadata = sa.MetaData()
notes = sa.Table(
    "notes", metadata, sa.Column("id", sa.String(64), primary_key=True), sa.Column("counter", sa.BigInteger)
)
keys = idempotency_table(metadata)


class NotesUnitOfWork(SqlUnitOfWork):
    def _bind(self, connection) -> None:  # type: ignore[no-untyped-def]
        self.idempotency = IdempotencyRepository(connection, keys)


@pytest.fixture
async def database(database_url: str):  # type: ignore[no-untyped-def]
    db = Database(database_url, pool_size=20)
    assert await upgrade_to_head(db, VERSIONS, "sample") == head_revision(VERSIONS, "sample") == "0001"
    try:
        yield db
    finally:
        await db.dispose()


async def test_migrations_are_versioned_and_rerunnable(database: Database) -> None:
    # A second run (another replica starting) is a no-op at the same revision.
    assert await upgrade_to_head(database, VERSIONS, "sample") == "0001"
    async with database.engine.connect() as connection:
        version = (await connection.execute(sa.text("SELECT version_num FROM alembic_version_sample"))).scalar()
    assert version == "0001"


async def test_concurrent_upgrades_from_several_replicas_are_safe(database_url: str) -> None:
    databases = [Database(database_url) for _ in range(3)]
    try:
        results = await asyncio.gather(*(upgrade_to_head(db, VERSIONS, "sample") for db in databases))
        assert results == ["0001"] * 3
    finally:
        for db in databases:
            await db.dispose()


async def test_unit_of_work_rolls_back_unless_committed(database: Database) -> None:
    async with NotesUnitOfWork(database) as uow:
        await uow.connection.execute(notes.insert().values(id="a", counter=1))
    async with NotesUnitOfWork(database) as uow:
        await uow.connection.execute(notes.insert().values(id="b", counter=1))
        await uow.commit()
    async with NotesUnitOfWork(database, read_only=True) as uow:
        ids = (await uow.connection.execute(sa.select(notes.c.id))).scalars().all()
    assert ids == ["b"]


async def test_durability_settings_are_on(database: Database) -> None:
    async with database.engine.connect() as connection:
        if database.is_sqlite:
            assert (await connection.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
            assert (await connection.exec_driver_sql("PRAGMA synchronous")).scalar() == 2  # FULL
        else:
            assert (await connection.exec_driver_sql("SHOW synchronous_commit")).scalar() == "on"


async def test_idempotency_replays_and_rejects_changed_payloads(database: Database) -> None:
    first = struct_pb2.Struct()
    first.update({"request_id": "r-1", "amount": 5})
    changed = struct_pb2.Struct()
    changed.update({"request_id": "r-1", "amount": 6})
    now = dt.datetime.now(dt.UTC)
    async with NotesUnitOfWork(database) as uow:
        assert await uow.idempotency.lookup("p1", "Create", "r-1", fingerprint(first)) is None
        await uow.idempotency.save("p1", "Create", "r-1", fingerprint(first), b"answer", now)
        await uow.commit()
    async with NotesUnitOfWork(database) as uow:
        assert await uow.idempotency.lookup("p1", "Create", "r-1", fingerprint(first)) == b"answer"
        with pytest.raises(AlreadyExists) as raised:
            await uow.idempotency.lookup("p1", "Create", "r-1", fingerprint(changed))
        assert raised.value.reason == "REQUEST_ID_REUSED"
        # Another partner's identical key is a different key.
        assert await uow.idempotency.lookup("p2", "Create", "r-1", fingerprint(first)) is None
        assert await uow.idempotency.purge(now + dt.timedelta(seconds=1)) == 1


def test_request_ids_are_validated() -> None:
    assert validate_request_id("pay-2026-11-22:0001") == "pay-2026-11-22:0001"
    for bad in ("", "x" * 65, "white space", "semi;colon"):
        with pytest.raises(InvalidArgument):
            validate_request_id(bad)


async def test_concurrent_increments_are_serialised_without_lost_updates(database: Database) -> None:
    async with NotesUnitOfWork(database) as uow:
        await uow.connection.execute(notes.insert().values(id="hot", counter=0))
        await uow.commit()

    async def increment() -> None:
        async def once() -> None:
            async with NotesUnitOfWork(database) as uow:
                query = sa.select(notes.c.counter).where(notes.c.id == "hot")
                if database.is_postgres:
                    query = query.with_for_update()
                value = (await uow.connection.execute(query)).scalar_one()
                await uow.connection.execute(notes.update().where(notes.c.id == "hot").values(counter=value + 1))
                await uow.commit()

        await retry_on_conflict(once)

    await asyncio.gather(*(increment() for _ in range(50)))
    async with NotesUnitOfWork(database, read_only=True) as uow:
        assert (await uow.connection.execute(sa.select(notes.c.counter))).scalar_one() == 50


async def test_sqlite_runs_on_the_loop_thread_and_writers_queue_in_process(tmp_path: Path) -> None:
    """No worker thread per connection; writers that await mid-transaction never block each other."""
    import threading

    db = Database(f"sqlite:///{tmp_path / 'inline.db'}")
    try:
        await upgrade_to_head(db, VERSIONS, "sample")
        threads_before = threading.active_count()
        async with NotesUnitOfWork(db) as uow:
            await uow.connection.execute(notes.insert().values(id="slow", counter=0))
            await uow.commit()

        async def writer(index: int) -> None:
            async with NotesUnitOfWork(db) as uow:
                await uow.connection.execute(notes.insert().values(id=f"n{index}", counter=index))
                await asyncio.sleep(0.01)  # another coroutine runs here while this one holds the write lock
                await uow.commit()

        async def reader() -> int:
            async with NotesUnitOfWork(db, read_only=True) as uow:
                return len((await uow.connection.execute(sa.select(notes.c.id))).all())

        results = await asyncio.wait_for(
            asyncio.gather(*(writer(i) for i in range(20)), *(reader() for _ in range(5))), timeout=10
        )
        assert all(isinstance(count, int) for count in results[20:])
        assert threading.active_count() == threads_before  # statements ran inline: no aiosqlite threads
        assert await reader() == 21
        assert not db.sqlite_writer.locked()
        with pytest.raises(sa.exc.IntegrityError):  # a failed write releases the writer slot
            async with NotesUnitOfWork(db) as uow:
                await uow.connection.execute(notes.insert().values(id="slow", counter=1))
        assert not db.sqlite_writer.locked()
        # A writer cancelled while it queues must not release the slot its holder still has.
        async with NotesUnitOfWork(db) as holder:
            waiter = asyncio.ensure_future(NotesUnitOfWork(db).__aenter__())
            await asyncio.sleep(0.01)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
            assert db.sqlite_writer.locked()
            await holder.connection.execute(notes.insert().values(id="held", counter=0))
            await holder.commit()
        assert not db.sqlite_writer.locked()
    finally:
        await db.dispose()
