"""Shared fixtures: real Redis, real PostgreSQL (throwaway, on free ports) and SQLite.

With CI=true a server that cannot be started fails the run; elsewhere it skips.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tests.support.servers import (
    PostgresServer,
    RedisServer,
    ServerUnavailable,
    create_database,
    drop_database,
    postgres_server,
    redis_server,
)

IN_CI = os.environ.get("CI", "").lower() == "true"


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under ``-n 2 --dist loadfile`` (make test) each test module is one unit of work, so its
    module-scoped mesh starts on one worker only; here the browser tests are one unit too, so
    their session-wide mesh and Chromium start once. (``loadgroup`` marks cannot do it: xdist
    3.8 renames node ids in a way pytest 9 ignores.)"""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class ModuleScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "tests/browser/" if path.startswith("tests/browser/") else path

    return ModuleScheduling(config, log)


def _unavailable(error: ServerUnavailable) -> None:
    if IN_CI:
        pytest.fail(f"CI=true and a required server is missing: {error}")
    pytest.skip(str(error))


@pytest.fixture(scope="session")
def redis_srv() -> Iterator[RedisServer]:
    """A private Redis for the whole session."""
    try:
        with redis_server() as server:
            yield server
    except ServerUnavailable as error:
        _unavailable(error)


@pytest.fixture
def redis_url(redis_srv: RedisServer) -> str:
    """The Redis URL (tests namespace their keys with a unique prefix)."""
    return redis_srv.url


@pytest.fixture
def key_prefix() -> str:
    """A unique key prefix so tests sharing a Redis never collide."""
    return f"test:{uuid.uuid4().hex[:12]}:"


@pytest.fixture(scope="session")
def postgres_srv() -> Iterator[PostgresServer]:
    """A private PostgreSQL for the whole session."""
    try:
        with postgres_server() as server:
            yield server
    except ServerUnavailable as error:
        _unavailable(error)


@pytest.fixture
async def postgres_url(postgres_srv: PostgresServer) -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL database for one test."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    url = await create_database(postgres_srv, name)
    try:
        yield url
    finally:
        await drop_database(postgres_srv, name)


@pytest.fixture
def sqlite_url(tmp_path) -> str:  # type: ignore[no-untyped-def]
    """A fresh SQLite file for one test."""
    return f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path) -> AsyncIterator[str]:  # type: ignore[no-untyped-def]
    """Runs a test once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
        return
    server = request.getfixturevalue("postgres_srv")
    name = f"t_{uuid.uuid4().hex[:16]}"
    url = await create_database(server, name)
    try:
        yield url
    finally:
        await drop_database(server, name)
