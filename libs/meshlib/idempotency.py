"""Request idempotency (AIP-155) stored next to the data it protects.

A mutating call carries ``request_id``. The first successful answer is saved, in the same
transaction as the change, under (scope, method, request_id) together with a fingerprint
of the request. A replay with the same fingerprint gets the saved answer back; the same key
with a different payload fails ALREADY_EXISTS / ``REQUEST_ID_REUSED``. Keys are kept at
least :data:`RETENTION` and purged afterwards.

A batch rpc whose items carry their own keys reads and writes them set-based
(:meth:`IdempotencyRepository.lookup_many`, :meth:`IdempotencyRepository.save_many`): one
statement each, whatever the number of items, under the same (scope, method) as the
single rpc, so an item's key is shared with it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from google.protobuf.message import Message
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from meshlib.errors import AlreadyExists, InvalidArgument
from meshlib.storage.bulk import BulkInsert

RETENTION = dt.timedelta(hours=48)
REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def idempotency_table(metadata: sa.MetaData) -> sa.Table:
    """The idempotency-key table, declared once for every service's metadata.

    The key leads with request_id (see :func:`lead_key_with_request_id`).
    """
    return sa.Table(
        "idempotency_keys",
        metadata,
        sa.Column("scope", sa.String(128), nullable=False),
        sa.Column("method", sa.String(128), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("response", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.PrimaryKeyConstraint("request_id", "scope", "method", name="idempotency_keys_pkey"),
    )


def create_idempotency_table(op: Any) -> None:
    """Migration helper: create the table (use inside a service's first revision)."""
    op.create_table(
        "idempotency_keys",
        sa.Column("scope", sa.String(128), primary_key=True),
        sa.Column("method", sa.String(128), primary_key=True),
        sa.Column("request_id", sa.String(64), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("response", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"])


def lead_key_with_request_id(op: Any, *, undo: bool = False) -> None:
    """Migration helper: on PostgreSQL, make the primary key (request_id, scope, method)
    (``undo``: back to (scope, method, request_id), for a downgrade).

    Batch lookups ask for many request ids of one (scope, method). With the key led by scope
    and method, PostgreSQL's planner, on statistics taken while the table was small (a fresh
    or fast-growing table), used only the prefix in the index condition and filtered every key
    of the scope: 27-55 ms for 30 ids among 50,000 keys, against 0.7 ms once request_id leads
    (the only way into the index is then through the ids). SQLite's planner probes the IN list
    on the old key already, so SQLite keeps it.
    """
    if op.get_bind().dialect.name != "postgresql":
        return
    columns = "scope, method, request_id" if undo else "request_id, scope, method"
    op.execute(
        "ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_pkey, "
        f"ADD CONSTRAINT idempotency_keys_pkey PRIMARY KEY ({columns})"
    )


def validate_request_id(request_id: str, field: str = "request_id") -> str:
    """Check the key's shape; a missing or malformed key is INVALID_ARGUMENT naming the field."""
    if not request_id:
        raise InvalidArgument.field(field, "required: a client-chosen idempotency key")
    if not REQUEST_ID_PATTERN.match(request_id):
        raise InvalidArgument.field(field, "must be 1-64 characters of A-Z a-z 0-9 . _ : -")
    return request_id


def fingerprint(request: Message, *, ignore: tuple[str, ...] = ("request_id",)) -> str:
    """A stable hash of a request's payload, without the idempotency key itself."""
    copy = type(request)()
    copy.CopyFrom(request)
    for name in ignore:
        if name in copy.DESCRIPTOR.fields_by_name:
            copy.ClearField(name)
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()


def request_id_reused(request_id: str) -> AlreadyExists:
    """The error of a key replayed with a different payload (the one place it is built)."""
    return AlreadyExists(
        "request_id was already used with a different request",
        reason="REQUEST_ID_REUSED",
        metadata={"request_id": request_id},
    )


@dataclass(frozen=True, slots=True)
class SavedAnswer:
    """One saved key as :meth:`IdempotencyRepository.lookup_many` finds it."""

    request_id: str
    fingerprint: str
    response: bytes

    def answer_for(self, request_fingerprint: str) -> bytes:
        """The saved answer for a replay; REQUEST_ID_REUSED when the payload differs."""
        if self.fingerprint != request_fingerprint:
            raise request_id_reused(self.request_id)
        return self.response


@dataclass(frozen=True)
class _Statements:
    """One idempotency table's statements, built once and run with a parameter dict.

    A built statement keeps its cache key, so a call neither rebuilds the expression nor
    recomputes the key. Placeholder names are no column names (see ``sqlalchemy.bindparam``).
    """

    lookup: sa.Select[Any]
    save: sa.Insert
    purge: sa.Delete
    lookup_many: sa.Select[Any]
    save_many: BulkInsert


_STATEMENTS: dict[sa.Table, _Statements] = {}


def _statements(table: sa.Table) -> _Statements:
    statements = _STATEMENTS.get(table)
    if statements is None:
        c = table.c
        statements = _Statements(
            lookup=sa.select(c.fingerprint, c.response).where(
                c.scope == sa.bindparam("key_scope", type_=c.scope.type),
                c.method == sa.bindparam("key_method", type_=c.method.type),
                c.request_id == sa.bindparam("key_request_id", type_=c.request_id.type),
            ),
            save=table.insert(),
            purge=table.delete().where(c.created_at < sa.bindparam("older_than", type_=c.created_at.type)),
            lookup_many=sa.select(c.request_id, c.fingerprint, c.response).where(
                c.scope == sa.bindparam("key_scope", type_=c.scope.type),
                c.method == sa.bindparam("key_method", type_=c.method.type),
                c.request_id.in_(sa.bindparam("key_request_ids", expanding=True)),
            ),
            save_many=BulkInsert(table, ("scope", "method", "request_id", "fingerprint", "response", "created_at")),
        )
        _STATEMENTS[table] = statements
    return statements


class IdempotencyRepository:
    """Saved answers of mutating calls, inside the caller's transaction."""

    def __init__(self, connection: AsyncConnection, table: sa.Table) -> None:
        self._connection = connection
        self._table = table
        self._statements = _statements(table)

    async def lookup(self, scope: str, method: str, request_id: str, request_fingerprint: str) -> bytes | None:
        """The saved answer for a replay, None for a new key; raises on a changed payload."""
        row = (
            await self._connection.execute(
                self._statements.lookup, {"key_scope": scope, "key_method": method, "key_request_id": request_id}
            )
        ).first()
        if row is None:
            return None
        return SavedAnswer(request_id, row.fingerprint, bytes(row.response)).answer_for(request_fingerprint)

    async def lookup_many(self, scope: str, method: str, request_ids: Iterable[str]) -> dict[str, SavedAnswer]:
        """The saved keys among ``request_ids`` (one SELECT), by request id; new keys are absent.

        Unlike :meth:`lookup` it does not raise on a changed payload: the caller (a batch)
        answers each key with :meth:`SavedAnswer.answer_for`, so one reused key fails only
        its own item.
        """
        ids = sorted(set(request_ids))
        if not ids:
            return {}
        rows = await self._connection.execute(
            self._statements.lookup_many, {"key_scope": scope, "key_method": method, "key_request_ids": ids}
        )
        return {row.request_id: SavedAnswer(row.request_id, row.fingerprint, bytes(row.response)) for row in rows}

    async def save(
        self, scope: str, method: str, request_id: str, request_fingerprint: str, response: bytes, now: dt.datetime
    ) -> None:
        """Remember the answer; a concurrent duplicate makes the transaction fail and retry."""
        await self._connection.execute(
            self._statements.save,
            {
                "scope": scope,
                "method": method,
                "request_id": request_id,
                "fingerprint": request_fingerprint,
                "response": response,
                "created_at": now,
            },
        )

    async def save_many(
        self, scope: str, method: str, answers: Iterable[tuple[str, str, bytes]], now: dt.datetime
    ) -> None:
        """Remember many answers, ``(request_id, fingerprint, response)`` each, in one ``executemany``.

        As with :meth:`save`, a key saved concurrently makes the transaction fail (and retry).
        """
        await self._statements.save_many.execute(
            self._connection,
            [(scope, method, request_id, fingerprint, response, now) for request_id, fingerprint, response in answers],
        )

    async def purge(self, older_than: dt.datetime) -> int:
        """Forget keys older than the retention period."""
        result = await self._connection.execute(self._statements.purge, {"older_than": older_than})
        return result.rowcount or 0


def upsert(dialect: str) -> Any:
    """The dialect's INSERT ... ON CONFLICT constructor (for repositories that need it)."""
    return pg_insert if dialect == "postgresql" else sqlite_insert


def upsert_by_dialect(build: Callable[[Any], Any]) -> dict[str, Any]:
    """One prebuilt ``INSERT ... ON CONFLICT`` per dialect (``build`` gets the dialect's constructor)."""
    return {name: build(upsert(name)) for name in ("postgresql", "sqlite")}
