"""The console's audit trail in a database every console replica shares (meshlib.audit).

Sign-ins, sign-outs and actions are queued by :meth:`ConsoleAuditTrail.append` (the use cases
are synchronous there) and written by a background task within a fraction of a second, or at
once by :meth:`flush`; an action's record is flushed before its answer goes back. One sealer
per replica chains the committed records under the chain head's row lock, as the services'
trails are chained, so several console pods make one chain. PostgreSQL in production
(``OBM_DATABASE_URL``, migrated by ``openbank-mesh migrate console``, a Job), a SQLite file in
the data directory for the local mesh.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bankweb.console.ports import AuditQuery, AuditRow
from meshlib.audit import Actor, AuditFilter, AuditRepository, AuditStore, ChainReport, audit_tables
from meshlib.audit.store import AuditUnitOfWork
from meshlib.storage.database import Database
from meshlib.storage.migrations import require_migrated, upgrade_to_head

log = logging.getLogger("bankweb.console.audit")

SERVICE = "console"
VERSIONS_DIR = Path(__file__).parent / "migrations" / "versions"
SEAL_INTERVAL_SECONDS = 1.0
WRITE_INTERVAL_SECONDS = 0.2


class ConsoleAuditTrail:
    """Append, seal, search and verify the console's trail."""

    def __init__(self, database: Database, *, seal_interval: float = SEAL_INTERVAL_SECONDS) -> None:
        self._database = database
        self._tables = audit_tables(sa.MetaData())
        self._store = AuditStore(database, self._tables, SERVICE)
        self._pending: list[dict[str, Any]] = []
        self._write_lock = asyncio.Lock()
        self._seal_interval = seal_interval
        self._task: asyncio.Task[None] | None = None

    async def start(self, *, migrate: bool) -> None:
        """Migrate (the local mesh) or check the schema (a Job migrated it), then run the writer."""
        if migrate:
            await upgrade_to_head(self._database, VERSIONS_DIR, SERVICE)
        else:
            await require_migrated(self._database, VERSIONS_DIR, SERVICE)
        self._task = asyncio.create_task(self._run(), name="console-audit")

    def append(self, content: dict[str, Any]) -> None:
        """Queue a record (``AuditFileWriter``'s content: action, outcome, resource, actor, ...)."""
        self._pending.append(content)

    async def flush(self) -> None:
        """Write every queued record in one transaction (kept queued if the database refuses)."""
        async with self._write_lock:
            if not self._pending:
                return
            rows, self._pending = self._pending, []
            try:
                async with AuditUnitOfWork(self._database, self._tables) as uow:
                    repository = AuditRepository(uow.connection, self._tables, SERVICE)
                    for row in rows:
                        repository.record(
                            str(row["action"]),
                            str(row["resource"]),
                            outcome=str(row["outcome"]),
                            details=row.get("details") or {},
                            actor=Actor(
                                str(row.get("actor_kind") or "operator"),
                                str(row["actor"]),
                                str(row.get("client_id") or ""),
                            ),
                            at=row.get("occurred_at") or dt.datetime.now(dt.UTC),
                        )
                    await repository.flush()
                    await uow.commit()
            except BaseException:
                self._pending[:0] = rows
                raise

    async def seal(self) -> int:
        """Chain what every replica committed and nobody sealed yet."""
        return await self._store.seal()

    async def verify(self) -> ChainReport:
        """Check the whole chain (every replica's records)."""
        return await self._store.verify()

    async def records(self, query: AuditQuery) -> list[AuditRow]:
        """Matching records, newest first (what was just done included)."""
        await self.flush()
        filters = AuditFilter(actor=query.actor, action_prefix=query.action, start=query.since)
        rows: list[AuditRow] = []
        before: int | None = None
        # Partner and payment match inside the resource name: filtered here, page by page.
        while len(rows) < query.limit:
            page = await self._store.page(filters, before_id=before, limit=200)
            for stored in page:
                row = _row(stored)
                if (not query.payment or query.payment in row.resource) and (
                    not query.partner or query.partner in row.resource
                ):
                    rows.append(row)
            if len(page) < 200:
                break
            before = int(page[-1]["id"])
        return rows[: query.limit]

    async def close(self) -> None:
        """Stop the writer; write and seal what is left."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            await self.flush()
            await self.seal()
        except Exception:
            log.exception("console audit records not written at shutdown", extra={"pending": len(self._pending)})

    async def _run(self) -> None:
        since_seal = 0.0
        while True:
            await asyncio.sleep(WRITE_INTERVAL_SECONDS)
            since_seal += WRITE_INTERVAL_SECONDS
            try:
                await self.flush()
                if since_seal >= self._seal_interval:
                    since_seal = 0.0
                    await self.seal()
            except Exception:
                # Kept queued; the next round retries (the log says the store is unreachable).
                log.exception("console audit store unavailable", extra={"pending": len(self._pending)})


def _row(stored: dict[str, Any]) -> AuditRow:
    try:
        details = json.loads(stored.get("details") or "{}")
    except ValueError:
        details = {}
    occurred = stored["occurred_at"]
    if occurred.tzinfo is None:
        occurred = occurred.replace(tzinfo=dt.UTC)
    return AuditRow(
        service=SERVICE,
        sequence=int(stored.get("chain_sequence") or 0),
        occur_time=occurred,
        action=str(stored["action"]),
        outcome=str(stored["outcome"]),
        resource=str(stored["resource"]),
        actor=str(stored["actor"]),
        actor_kind=str(stored["actor_kind"]),
        details=details if isinstance(details, dict) else {},
    )


def run_console_migration() -> int:
    """``openbank-mesh migrate console``: the trail's tables to this version, then exit (0 done)."""
    from bankweb.console.settings import ConsoleSettings
    from meshlib.logs import configure_logging

    settings = ConsoleSettings()
    configure_logging(SERVICE, settings.log_level, settings.log_format)

    async def migrate() -> str | None:
        database = Database(settings.audit_database_url(), pool_size=1, application_name="console-migrate")
        try:
            return await upgrade_to_head(database, VERSIONS_DIR, SERVICE)
        finally:
            await database.dispose()

    try:
        revision = asyncio.run(migrate())
    except Exception:
        log.exception("migration failed", extra={"service": SERVICE})
        return 1
    log.info("migrated", extra={"service": SERVICE, "revision": revision})
    return 0
