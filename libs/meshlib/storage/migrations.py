"""Versioned migrations per service, run with Alembic: at start-up (the local mesh, the
embedded default), or once per release by ``openbank-mesh migrate <service>`` (a Kubernetes
Job before the rollout; the deployments then only check the schema, :func:`require_migrated`).

Each service keeps only its revision files (``services/<name>/migrations/versions``); the
Alembic environment is shared and lives next to this module. On PostgreSQL an advisory
lock serialises concurrent upgrades, so several replicas (or a Job and a pod) can start at
once safely.
"""

from __future__ import annotations

import logging
import zlib
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection

from meshlib.storage.database import Database

log = logging.getLogger("meshlib.migrations")

_ENV_DIR = Path(__file__).parent / "alembic"


def alembic_config(versions_dir: Path, service: str) -> Config:
    """An Alembic config pointing at the shared environment and a service's revisions."""
    config = Config()
    config.set_main_option("script_location", str(_ENV_DIR))
    config.set_main_option("path_separator", "os")
    config.set_main_option("version_locations", str(versions_dir))
    config.set_main_option("version_table", f"alembic_version_{service}")
    config.attributes["service"] = service
    return config


async def upgrade_to_head(database: Database, versions_dir: Path, service: str) -> str | None:
    """Apply every pending revision; returns the revision the database is at afterwards."""
    config = alembic_config(versions_dir, service)

    def _upgrade(connection: Connection) -> str | None:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
        context = MigrationContext.configure(connection, opts={"version_table": f"alembic_version_{service}"})
        return context.get_current_revision()

    async with database.engine.connect() as connection:
        if database.is_postgres:
            # Session-level lock held across the upgrade; other replicas wait here.
            await connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _lock_key(service)})
            await connection.commit()
        try:
            async with connection.begin():
                revision = await connection.run_sync(_upgrade)
        finally:
            if database.is_postgres:
                await connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _lock_key(service)})
                await connection.commit()
    log.info("database at revision", extra={"revision": revision, "service": service})
    return revision


class SchemaBehind(RuntimeError):
    """The database is older than this version of the service needs: run its migration first."""


async def current_revision(database: Database, service: str) -> str | None:
    """The revision the database is at (None: never migrated)."""

    def _current(connection: Connection) -> str | None:
        context = MigrationContext.configure(connection, opts={"version_table": f"alembic_version_{service}"})
        return context.get_current_revision()

    async with database.engine.connect() as connection:
        return await connection.run_sync(_current)


async def require_migrated(database: Database, versions_dir: Path, service: str) -> str | None:
    """Start-up without migrating: the database must be at this version's head, or newer.

    Newer is fine (a migration Job of the next version ran first; its migrations only add,
    so this version keeps working until it is replaced); older refuses to start, naming the
    command that migrates it.
    """
    script = ScriptDirectory.from_config(alembic_config(versions_dir, service))
    head = script.get_current_head()
    current = await current_revision(database, service)
    if current == head:
        return current
    known = current is not None and current in {revision.revision for revision in script.walk_revisions()}
    if current is None or known:
        raise SchemaBehind(
            f"the {service} database is at {current or 'no revision'}, this version needs {head}: "
            f"run `openbank-mesh migrate {service}` (the migration Job) first"
        )
    log.info("database newer than this version", extra={"revision": current, "head": head, "service": service})
    return current


def head_revision(versions_dir: Path, service: str) -> str | None:
    """The newest revision a service ships."""
    return ScriptDirectory.from_config(alembic_config(versions_dir, service)).get_current_head()


def _lock_key(service: str) -> int:
    return zlib.crc32(f"openbank-migrations:{service}".encode()) & 0x7FFFFFFF
