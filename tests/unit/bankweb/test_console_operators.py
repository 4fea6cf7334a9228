"""The console's operators: the file's rules, password + one-time code, a code used once, the
lock-out after five failures in a row, and what each role may do."""

from __future__ import annotations

import json

import pytest

from bankweb.console.operators import OperatorDirectory, OperatorRefused, may, operator_entry
from meshlib import totp

SEED = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
NOW = 1_800_000_000.0


def _directory(tmp_path, *entries) -> OperatorDirectory:  # type: ignore[no-untyped-def]
    path = tmp_path / "operators.json"
    path.write_text(json.dumps({"operators": list(entries)}))
    directory = OperatorDirectory.load(path)
    directory._clock = lambda: NOW  # fixed time: known codes
    return directory


def _code(offset_steps: int = 0) -> str:
    return totp.hotp(totp.from_base32(SEED), totp.time_step(NOW) + offset_steps)


def test_password_and_code_sign_in_once_per_code(tmp_path) -> None:  # type: ignore[no-untyped-def]
    directory = _directory(tmp_path, operator_entry("oscar", "operator", "pw-oscar-1", SEED))
    assert directory.authenticate("oscar", "pw-oscar-1", _code()).role == "operator"
    with pytest.raises(OperatorRefused):
        directory.authenticate("oscar", "pw-oscar-1", _code())  # the same code again
    assert directory.authenticate("oscar", "pw-oscar-1", _code(1)).username == "oscar"
    for wrong in (("oscar", "wrong", _code(1)), ("nobody", "pw-oscar-1", _code(1))):
        with pytest.raises(OperatorRefused):
            directory.authenticate(*wrong)


def test_five_failures_in_a_row_lock_the_operator(tmp_path) -> None:  # type: ignore[no-untyped-def]
    directory = _directory(tmp_path, operator_entry("rita", "read-only", "pw-rita-1", SEED))
    for _ in range(5):
        with pytest.raises(OperatorRefused):
            directory.authenticate("rita", "wrong", _code())
    with pytest.raises(OperatorRefused) as locked:
        directory.authenticate("rita", "pw-rita-1", _code())
    assert locked.value.locked


@pytest.mark.parametrize(
    "entry",
    [
        {"username": "Bad Name", "role": "admin", "password_hash": "$argon2id$x", "totp_secret": SEED},
        {"username": "ada", "role": "root", "password_hash": "$argon2id$x", "totp_secret": SEED},
        {"username": "ada", "role": "admin", "password_hash": "plain", "totp_secret": SEED},
        {"username": "ada", "role": "admin", "password_hash": "$argon2id$x", "totp_secret": "AAAA"},
    ],
)
def test_a_bad_file_stops_the_console_naming_the_entry(tmp_path, entry) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit, match=r"operators\[0\]"):
        _directory(tmp_path, entry)


def test_roles() -> None:
    assert not may("read-only", "window.close")
    assert may("operator", "window.close") and may("operator", "window.reconcile")
    assert not may("operator", "participant.cap") and may("admin", "participant.cap")
    assert not may("unknown", "window.close")
