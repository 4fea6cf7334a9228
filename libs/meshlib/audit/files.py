"""An audit trail in append-only JSON-lines files, hash-chained: the gateway's, one chain per
replica (the gateway keeps no database, and a decision must not wait on one).

Each line is one record: its ``sequence``, ``previous_hash`` and ``hash`` (as
:mod:`meshlib.audit.chain` computes them) and its content, ``details`` as a JSON object, so
a SIEM can ship the files as they are. A file per replica and UTC day
(``<replica>-<YYYYMMDD>.jsonl``); the chain runs on across files and restarts (the newest
file's last line is read back at start). Lines are written and fsynced every
``flush_seconds`` (a crash loses at most that much), never on a call's path. Retention
deletes whole old files and records what it deleted in the chain itself (an
``audit.purge`` record naming the last sequence and hash removed), so that lines cut from
the start of the kept files are still detected.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from meshlib.audit.chain import (
    CHAINED_FIELDS,
    GENESIS_HASH,
    ChainReport,
    ChainVerifier,
    details_text,
    record_hash,
    timestamp_text,
)

log = logging.getLogger("meshlib.audit")

_FILE_NAME = re.compile(r"^(?P<replica>[A-Za-z0-9._-]+)-(?P<day>\d{8})\.jsonl$")


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def safe_replica_name(name: str) -> str:
    """A replica name usable in a file name (a pod's host name usually is already)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)[:100] or "replica"


def replica_files(directory: Path, replica: str | None = None) -> dict[str, list[Path]]:
    """The audit files in ``directory`` by replica, oldest first."""
    found: dict[str, list[Path]] = {}
    if not directory.is_dir():
        return found
    for path in sorted(directory.iterdir()):
        match = _FILE_NAME.match(path.name)
        if match and (replica is None or match["replica"] == replica):
            found.setdefault(match["replica"], []).append(path)
    return found


def _line_content(line: dict[str, Any]) -> dict[str, Any]:
    content = {name: line.get(name) for name in CHAINED_FIELDS}
    content["details"] = details_text(line.get("details"))
    return content


class AuditFileWriter:
    """Appends chained records for one replica; :meth:`append` never blocks on the disk."""

    def __init__(
        self,
        directory: Path,
        replica: str,
        *,
        service: str = "gateway",
        flush_seconds: float = 0.2,
        retention_days: int = 0,
        clock: Callable[[], dt.datetime] = _utc_now,
    ) -> None:
        self.directory = directory
        self.replica = safe_replica_name(replica)
        self.service = service
        self._flush_seconds = flush_seconds
        self._retention_days = retention_days
        self._clock = clock
        self._sequence = 0
        self._hash = GENESIS_HASH
        self._buffer: list[tuple[dt.datetime, str]] = []
        self._task: asyncio.Task[None] | None = None
        self._lock_fd: int | None = None

    @property
    def head(self) -> tuple[int, str]:
        """The last sequence and hash appended."""
        return self._sequence, self._hash

    async def start(self) -> None:
        """Resume the chain from the newest file and start the background writer."""
        self.directory.mkdir(parents=True, exist_ok=True)
        # One writer per chain: a second writer with the same name (two gateways on one host,
        # or in one test process) starts its own chain, named with its pid (and a number).
        base, pid = self.replica, os.getpid()
        names = [base, f"{base}-{pid}", *(f"{base}-{pid}-{n}" for n in range(2, 100))]
        name = next((candidate for candidate in names if self._lock(candidate)), None)
        if name is None:
            raise RuntimeError(f"every audit chain name of {base} is in use")
        self.replica = name
        files = replica_files(self.directory, self.replica).get(self.replica, [])
        if files:
            last = await asyncio.to_thread(_last_complete_line, files[-1])
            if last is not None:
                self._sequence, self._hash = int(last["sequence"]), last["hash"]
        self._task = asyncio.create_task(self._run(), name=f"audit-file-{self.replica}")

    def _lock(self, replica: str) -> bool:
        fd = os.open(self.directory / f".{replica}.lock", os.O_WRONLY | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    def append(self, content: dict[str, Any]) -> None:
        """Chain one record (``content``: the chained fields, ``details`` a dict) and queue it."""
        moment = content.get("occurred_at") or self._clock()
        line = {name: content.get(name) for name in CHAINED_FIELDS}
        line["service"] = line["service"] or self.service
        line["occurred_at"] = timestamp_text(moment) if isinstance(moment, dt.datetime) else moment
        details = content.get("details") or {}
        self._sequence += 1
        digest = record_hash(self._sequence, self._hash, {**line, "details": details_text(details)})
        line["details"] = details
        entry = {"sequence": self._sequence, "previous_hash": self._hash, "hash": digest, **line}
        self._hash = digest
        self._buffer.append((self._clock(), json.dumps(entry, separators=(",", ":"), ensure_ascii=False, default=str)))

    async def flush(self) -> None:
        """Write and fsync what is queued (in the file of the day each line was queued)."""
        if not self._buffer:
            return
        lines, self._buffer = self._buffer, []
        by_file: dict[Path, list[str]] = {}
        for moment, text in lines:
            by_file.setdefault(self._path_for(moment), []).append(text)
        for path, texts in by_file.items():
            await asyncio.to_thread(_append_durably, path, "".join(t + "\n" for t in texts))

    def _path_for(self, moment: dt.datetime) -> Path:
        return self.directory / f"{self.replica}-{moment.astimezone(dt.UTC):%Y%m%d}.jsonl"

    async def purge(self) -> int:
        """Delete this replica's files older than the retention (never today's); returns how many."""
        if self._retention_days <= 0:
            return 0
        cutoff = f"{self._clock() - dt.timedelta(days=self._retention_days):%Y%m%d}"
        files = replica_files(self.directory, self.replica).get(self.replica, [])
        old = [p for p in files[:-1] if _FILE_NAME.match(p.name)["day"] < cutoff]  # type: ignore[index]
        if not old:
            return 0
        await self.flush()
        last = await asyncio.to_thread(_last_complete_line, old[-1])
        if last is not None:
            self.append(
                {
                    "action": "audit.purge",
                    "outcome": "OK",
                    "resource": f"audit/{self.replica}",
                    "actor": f"system:{self.service}",
                    "actor_kind": "system",
                    "details": {"purged_sequence": last["sequence"], "purged_hash": last["hash"]},
                }
            )
            await self.flush()
        for path in old:
            path.unlink(missing_ok=True)
        return len(old)

    async def _run(self) -> None:
        last_purge = 0.0
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._flush_seconds)
            try:
                await self.flush()
                if loop.time() - last_purge > 3600:
                    last_purge = loop.time()
                    await self.purge()
            except OSError:
                log.exception("audit file write failed", extra={"replica": self.replica})

    async def close(self) -> None:
        """Stop the writer and write what is left."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def _append_durably(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def _last_complete_line(path: Path) -> dict[str, Any] | None:
    """The last whole line of ``path``; a torn last line (a crash mid-write) is cut off."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        log.warning("audit file ends with a torn line; cut off", extra={"file": str(path), "bytes": len(data) - cut})
        with path.open("r+b") as handle:
            handle.truncate(cut)
        data = data[:cut]
    lines = data.splitlines()
    return json.loads(lines[-1]) if lines else None


def _read_lines(paths: Iterable[Path]) -> Iterator[tuple[Path, int, dict[str, Any] | None]]:
    for path in paths:
        with path.open(encoding="utf-8") as handle:
            for number, text in enumerate(handle, start=1):
                try:
                    yield path, number, json.loads(text)
                except json.JSONDecodeError:
                    yield path, number, None


def verify_files(paths: list[Path], *, anchor: tuple[int, str] | None = None) -> ChainReport:
    """Check one replica's files (oldest first) as one chain.

    The first record kept either starts the chain (sequence 1 after the genesis hash) or is
    the one after the last purged, as an ``audit.purge`` record later in the chain says.
    """
    lines = list(_read_lines(paths))
    first = next((line for _, _, line in lines if line is not None), None)
    purges = {
        int(line["details"]["purged_sequence"]): line["details"]["purged_hash"]
        for _, _, line in lines
        if line is not None and line.get("action") == "audit.purge"
    }
    start_sequence, start_hash, uncovered = 0, GENESIS_HASH, False
    if first is not None and int(first.get("sequence", 1)) > 1:
        start_sequence = int(first["sequence"]) - 1
        uncovered = start_sequence not in purges
        start_hash = purges.get(start_sequence, first.get("previous_hash", ""))
    verifier = ChainVerifier(start_sequence, start_hash, anchor=anchor)
    if uncovered:
        verifier.report.problem(
            f"the first record kept is {start_sequence + 1} but no audit.purge record covers the ones "
            "before it (records deleted)"
        )
    for path, number, line in lines:
        if line is None:
            verifier.report.problem(f"{path.name}:{number}: not a JSON record (edited)")
            continue
        try:
            verifier.feed(int(line["sequence"]), line["previous_hash"], line["hash"], _line_content(line))
        except (KeyError, TypeError, ValueError):
            verifier.report.problem(f"{path.name}:{number}: not an audit record (edited)")
    return verifier.finish()


def verify_directory(directory: Path, *, anchor: tuple[int, str] | None = None) -> dict[str, ChainReport]:
    """Check every replica's chain in ``directory``."""
    return {replica: verify_files(paths, anchor=anchor) for replica, paths in replica_files(directory).items()}
