"""Migrate-and-exit: ``openbank-mesh migrate <service>`` (and ``python -m services.<name>
migrate``) brings a database to the version's head and exits, as the release's Kubernetes
Job runs it; a service started without migrating refuses an older schema and accepts the
head or a newer one (the next version's Job ran first)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from meshlib.storage.database import Database
from meshlib.storage.migrations import SchemaBehind, head_revision, require_migrated
from services.account.bootstrap import SPEC as ACCOUNT

ROOT = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.integration


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
        env={**os.environ, "OBM_LOG_FORMAT": "console", **env},
    )


async def test_the_migrate_command_migrates_and_a_service_then_starts_on_it(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'account.db'}"
    database = Database(url)
    try:
        with pytest.raises(SchemaBehind, match="openbank-mesh migrate account"):
            await require_migrated(database, ACCOUNT.versions_dir, "account")  # never migrated
        # The URL as a mounted Secret file, as the Job reads it.
        (tmp_path / "database-url").write_text(url + "\n")
        done = run(
            ["-m", "meshcli.main", "migrate", "account"], {"OBM_DATABASE_URL_FILE": str(tmp_path / "database-url")}
        )
        assert done.returncode == 0, done.stderr[-2000:]
        head = head_revision(ACCOUNT.versions_dir, "account")
        assert f"revision={head}" in done.stderr
        assert await require_migrated(database, ACCOUNT.versions_dir, "account") == head
        # Running it again is a no-op (a Job may be retried).
        again = run(["-m", "services.account", "migrate"], {"OBM_DATABASE_URL": url})
        assert again.returncode == 0, again.stderr[-2000:]
        # The next release migrated ahead of these pods: they keep starting.
        async with database.engine.begin() as connection:
            await connection.execute(text("UPDATE alembic_version_account SET version_num = 'account_9999'"))
        assert await require_migrated(database, ACCOUNT.versions_dir, "account") == "account_9999"
        # An older schema is refused, naming the command.
        async with database.engine.begin() as connection:
            await connection.execute(text("UPDATE alembic_version_account SET version_num = 'account_0001'"))
        with pytest.raises(SchemaBehind, match=f"at account_0001, this version needs {head}"):
            await require_migrated(database, ACCOUNT.versions_dir, "account")
    finally:
        await database.dispose()


def test_a_failed_migration_exits_non_zero_with_its_cause(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from meshlib import app

    monkeypatch.setattr(app, "configure_logging", lambda *args: None)  # keep the test's own handlers
    monkeypatch.setenv("OBM_DATABASE_URL", "postgresql+asyncpg://openbank:x@127.0.0.1:1/account")
    assert app.run_migration(ACCOUNT) == 1
    assert "migration failed" in caplog.text
