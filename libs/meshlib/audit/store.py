"""A service's audit trail in its own database: appended with the change, chained by a sealer.

Records are written by the transaction that makes the change (:class:`AuditRepository`,
bound in the service's unit of work; one multi-row INSERT at commit), so a change that
rolls back leaves no record and a committed change always has one. Chaining them there
would make every writing transaction of a service wait on one shared row (the chain head)
until it commits; instead :meth:`AuditStore.seal` (run every second by every replica, one at
a time under the head's row lock) gives the committed records their sequence and hash, in
the order it finds them. Verification walks the sealed records in sequence order; records
not yet sealed are counted, not checked.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from opentelemetry import trace
from sqlalchemy.ext.asyncio import AsyncConnection

from meshlib.audit.chain import (
    CHAINED_FIELDS,
    GENESIS_HASH,
    Actor,
    ChainReport,
    ChainVerifier,
    actor_of,
    details_text,
    record_hash,
    timestamp_text,
)
from meshlib.auth.context import current_caller
from meshlib.logs import interaction_id_var
from meshlib.storage.bulk import BulkInsert
from meshlib.storage.database import Database, as_utc
from meshlib.storage.uow import SqlUnitOfWork

log = logging.getLogger("meshlib.audit")

CHAIN_NAME = "main"
SEAL_BATCH = 2000
VERIFY_CHUNK = 5000


@dataclass(frozen=True)
class AuditTables:
    """The two audit tables of one service's metadata."""

    records: sa.Table
    chain: sa.Table


def audit_tables(metadata: sa.MetaData) -> AuditTables:
    """The audit tables, declared once for every service's metadata (like the idempotency keys)."""
    records = sa.Table(
        "audit_records",
        metadata,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("service", sa.String(32), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(64), nullable=False),
        sa.Column("resource", sa.String(256), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("actor_kind", sa.String(16), nullable=False),
        sa.Column("client_id", sa.String(128), nullable=True),
        sa.Column("partner_id", sa.String(64), nullable=True),
        sa.Column("customer_id", sa.String(64), nullable=True),
        sa.Column("consent_id", sa.String(64), nullable=True),
        sa.Column("payment_id", sa.String(64), nullable=True),
        sa.Column("trace_id", sa.String(32), nullable=True),
        sa.Column("interaction_id", sa.String(128), nullable=True),
        sa.Column("details", sa.Text, nullable=False),
        sa.Column("chain_sequence", sa.BigInteger, nullable=True, unique=True),
        sa.Column("previous_hash", sa.String(64), nullable=True),
        sa.Column("record_hash", sa.String(64), nullable=True),
    )
    chain = sa.Table(
        "audit_chain",
        metadata,
        sa.Column("name", sa.String(16), primary_key=True),
        sa.Column("last_sequence", sa.BigInteger, nullable=False),
        sa.Column("last_hash", sa.String(64), nullable=False),
        sa.Column("purged_sequence", sa.BigInteger, nullable=False),
        sa.Column("purged_hash", sa.String(64), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    return AuditTables(records, chain)


def create_audit_tables(op: Any) -> None:
    """Migration helper: the audit tables, their indexes and the chain's genesis head."""
    op.create_table(
        "audit_records",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("service", sa.String(32), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(64), nullable=False),
        sa.Column("resource", sa.String(256), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("actor_kind", sa.String(16), nullable=False),
        sa.Column("client_id", sa.String(128), nullable=True),
        sa.Column("partner_id", sa.String(64), nullable=True),
        sa.Column("customer_id", sa.String(64), nullable=True),
        sa.Column("consent_id", sa.String(64), nullable=True),
        sa.Column("payment_id", sa.String(64), nullable=True),
        sa.Column("trace_id", sa.String(32), nullable=True),
        sa.Column("interaction_id", sa.String(128), nullable=True),
        sa.Column("details", sa.Text, nullable=False),
        sa.Column("chain_sequence", sa.BigInteger, nullable=True, unique=True),
        sa.Column("previous_hash", sa.String(64), nullable=True),
        sa.Column("record_hash", sa.String(64), nullable=True),
    )
    # Keyset pages, newest first, per filter an operator asks by.
    for column in ("partner_id", "consent_id", "payment_id", "actor", "occurred_at"):
        op.create_index(f"ix_audit_records_{column}", "audit_records", [column, "id"])
    unsealed = sa.text("chain_sequence IS NULL")
    op.create_index(
        "ix_audit_records_unsealed", "audit_records", ["id"], postgresql_where=unsealed, sqlite_where=unsealed
    )
    chain = op.create_table(
        "audit_chain",
        sa.Column("name", sa.String(16), primary_key=True),
        sa.Column("last_sequence", sa.BigInteger, nullable=False),
        sa.Column("last_hash", sa.String(64), nullable=False),
        sa.Column("purged_sequence", sa.BigInteger, nullable=False),
        sa.Column("purged_hash", sa.String(64), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.bulk_insert(chain, [_genesis()])


def _genesis() -> dict[str, Any]:
    return {
        "name": CHAIN_NAME,
        "last_sequence": 0,
        "last_hash": GENESIS_HASH,
        "purged_sequence": 0,
        "purged_hash": GENESIS_HASH,
        "updated_at": dt.datetime.now(dt.UTC),
    }


def drop_audit_tables(op: Any) -> None:
    """Migration helper: undo :func:`create_audit_tables`."""
    op.drop_table("audit_chain")
    op.drop_table("audit_records")


_CONTENT_COLUMNS = tuple(name for name in CHAINED_FIELDS)
_INSERTS: dict[int, BulkInsert] = {}


def _insert_for(table: sa.Table) -> BulkInsert:
    insert = _INSERTS.get(id(table))
    if insert is None:
        insert = _INSERTS[id(table)] = BulkInsert(table, _CONTENT_COLUMNS)
    return insert


def _current_trace_id() -> str | None:
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


class AuditRepository:
    """Audit records of one transaction: collected by :meth:`record`, inserted at commit."""

    def __init__(self, connection: AsyncConnection, tables: AuditTables, service: str) -> None:
        self._connection = connection
        self._tables = tables
        self._service = service
        self._pending: list[tuple[Any, ...]] = []
        # Who and which call, worked out once per caller (a batch records many items).
        self._context_of: tuple[Any, Actor, str | None, str | None] | None = None
        # One time for the transaction's records (and one bind conversion for all of them).
        self._now: dt.datetime | None = None

    def record(
        self,
        action: str,
        resource: str,
        *,
        outcome: str = "OK",
        details: Mapping[str, Any] | None = None,
        actor: Actor | None = None,
        partner_id: str | None = None,
        customer_id: str | None = None,
        consent_id: str | None = None,
        payment_id: str | None = None,
        at: dt.datetime | None = None,
        trace_id: str | None = None,
    ) -> None:
        """Note a change made in this transaction. Who is the verified caller of the current
        call, and the call's trace and interaction ids are its own; the partner, customer and
        consent default to the caller's. ``actor`` is for work not done in the caller's own
        context (a group commit writes many callers' changes, a saga runs in the background):
        the current context's call is then not used, ``trace_id`` names the run."""
        if actor is not None:
            who, interaction_id = actor, None
        else:
            caller = current_caller()
            if self._context_of is None or self._context_of[0] is not caller:
                self._context_of = (
                    caller,
                    actor_of(caller, self._service),
                    _current_trace_id(),
                    interaction_id_var.get(),
                )
            _, who, call_trace_id, interaction_id = self._context_of
            trace_id = trace_id or call_trace_id
        if at is None:
            at = self._now = self._now or dt.datetime.now(dt.UTC)
        self._pending.append(
            (
                self._service,
                at,
                action,
                outcome,
                resource,
                who.subject,
                who.kind,
                who.client_id or None,
                partner_id or who.partner_id,
                customer_id or who.customer_id,
                consent_id or who.consent_id,
                payment_id,
                trace_id,
                interaction_id,
                details_text(details),
            )
        )

    @property
    def pending(self) -> int:
        """Records noted and not yet inserted."""
        return len(self._pending)

    async def flush(self) -> None:
        """Insert the noted records (the unit of work calls this just before it commits)."""
        if self._pending:
            rows, self._pending = self._pending, []
            await _insert_for(self._tables.records).execute(self._connection, rows)


class AuditUnitOfWork(SqlUnitOfWork):
    """A unit of work over the audit tables alone (sealing, verifying, reading, purging)."""

    def __init__(self, database: Database, tables: AuditTables, *, read_only: bool = False) -> None:
        super().__init__(database, read_only=read_only)
        self.tables = tables


@dataclass(frozen=True)
class AuditFilter:
    """What an operator asks for; empty fields do not filter."""

    partner_id: str = ""
    consent_id: str = ""
    payment_id: str = ""
    actor: str = ""
    action_prefix: str = ""
    start: dt.datetime | None = None
    end: dt.datetime | None = None


def row_content(row: Mapping[str, Any]) -> dict[str, Any]:
    """A stored row's chained content, as the chain hashes it."""
    content = {name: row[name] for name in CHAINED_FIELDS}
    content["occurred_at"] = timestamp_text(as_utc(row["occurred_at"]))
    return content


class AuditStore:
    """Seal, verify, read and purge one service's audit trail."""

    def __init__(self, database: Database, tables: AuditTables, service: str) -> None:
        self.database = database
        self.tables = tables
        self.service = service

    def _uow(self, *, read_only: bool = False) -> AuditUnitOfWork:
        return AuditUnitOfWork(self.database, self.tables, read_only=read_only)

    async def seal(self, limit: int = SEAL_BATCH) -> int:
        """Chain the committed records not yet sealed (oldest first); returns how many."""
        records, chain = self.tables.records, self.tables.chain
        async with self._uow(read_only=True) as uow:
            waiting = await uow.connection.scalar(
                sa.select(records.c.id).where(records.c.chain_sequence.is_(None)).limit(1)
            )
        if waiting is None:
            return 0
        async with self._uow() as uow:
            connection = uow.connection
            head_query = sa.select(chain.c.last_sequence, chain.c.last_hash).where(chain.c.name == CHAIN_NAME)
            if self.database.is_postgres:
                head_query = head_query.with_for_update()
            head = (await connection.execute(head_query)).one_or_none()
            if head is None:
                # A wiped store (tests) starts again from the genesis; a head deleted under a kept
                # chain still fails verification (its records then follow nothing).
                await connection.execute(chain.insert().values(**_genesis()))
                head = (await connection.execute(head_query)).one()
            rows = (
                (
                    await connection.execute(
                        sa.select(records).where(records.c.chain_sequence.is_(None)).order_by(records.c.id).limit(limit)
                    )
                )
                .mappings()
                .all()
            )
            sequence, previous = int(head.last_sequence), head.last_hash
            updates = []
            for row in rows:
                sequence += 1
                digest = record_hash(sequence, previous, row_content(row))
                updates.append({"b_id": row["id"], "b_seq": sequence, "b_prev": previous, "b_hash": digest})
                previous = digest
            if updates:
                await connection.execute(
                    records.update()
                    .where(records.c.id == sa.bindparam("b_id"))
                    .values(
                        chain_sequence=sa.bindparam("b_seq"),
                        previous_hash=sa.bindparam("b_prev"),
                        record_hash=sa.bindparam("b_hash"),
                    ),
                    updates,
                )
                await connection.execute(
                    chain.update()
                    .where(chain.c.name == CHAIN_NAME)
                    .values(last_sequence=sequence, last_hash=previous, updated_at=dt.datetime.now(dt.UTC))
                )
            await uow.commit()
        if updates:
            # The head in the log stream: the SIEM keeps anchors a rewrite of the chain cannot meet.
            log.info(
                "audit chain sealed",
                extra={
                    "audit_service": self.service,
                    "sealed": len(updates),
                    "head_sequence": sequence,
                    "head_hash": previous,
                },
            )
        return len(updates)

    async def verify(self, *, anchor: tuple[int, str] | None = None) -> ChainReport:
        """Check every sealed record kept against the chain and its head."""
        records, chain = self.tables.records, self.tables.chain
        async with self._uow(read_only=True) as uow:
            stored_head = (
                (await uow.connection.execute(sa.select(chain).where(chain.c.name == CHAIN_NAME)))
                .mappings()
                .one_or_none()
            )
            head = stored_head or {**_genesis(), "last_sequence": 2**62}
            unsealed = await uow.connection.scalar(
                sa.select(sa.func.count()).select_from(records).where(records.c.chain_sequence.is_(None))
            )
        verifier = ChainVerifier(int(head["purged_sequence"]), head["purged_hash"], anchor=anchor)
        after = -1
        while True:
            async with self._uow(read_only=True) as uow:
                rows = (
                    (
                        await uow.connection.execute(
                            sa.select(records)
                            .where(
                                records.c.chain_sequence.is_not(None),
                                records.c.chain_sequence > after,
                                records.c.chain_sequence <= head["last_sequence"],
                            )
                            .order_by(records.c.chain_sequence)
                            .limit(VERIFY_CHUNK)
                        )
                    )
                    .mappings()
                    .all()
                )
            for row in rows:
                verifier.feed(int(row["chain_sequence"]), row["previous_hash"], row["record_hash"], row_content(row))
            if len(rows) < VERIFY_CHUNK:
                break
            after = int(rows[-1]["chain_sequence"])
        if stored_head is None:
            report = verifier.finish()
            if report.checked:
                report.problem("the chain head is missing (deleted)")
        else:
            report = verifier.finish(int(head["last_sequence"]), head["last_hash"])
        report.unsealed = int(unsealed or 0)
        return report

    async def page(self, filters: AuditFilter, *, before_id: int | None, limit: int) -> list[dict[str, Any]]:
        """Records matching ``filters``, newest first, older than ``before_id`` (a keyset page)."""
        records = self.tables.records
        conditions = []
        for column, value in (
            (records.c.partner_id, filters.partner_id),
            (records.c.consent_id, filters.consent_id),
            (records.c.payment_id, filters.payment_id),
            (records.c.actor, filters.actor),
        ):
            if value:
                conditions.append(column == value)
        if filters.action_prefix:
            conditions.append(records.c.action.startswith(filters.action_prefix, autoescape=True))
        if filters.start is not None:
            conditions.append(records.c.occurred_at >= filters.start)
        if filters.end is not None:
            conditions.append(records.c.occurred_at < filters.end)
        if before_id is not None:
            conditions.append(records.c.id < before_id)
        query = sa.select(records).where(*conditions).order_by(records.c.id.desc()).limit(limit)
        async with self._uow(read_only=True) as uow:
            rows = (await uow.connection.execute(query)).mappings().all()
        return [dict(row) for row in rows]

    async def purge(self, older_than: dt.datetime) -> int:
        """Delete the oldest sealed records made before ``older_than`` (a prefix of the chain:
        the head remembers the last one purged, so verification still starts from a known hash)."""
        records, chain = self.tables.records, self.tables.chain
        async with self._uow() as uow:
            connection = uow.connection
            head_query = sa.select(chain).where(chain.c.name == CHAIN_NAME)
            if self.database.is_postgres:
                head_query = head_query.with_for_update()
            head = (await connection.execute(head_query)).mappings().one_or_none()
            if head is None:
                return 0
            first_kept = await connection.scalar(
                sa.select(sa.func.min(records.c.chain_sequence)).where(
                    records.c.chain_sequence.is_not(None), records.c.occurred_at >= older_than
                )
            )
            through = int(head["last_sequence"]) if first_kept is None else int(first_kept) - 1
            if through <= int(head["purged_sequence"]):
                return 0
            last_hash = await connection.scalar(
                sa.select(records.c.record_hash).where(records.c.chain_sequence == through)
            )
            if last_hash is None:
                return 0
            deleted = await connection.execute(
                records.delete().where(records.c.chain_sequence.is_not(None), records.c.chain_sequence <= through)
            )
            await connection.execute(
                chain.update()
                .where(chain.c.name == CHAIN_NAME)
                .values(purged_sequence=through, purged_hash=last_hash, updated_at=dt.datetime.now(dt.UTC))
            )
            await uow.commit()
        count = int(deleted.rowcount or 0)
        log.info("audit records purged", extra={"audit_service": self.service, "purged": count, "through": through})
        return count
