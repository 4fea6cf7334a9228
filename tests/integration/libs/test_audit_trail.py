"""meshlib.audit on both stores: records written in the change's transaction, chained by the
sealer, and any edit, deletion or reordering of a sealed record found by verify."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import sqlalchemy as sa

from meshlib.audit import AuditFilter, AuditRepository, AuditStore, audit_tables
from meshlib.auth.context import Caller, reset_caller, set_caller
from meshlib.errors import FailedPrecondition
from meshlib.storage import Database, SqlUnitOfWork, Transactions
from meshlib.storage.migrations import upgrade_to_head

VERSIONS = Path(__file__).parent / "audit_migrations"
metadata = sa.MetaData()
notes = sa.Table("notes", metadata, sa.Column("id", sa.String(64), primary_key=True), sa.Column("text", sa.Text))
tables = audit_tables(metadata)
records = tables.records

OPERATOR = Caller(
    subject="service:operator",
    client_id="operator",
    scopes=frozenset({"identity:admin"}),
    token_id="t-1",
    expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5),
)


class NotesUnitOfWork(SqlUnitOfWork):
    def _bind(self, connection) -> None:  # type: ignore[no-untyped-def]
        self.audit = AuditRepository(connection, tables, "notes")
        self.before_commit(self.audit.flush)


@pytest.fixture
async def database(database_url: str):  # type: ignore[no-untyped-def]
    db = Database(database_url)
    await upgrade_to_head(db, VERSIONS, "audited")
    try:
        yield db
    finally:
        await db.dispose()


@pytest.fixture
def transactions(database: Database) -> Transactions[NotesUnitOfWork]:
    return Transactions(lambda read_only=False: NotesUnitOfWork(database, read_only=read_only))


@pytest.fixture
def store(database: Database) -> AuditStore:
    return AuditStore(database, tables, "notes")


async def write_note(transactions: Transactions[NotesUnitOfWork], note_id: str, *, fail: bool = False) -> None:
    async def operation(uow: NotesUnitOfWork) -> None:
        await uow.connection.execute(notes.insert().values(id=note_id, text="hello"))
        uow.audit.record("note.create", f"notes/{note_id}", partner_id="partner-1", details={"length": 5})
        if fail:
            raise FailedPrecondition("refused after the write")

    await transactions.run(operation)


async def rows(database: Database) -> list[dict]:  # type: ignore[type-arg]
    async with database.engine.connect() as connection:
        result = await connection.execute(sa.select(records).order_by(records.c.id))
        return [dict(row) for row in result.mappings()]


async def execute(database: Database, statement: sa.Executable) -> None:
    async with database.engine.begin() as connection:
        await connection.execute(statement)


async def sealed_chain(transactions: Transactions[NotesUnitOfWork], store: AuditStore, count: int = 5) -> None:
    for index in range(count):
        await write_note(transactions, f"n{index}")
    assert await store.seal() == count


async def test_a_record_is_committed_with_its_change_and_a_rolled_back_change_leaves_none(
    transactions: Transactions[NotesUnitOfWork], database: Database
) -> None:
    token = set_caller(OPERATOR)
    try:
        await write_note(transactions, "kept")
        with pytest.raises(FailedPrecondition):
            await write_note(transactions, "dropped", fail=True)
    finally:
        reset_caller(token)
    stored = await rows(database)
    assert [(r["action"], r["resource"]) for r in stored] == [("note.create", "notes/kept")]
    # Who, from the verified caller: the operator's token, not a request field.
    assert (stored[0]["actor"], stored[0]["actor_kind"], stored[0]["client_id"]) == (
        "service:operator",
        "operator",
        "operator",
    )
    assert stored[0]["partner_id"] == "partner-1"
    assert stored[0]["chain_sequence"] is None  # committed, not yet sealed


async def test_background_work_is_recorded_as_the_service_itself(
    transactions: Transactions[NotesUnitOfWork], database: Database
) -> None:
    await write_note(transactions, "n1")
    (stored,) = await rows(database)
    assert (stored["actor"], stored["actor_kind"]) == ("system:notes", "system")


async def test_a_sealed_chain_verifies(transactions: Transactions[NotesUnitOfWork], store: AuditStore) -> None:
    await sealed_chain(transactions, store)
    await write_note(transactions, "late")
    report = await store.verify()
    assert report.intact, report.problems
    assert (report.checked, report.unsealed, report.head_sequence) == (5, 1, 5)
    assert await store.seal() == 1
    report = await store.verify(anchor=(5, report.head_hash))
    assert report.intact and report.head_sequence == 6


async def test_an_edited_record_is_detected(
    transactions: Transactions[NotesUnitOfWork], store: AuditStore, database: Database
) -> None:
    await sealed_chain(transactions, store)
    await execute(database, records.update().where(records.c.chain_sequence == 3).values(actor="someone-else"))
    report = await store.verify()
    assert not report.intact
    assert report.problems == ["record 3: hash mismatch (edited)"]


async def test_a_deleted_record_is_detected(
    transactions: Transactions[NotesUnitOfWork], store: AuditStore, database: Database
) -> None:
    await sealed_chain(transactions, store)
    await execute(database, records.delete().where(records.c.chain_sequence == 2))
    report = await store.verify()
    assert not report.intact
    assert "record 2 missing (deleted) before record 3" in report.problems


async def test_the_last_record_deleted_is_detected_by_the_head(
    transactions: Transactions[NotesUnitOfWork], store: AuditStore, database: Database
) -> None:
    await sealed_chain(transactions, store)
    await execute(database, records.delete().where(records.c.chain_sequence == 5))
    report = await store.verify()
    assert not report.intact
    assert "records at the end deleted" in report.problems[0]


async def test_reordered_records_are_detected(
    transactions: Transactions[NotesUnitOfWork], store: AuditStore, database: Database
) -> None:
    await sealed_chain(transactions, store)
    # Swap the places of records 2 and 4 (their sequence numbers), leaving every field intact.
    await execute(database, records.update().where(records.c.chain_sequence == 2).values(chain_sequence=-2))
    await execute(database, records.update().where(records.c.chain_sequence == 4).values(chain_sequence=2))
    await execute(database, records.update().where(records.c.chain_sequence == -2).values(chain_sequence=4))
    report = await store.verify()
    assert not report.intact
    assert any("record 2" in problem for problem in report.problems)


async def test_a_rewritten_chain_is_detected_against_an_anchor(
    transactions: Transactions[NotesUnitOfWork], store: AuditStore, database: Database
) -> None:
    await sealed_chain(transactions, store)
    anchor = (await store.verify()).head_hash
    # An attacker with write access edits record 5 and recomputes its hash and the head.
    from meshlib.audit.chain import record_hash
    from meshlib.audit.store import row_content

    row = next(r for r in await rows(database) if r["chain_sequence"] == 5)
    row["outcome"] = "FORGED"
    forged = record_hash(5, row["previous_hash"], row_content(row))
    await execute(
        database, records.update().where(records.c.id == row["id"]).values(outcome="FORGED", record_hash=forged)
    )
    await execute(database, tables.chain.update().values(last_hash=forged))
    assert (await store.verify()).intact  # self-consistent again...
    report = await store.verify(anchor=(5, anchor))  # ...but not with the head the SIEM kept
    assert report.problems == ["record 5: hash differs from the anchor kept (chain rewritten)"]


async def test_records_are_found_by_filter_newest_first_and_paginated(
    transactions: Transactions[NotesUnitOfWork], store: AuditStore
) -> None:
    token = set_caller(OPERATOR)
    try:
        await sealed_chain(transactions, store, count=3)
    finally:
        reset_caller(token)
    await write_note(transactions, "by-the-system")
    first = await store.page(AuditFilter(actor="service:operator"), before_id=None, limit=2)
    assert [r["resource"] for r in first] == ["notes/n2", "notes/n1"]
    rest = await store.page(AuditFilter(actor="service:operator"), before_id=first[-1]["id"], limit=2)
    assert [r["resource"] for r in rest] == ["notes/n0"]
    assert (
        len(await store.page(AuditFilter(partner_id="partner-1", action_prefix="note."), before_id=None, limit=10)) == 4
    )
    future = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    assert await store.page(AuditFilter(start=future), before_id=None, limit=10) == []


async def test_retention_purges_a_prefix_and_the_rest_still_verifies(
    transactions: Transactions[NotesUnitOfWork], store: AuditStore, database: Database
) -> None:
    cutoff = dt.datetime.now(dt.UTC)
    for index in range(4):
        await write_note(transactions, f"old{index}")
    # Made a day before the cutoff (changed before sealing, so the chain hashes these times).
    await execute(database, records.update().values(occurred_at=cutoff - dt.timedelta(days=1)))
    await write_note(transactions, "new")
    assert await store.seal() == 5
    assert await store.purge(cutoff) == 4
    report = await store.verify()
    assert report.intact, report.problems
    assert (report.checked, report.head_sequence) == (1, 5)
    assert await store.purge(cutoff) == 0
    # Deleting what retention kept is still detected.
    await execute(database, records.delete())
    assert not (await store.verify()).intact


async def test_the_verify_command_reads_a_database_directly(
    transactions: Transactions[NotesUnitOfWork], store: AuditStore, database: Database, database_url: str
) -> None:
    import io

    from meshcli.audit import run_audit_command
    from meshcli.main import build_parser

    async def verify_command() -> tuple[int, str]:
        out = io.StringIO()
        args = build_parser().parse_args(["audit", "verify", "--database", database_url])
        return await run_audit_command(args, out), out.getvalue()

    await sealed_chain(transactions, store, count=3)
    code, text = await verify_command()
    assert code == 0 and "database: intact, 3 records checked" in text
    await execute(database, records.update().where(records.c.chain_sequence == 2).values(outcome="FAILED"))
    code, text = await verify_command()
    assert code == 1 and "record 2: hash mismatch (edited)" in text


async def test_a_deleted_chain_head_is_detected_and_a_wiped_store_starts_again(
    transactions: Transactions[NotesUnitOfWork], store: AuditStore, database: Database
) -> None:
    await sealed_chain(transactions, store, count=2)
    await execute(database, tables.chain.delete())
    report = await store.verify()
    assert report.problems == ["the chain head is missing (deleted)"]
    await execute(database, records.delete())
    await write_note(transactions, "after-wipe")
    assert await store.seal() == 1
    report = await store.verify()
    assert report.intact and report.head_sequence == 1
