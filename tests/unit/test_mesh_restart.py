"""LocalMesh.restart fails at once, naming the process and its exit code, when the restarted
process dies while starting (as `up` does), instead of waiting out its readiness timeout."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest

from meshcli.mesh import LocalMesh
from tests.support.servers import free_port


async def test_a_replica_that_dies_at_start_up_fails_its_restart_at_once(tmp_path: Path) -> None:
    mesh = LocalMesh(tmp_path / "data", quiet=True)
    child = mesh.replica("account")
    child.port = free_port()  # nobody serves there
    child.replica = 2
    child.launch_env = {"PATH": "/usr/bin:/bin"}
    # The process it replaces, gone (SIGKILLed in the failure test).
    child.process = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    child.module = "services.no_such_service"  # dies while starting: python -m cannot find it
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"account-2 exited with code 1 while starting"):
        await mesh.restart(child, timeout=30)
    assert time.monotonic() - started < 10
