"""The console's use cases with fakes: every action is checked against the role and recorded
with the operator's name (allowed, refused by the mesh, or DENIED), sign-ins are recorded and
get a new session id, the participants come most used first."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from bankweb.console.console import ActionFailed, Console, Forbidden, NotSignedIn, SignInFailed
from bankweb.console.operators import OperatorDirectory, operator_entry
from bankweb.console.ports import AuditQuery, ParticipantRow, Reconciliation, WindowRow
from bankweb.sessions import AttemptLimiter, MemorySessionStore
from meshlib import totp
from meshlib.errors import MeshError

SEED = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
NOW = dt.datetime(2026, 12, 7, 12, tzinfo=dt.UTC)


class FakeMesh:
    def __init__(self) -> None:
        self.closed: list[str] = []
        self.refuse: MeshError | None = None
        self.roles: list[str] = []

    def as_role(self, role: str) -> FakeMesh:
        self.roles.append(role)
        return self

    async def participants(self) -> list[ParticipantRow]:
        return [
            ParticipantRow("participants/a", "Quiet", "ACTIVE", "EUR", 0, 0, 10_000, 10_000),
            ParticipantRow("participants/b", "Busy", "ACTIVE", "EUR", -9_000, 500, 10_000, 500),
        ]

    async def close_window(self, currency: str, request_id: str) -> tuple[WindowRow, WindowRow]:
        if self.refuse:
            raise self.refuse
        self.closed.append(request_id)
        return WindowRow("settlementWindows/w1", currency, "CLOSED", 2, 300), WindowRow(
            "settlementWindows/w2", currency, "OPEN", 0, 0
        )

    async def reconcile_window(self, name: str) -> Reconciliation:
        return Reconciliation(name, True)

    def __getattr__(self, name: str) -> Any:  # what a test does not use
        raise AssertionError(f"unexpected call {name}")


class Journal:
    def __init__(self) -> None:
        self.written: list[dict[str, Any]] = []

    def append(self, content: dict[str, Any]) -> None:
        self.written.append(json.loads(json.dumps(content, default=str)))

    async def flush(self) -> None:
        return None

    async def records(self, query: Any) -> list[Any]:
        return [row for row in self.written if row["action"].startswith(query.action)]


@pytest.fixture
def world(tmp_path):  # type: ignore[no-untyped-def]
    path = tmp_path / "operators.json"
    entries = [
        operator_entry("rita", "read-only", "pw-rita-1", SEED),
        operator_entry("oscar", "operator", "pw-oscar-1", SEED),
    ]
    path.write_text(json.dumps({"operators": entries}))
    operators = OperatorDirectory.load(path)
    operators._clock = lambda: NOW.timestamp()
    mesh, journal, sessions = FakeMesh(), Journal(), MemorySessionStore()
    console = Console(mesh, operators, sessions, AttemptLimiter(10, 50, 300), journal, 900, clock=lambda: NOW)
    return console, mesh, journal


def _code(step: int = 0) -> str:
    return totp.hotp(totp.from_base32(SEED), totp.time_step(NOW.timestamp()) + step)


async def _signed_in(console: Console, username: str, password: str, step: int = 0):  # type: ignore[no-untyped-def]
    fresh = await console.new_session(None)
    session = await console.sign_in(fresh, username, password, _code(step), "10.0.0.1")
    assert session.session_id != fresh.session_id  # a new id at sign-in (no fixation)
    return await console.operator(session)


async def test_an_operator_closes_a_window_and_the_journal_names_them(world) -> None:  # type: ignore[no-untyped-def]
    console, mesh, journal = world
    oscar = await _signed_in(console, "oscar", "pw-oscar-1")
    notice = await console.close_window(oscar, "EUR")
    assert "Closed settlementWindows/w1" in notice and len(mesh.closed) == 1
    assert mesh.roles == ["operator"], "the action is called with the operator role's token"
    record = journal.written[-1]
    assert (record["action"], record["outcome"], record["actor"]) == ("console.window.close", "OK", "operator:oscar")
    assert record["details"]["request_id"] == mesh.closed[0] and record["details"]["role"] == "operator"


async def test_a_read_only_operator_is_refused_and_recorded_and_nothing_is_called(world) -> None:  # type: ignore[no-untyped-def]
    console, mesh, journal = world
    rita = await _signed_in(console, "rita", "pw-rita-1")
    with pytest.raises(Forbidden):
        await console.close_window(rita, "EUR")
    with pytest.raises(Forbidden):
        await console.reconcile_window(rita, "settlementWindows/w1")
    assert mesh.closed == []
    assert [(r["action"], r["outcome"]) for r in journal.written[-2:]] == [
        ("console.window.close", "DENIED"),
        ("console.window.reconcile", "DENIED"),
    ]


async def test_a_refusal_by_the_mesh_is_shown_and_recorded_with_its_reason(world) -> None:  # type: ignore[no-untyped-def]
    console, mesh, journal = world
    oscar = await _signed_in(console, "oscar", "pw-oscar-1")
    mesh.refuse = MeshError("no open window", reason="RESOURCE_NOT_FOUND")
    with pytest.raises(ActionFailed, match="RESOURCE_NOT_FOUND"):
        await console.close_window(oscar, "EUR")
    assert journal.written[-1]["outcome"] == "RESOURCE_NOT_FOUND"


async def test_sign_in_failures_are_recorded_and_pages_need_a_session(world) -> None:  # type: ignore[no-untyped-def]
    console, _, journal = world
    with pytest.raises(SignInFailed):
        await console.sign_in(await console.new_session(None), "oscar", "wrong", _code(), "10.0.0.1")
    assert (journal.written[-1]["action"], journal.written[-1]["outcome"]) == ("console.sign_in", "REFUSED")
    with pytest.raises(NotSignedIn):
        await console.operator(await console.new_session(None))
    rows = await console.participants()
    assert [r.name for r in rows] == ["Busy", "Quiet"]  # the most used cap first
    found = await console.audit(AuditQuery(service="console", action="console.sign_in"))
    assert found and found[-1]["outcome"] == "REFUSED"  # the console's own trail answers the search
