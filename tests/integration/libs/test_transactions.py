"""meshlib.storage.Transactions on both stores: once per key, replays, retries, mapped errors."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import OperationalError

from meshlib.errors import Aborted, AlreadyExists, FailedPrecondition, NotFound
from meshlib.idempotency import IdempotencyRepository, idempotency_table
from meshlib.storage import Codec, CommitAndRaise, Database, IdempotencyKey, SqlUnitOfWork, Transactions
from meshlib.storage.idempotent import TRANSACTION_ATTEMPTS
from meshlib.storage.migrations import upgrade_to_head

VERSIONS = Path(__file__).parent / "sample_migrations"
metadata = sa.MetaData()
notes = sa.Table(
    "notes", metadata, sa.Column("id", sa.String(64), primary_key=True), sa.Column("counter", sa.BigInteger)
)
keys = idempotency_table(metadata)

COUNTER: Codec[int] = Codec.json(lambda value: {"counter": value}, lambda data: data["counter"])


class NotesUnitOfWork(SqlUnitOfWork):
    def _bind(self, connection) -> None:  # type: ignore[no-untyped-def]
        self.idempotency = IdempotencyRepository(connection, keys)


@pytest.fixture
async def database(database_url: str):  # type: ignore[no-untyped-def]
    db = Database(database_url, pool_size=20)
    await upgrade_to_head(db, VERSIONS, "sample")
    try:
        yield db
    finally:
        await db.dispose()


@pytest.fixture
def transactions(database: Database) -> Transactions[NotesUnitOfWork]:
    return Transactions(lambda read_only=False: NotesUnitOfWork(database, read_only=read_only))


def key(request_id: str = "r-1", fingerprint: str = "f-1") -> IdempotencyKey:
    return IdempotencyKey("partner-1", "Increment", request_id, fingerprint)


async def add_note(uow: NotesUnitOfWork, note_id: str, counter: int = 0) -> None:
    await uow.connection.execute(notes.insert().values(id=note_id, counter=counter))


async def increment(uow: NotesUnitOfWork, note_id: str = "hot") -> int:
    query = sa.select(notes.c.counter).where(notes.c.id == note_id).with_for_update()
    value = (await uow.connection.execute(query)).scalar_one() + 1
    await uow.connection.execute(notes.update().where(notes.c.id == note_id).values(counter=value))
    return value


async def counter(transactions: Transactions[NotesUnitOfWork], note_id: str = "hot") -> int:
    async def read(uow: NotesUnitOfWork) -> int:
        return (await uow.connection.execute(sa.select(notes.c.counter).where(notes.c.id == note_id))).scalar_one()

    return await transactions.read(read)


async def note_count(transactions: Transactions[NotesUnitOfWork]) -> int:
    async def read(uow: NotesUnitOfWork) -> int:
        return (await uow.connection.execute(sa.select(sa.func.count()).select_from(notes))).scalar_one()

    return await transactions.read(read)


async def test_a_keyed_operation_runs_once_and_a_repeat_replays_its_first_answer(
    transactions: Transactions[NotesUnitOfWork],
) -> None:
    await transactions.run(lambda uow: add_note(uow, "hot"))
    first = await transactions.run(increment, key=key(), codec=COUNTER)
    replayed = await transactions.run(increment, key=key(), codec=COUNTER)
    assert first == replayed == 1
    assert await counter(transactions) == 1
    # Another request id is another request.
    assert await transactions.run(increment, key=key("r-2"), codec=COUNTER) == 2


async def test_a_changed_payload_under_the_same_key_is_refused_without_running(
    transactions: Transactions[NotesUnitOfWork],
) -> None:
    await transactions.run(lambda uow: add_note(uow, "hot"))
    await transactions.run(increment, key=key(fingerprint="f-1"), codec=COUNTER)
    with pytest.raises(AlreadyExists) as refused:
        await transactions.run(increment, key=key(fingerprint="f-2"), codec=COUNTER)
    assert refused.value.reason == "REQUEST_ID_REUSED"
    assert refused.value.metadata["request_id"] == "r-1"
    assert await counter(transactions) == 1


async def test_a_failed_operation_saves_neither_change_nor_answer(transactions: Transactions[NotesUnitOfWork]) -> None:
    await transactions.run(lambda uow: add_note(uow, "hot"))

    async def increment_then_refuse(uow: NotesUnitOfWork) -> int:
        await increment(uow)
        raise NotFound("not today")

    with pytest.raises(NotFound):
        await transactions.run(increment_then_refuse, key=key(), codec=COUNTER)
    assert await counter(transactions) == 0
    # The key was not used up: the retry runs for real.
    assert await transactions.run(increment, key=key(), codec=COUNTER) == 1


async def test_a_twin_refused_by_the_state_the_first_left_answers_the_first_answer(
    transactions: Transactions[NotesUnitOfWork],
) -> None:
    """Both twins miss the key; the first locks the row and commits; the second, let through
    the lock, finds the work done and refuses: it must answer as the first did."""
    await transactions.run(lambda uow: add_note(uow, "hot"))

    async def increment_once(uow: NotesUnitOfWork) -> int:
        value = await increment(uow)
        if value != 1:
            raise FailedPrecondition("already incremented", reason="ALREADY_DONE")
        await asyncio.sleep(0.05)  # holds the row while the twin looks its key up
        return value

    answers = await asyncio.gather(*(transactions.run(increment_once, key=key(), codec=COUNTER) for _ in range(2)))
    assert answers == [1, 1]
    assert await counter(transactions) == 1
    with pytest.raises(FailedPrecondition):  # a new request is refused as before
        await transactions.run(increment_once, key=key("r-2"), codec=COUNTER)


async def test_commit_and_raise_keeps_the_writes_but_saves_no_answer(
    transactions: Transactions[NotesUnitOfWork],
) -> None:
    await transactions.run(lambda uow: add_note(uow, "hot"))

    async def count_then_refuse(uow: NotesUnitOfWork) -> int:
        await increment(uow)  # e.g. a failed attempt counted
        raise CommitAndRaise(NotFound("not today"))

    for expected in (1, 2):
        with pytest.raises(NotFound):
            await transactions.run(count_then_refuse, key=key(), codec=COUNTER)
        assert await counter(transactions) == expected  # kept, and the same key ran again
    assert await transactions.run(increment, key=key(), codec=COUNTER) == 3


async def test_a_transaction_without_a_key_commits_and_runs_every_time(
    transactions: Transactions[NotesUnitOfWork],
) -> None:
    await transactions.run(lambda uow: add_note(uow, "hot"))
    assert [await transactions.run(increment) for _ in range(3)] == [1, 2, 3]
    assert await counter(transactions) == 3
    with pytest.raises(TypeError):
        await transactions.run(increment, key=key())  # a key without a codec


async def test_a_locked_database_is_retried_with_backoff_then_aborted(
    transactions: Transactions[NotesUnitOfWork],
) -> None:
    await transactions.run(lambda uow: add_note(uow, "hot"))
    runs = 0

    def locked() -> OperationalError:
        return OperationalError("UPDATE notes", {}, sqlite3.OperationalError("database is locked"))

    async def locked_twice(uow: NotesUnitOfWork) -> int:
        nonlocal runs
        runs += 1
        value = await increment(uow)
        if runs <= 2:
            raise locked()
        return value

    assert await transactions.run(locked_twice, key=key(), codec=COUNTER) == 1
    assert runs == 3
    assert await counter(transactions) == 1  # the failed runs were rolled back

    async def always_locked(uow: NotesUnitOfWork) -> None:
        nonlocal runs
        runs += 1
        raise locked()

    runs = 0
    with pytest.raises(Aborted) as aborted:
        await transactions.run(always_locked)
    assert aborted.value.reason == "CONCURRENT_MODIFICATION"
    assert runs == TRANSACTION_ATTEMPTS


async def test_a_deadlock_is_retried_whole(database: Database, transactions: Transactions[NotesUnitOfWork]) -> None:
    """Two transactions lock two rows in opposite orders: PostgreSQL breaks the deadlock and
    the victim runs again (on SQLite the writers queue, so neither waits for the other)."""
    await transactions.run(lambda uow: add_note(uow, "a"))
    await transactions.run(lambda uow: add_note(uow, "b"))
    holding = {"a": asyncio.Event(), "b": asyncio.Event()}
    runs = 0

    def crosswise(first: str, second: str):  # type: ignore[no-untyped-def]
        async def operation(uow: NotesUnitOfWork) -> int:
            nonlocal runs
            runs += 1
            await increment(uow, first)
            holding[first].set()
            try:
                await asyncio.wait_for(holding[second].wait(), 0.5)
            except TimeoutError:
                pass  # SQLite: the other writer waits for this one
            return await increment(uow, second)

        return operation

    await asyncio.gather(transactions.run(crosswise("a", "b")), transactions.run(crosswise("b", "a")))
    assert await counter(transactions, "a") == await counter(transactions, "b") == 2
    assert runs == (3 if database.is_postgres else 2)


async def test_concurrent_increments_lose_no_update(transactions: Transactions[NotesUnitOfWork]) -> None:
    await transactions.run(lambda uow: add_note(uow, "hot"))
    await asyncio.gather(*(transactions.run(increment) for _ in range(30)))
    assert await counter(transactions) == 30


async def test_twin_first_requests_take_effect_once_and_answer_alike(
    database: Database, transactions: Transactions[NotesUnitOfWork]
) -> None:
    """Both twins miss the saved answer; the loser's save hits the unique key, its rerun replays."""
    inside = asyncio.Barrier(2)
    runs = 0

    async def add_once(uow: NotesUnitOfWork) -> int:
        nonlocal runs
        runs += 1
        await add_note(uow, f"note-{runs}", runs)
        try:
            await asyncio.wait_for(inside.wait(), 0.5)
        except TimeoutError:
            pass  # SQLite: the twin queues behind this writer and then replays
        return runs

    first, second = await asyncio.gather(
        transactions.run(add_once, key=key(), codec=COUNTER), transactions.run(add_once, key=key(), codec=COUNTER)
    )
    assert first == second
    assert await note_count(transactions) == 1
    assert runs == (2 if database.is_postgres else 1)


async def test_a_lasting_duplicate_is_already_exists_and_another_broken_rule_aborted(
    transactions: Transactions[NotesUnitOfWork],
) -> None:
    await transactions.run(lambda uow: add_note(uow, "taken"))
    runs = 0

    async def add_taken(uow: NotesUnitOfWork) -> None:
        nonlocal runs
        runs += 1
        await add_note(uow, "taken")

    with pytest.raises(AlreadyExists) as exists:
        await transactions.run(add_taken)
    assert exists.value.reason == "RESOURCE_ALREADY_EXISTS"
    assert runs == 3  # the first run and two reruns, in case it was a race

    async def add_without_counter(uow: NotesUnitOfWork) -> None:
        await uow.connection.execute(notes.insert().values(id="empty", counter=None))

    with pytest.raises(Aborted) as aborted:
        await transactions.run(add_without_counter)
    assert aborted.value.reason == "CONCURRENT_MODIFICATION"
