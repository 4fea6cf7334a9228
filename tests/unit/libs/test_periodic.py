"""meshlib.periodic: a job runs every interval; an interval of 0 switches it off (the services'
"0: never" settings rely on it)."""

from __future__ import annotations

import asyncio

import pytest

from meshlib.periodic import Periodic

pytestmark = pytest.mark.asyncio


async def test_a_job_runs_each_interval_until_stopped() -> None:
    runs: list[int] = []

    async def job() -> None:
        runs.append(1)

    periodic = Periodic("test", 0.01, job)
    await periodic.start()
    await asyncio.sleep(0.1)
    await periodic.stop()
    counted = len(runs)
    await asyncio.sleep(0.05)
    assert counted >= 2 and len(runs) == counted


async def test_an_interval_of_zero_never_runs_the_job() -> None:
    runs: list[int] = []

    async def job() -> None:
        runs.append(1)

    periodic = Periodic("test", 0, job)
    await periodic.start()
    await asyncio.sleep(0.05)
    await periodic.stop()
    assert runs == []
