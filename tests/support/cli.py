"""The operator CLI run as its own process against a running mesh, as an operator runs it."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path


async def run_cli(data_dir: Path, *args: str, timeout: float = 120) -> tuple[int, str]:
    """``openbank-mesh <args> --data-dir <data_dir>``: its exit code and its output (stdout and
    stderr together, as an operator's terminal shows them)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "meshcli.main",
        *args,
        "--data-dir",
        str(data_dir),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout)
    return await process.wait(), out.decode()
