"""The gateway's audit files: a hash chain per replica that `openbank-mesh audit verify --dir`
checks; an edited, deleted or reordered line is reported and the command exits 1."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path

from meshcli.audit import run_audit_command
from meshcli.main import build_parser
from meshlib.audit import AuditFileWriter, verify_directory


async def write(directory: Path, count: int, **options: object) -> AuditFileWriter:
    writer = AuditFileWriter(directory, "gw-1", **options)  # type: ignore[arg-type]
    await writer.start()
    for index in range(count):
        writer.append(
            {
                "action": "gateway.call",
                "resource": "/openbank.account.v1.AccountService/GetBalance",
                "outcome": "OK",
                "actor": f"partner-{index}",
                "actor_kind": "partner",
                "details": {"decision": "allowed", "latency_ms": 1.25},
            }
        )
    await writer.close()
    return writer


def files(directory: Path) -> list[Path]:
    return sorted(directory.glob("gw-1-*.jsonl"))


def lines(directory: Path) -> tuple[Path, list[str]]:
    (path,) = directory.glob("gw-1-*.jsonl")
    return path, path.read_text().splitlines(keepends=True)


async def verify(directory: Path) -> tuple[int, str]:
    out = io.StringIO()
    code = await run_audit_command(build_parser().parse_args(["audit", "verify", "--dir", str(directory)]), out)
    return code, out.getvalue()


async def test_an_untouched_chain_verifies(tmp_path: Path) -> None:
    await write(tmp_path, 5)
    code, text = await verify(tmp_path)
    assert code == 0 and "gw-1: intact, 5 records checked" in text


async def test_an_edited_line_is_detected(tmp_path: Path) -> None:
    await write(tmp_path, 5)
    path, content = lines(tmp_path)
    record = json.loads(content[2])
    record["actor"] = "someone-else"
    content[2] = json.dumps(record) + "\n"
    path.write_text("".join(content))
    code, text = await verify(tmp_path)
    assert code == 1 and "record 3: hash mismatch (edited)" in text


async def test_a_deleted_line_is_detected(tmp_path: Path) -> None:
    await write(tmp_path, 5)
    path, content = lines(tmp_path)
    path.write_text("".join(content[:1] + content[2:]))
    code, text = await verify(tmp_path)
    assert code == 1 and "record 2 missing (deleted) before record 3" in text


async def test_the_first_lines_deleted_are_detected(tmp_path: Path) -> None:
    await write(tmp_path, 5)
    path, content = lines(tmp_path)
    path.write_text("".join(content[2:]))
    code, text = await verify(tmp_path)
    assert code == 1 and "no audit.purge record covers" in text


async def test_reordered_lines_are_detected(tmp_path: Path) -> None:
    await write(tmp_path, 5)
    path, content = lines(tmp_path)
    content[1], content[3] = content[3], content[1]
    path.write_text("".join(content))
    code, text = await verify(tmp_path)
    assert code == 1 and "out of order" in text


async def test_a_rewritten_chain_is_caught_by_an_anchor(tmp_path: Path) -> None:
    writer = await write(tmp_path, 3)
    sequence, head = writer.head
    path, _ = lines(tmp_path)
    path.unlink()
    await write(tmp_path, 3)  # a whole new, self-consistent chain
    assert verify_directory(tmp_path)["gw-1"].intact
    report = verify_directory(tmp_path, anchor=(sequence, head))["gw-1"]
    assert report.problems == [f"record {sequence}: hash differs from the anchor kept (chain rewritten)"]


async def test_a_torn_last_line_is_cut_off_and_the_chain_goes_on(tmp_path: Path) -> None:
    await write(tmp_path, 3)
    path, content = lines(tmp_path)
    path.write_text("".join(content) + '{"sequence": 4, "prev')  # a crash in mid-write
    await write(tmp_path, 2)
    code, text = await verify(tmp_path)
    assert code == 0 and "5 records checked" in text


async def test_retention_deletes_old_files_and_records_it_in_the_chain(tmp_path: Path) -> None:
    now = dt.datetime(2026, 12, 7, 12, tzinfo=dt.UTC)
    clock = {"now": now - dt.timedelta(days=40)}
    await write(tmp_path, 3, clock=lambda: clock["now"], retention_days=30)
    clock["now"] = now
    writer = await write(tmp_path, 2, clock=lambda: clock["now"], retention_days=30)
    assert len(files(tmp_path)) == 2
    await writer.start()
    assert await writer.purge() == 1
    await writer.close()
    (kept,) = files(tmp_path)
    assert kept.name == "gw-1-20261207.jsonl"
    code, text = await verify(tmp_path)
    assert code == 0 and "3 records checked" in text  # the two kept, and the purge record


async def test_an_empty_folder_is_not_a_verified_trail(tmp_path: Path) -> None:
    code, text = await verify(tmp_path)
    assert code == 1 and "no audit files" in text


async def test_two_writers_of_one_name_keep_two_chains(tmp_path: Path) -> None:
    first, second = AuditFileWriter(tmp_path, "gw-1"), AuditFileWriter(tmp_path, "gw-1")
    await first.start()
    await second.start()
    try:
        assert first.replica == "gw-1" and second.replica.startswith("gw-1-")
        for writer in (first, second):
            writer.append({"action": "gateway.call", "resource": "/x.v1.S/M", "outcome": "OK", "actor": "anonymous"})
    finally:
        await first.close()
        await second.close()
    reports = verify_directory(tmp_path)
    assert len(reports) == 2 and all(r.intact and r.checked == 1 for r in reports.values())
