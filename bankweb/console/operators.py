"""The bank's operators: a JSON file read once at start (a Kubernetes Secret in production).

Each operator has a username, a role, an Argon2id hash of the password and a TOTP seed
(base32); signing in takes both (strong authentication, the same one-time codes as the
customers'). A code is accepted once (replay refused), and five failures in a row lock the
operator in this process until it restarts (each replica counts its own; the sign-in throttle
applies on top). What each role may do is ``ROLE_ACTIONS``: the console checks it before
every action.

    {"operators": [{"username": "ada", "role": "admin",
                    "password_hash": "$argon2id$...", "totp_secret": "JBSWY3DPEHPK3PXP"}]}
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from meshlib import totp

READ_ONLY, OPERATOR, ADMIN = "read-only", "operator", "admin"
ROLES = (READ_ONLY, OPERATOR, ADMIN)
# What each role may do besides reading every page.
ROLE_ACTIONS: dict[str, frozenset[str]] = {
    READ_ONLY: frozenset(),
    OPERATOR: frozenset({"window.close", "window.settle", "window.reconcile"}),
    ADMIN: frozenset({"window.close", "window.settle", "window.reconcile", "participant.cap"}),
}
LOCK_AFTER_FAILURES = 5
_USERNAME = re.compile(r"^[a-z][a-z0-9._-]{1,63}$")
_HASHER = PasswordHasher()
# Verified when the username is unknown, so the answer takes as long as for a known one.
_DUMMY_HASH = _HASHER.hash("not-an-operator-password")


@dataclass(frozen=True)
class OperatorAccount:
    """One operator as the file has it."""

    username: str
    role: str
    password_hash: str
    totp_seed: bytes


class OperatorRefused(Exception):
    """Sign-in refused; ``locked`` when too many failures came in a row."""

    def __init__(self, locked: bool = False) -> None:
        super().__init__("locked" if locked else "refused")
        self.locked = locked


def operator_entry(username: str, role: str, password: str, totp_secret: str) -> dict[str, str]:
    """A file entry for an operator (the password hashed with Argon2id)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    return {"username": username, "role": role, "password_hash": _HASHER.hash(password), "totp_secret": totp_secret}


def _account(entry: Any, index: int) -> OperatorAccount:
    where = f"operators[{index}]"
    if not isinstance(entry, dict):
        raise ValueError(f"{where} is not an object")
    username = str(entry.get("username", ""))
    if not _USERNAME.match(username):
        raise ValueError(f"{where}.username must be 2-64 lower-case letters, digits, '.', '_' or '-'")
    role = str(entry.get("role", ""))
    if role not in ROLES:
        raise ValueError(f"{where}.role must be one of {', '.join(ROLES)}")
    password_hash = str(entry.get("password_hash", ""))
    if not password_hash.startswith("$argon2id$"):
        raise ValueError(f"{where}.password_hash must be an Argon2id hash")
    try:
        seed = totp.from_base32(str(entry.get("totp_secret", "")))
    except ValueError:
        seed = b""
    if len(seed) < 16:
        raise ValueError(f"{where}.totp_secret must be a base32 seed of at least 128 bits")
    return OperatorAccount(username, role, password_hash, seed)


class OperatorDirectory:
    """The operators, and who may sign in."""

    def __init__(self, accounts: list[OperatorAccount], clock: Callable[[], float] = time.time) -> None:
        self._accounts = {account.username: account for account in accounts}
        self._clock = clock
        self._failures: dict[str, int] = {}
        self._last_step: dict[str, int] = {}

    @classmethod
    def load(cls, path: Path) -> OperatorDirectory:
        """Read the file once; a missing or bad file stops the console with the reason."""
        try:
            data = json.loads(path.read_text())
            entries = data["operators"]
            if not isinstance(entries, list):
                raise ValueError("operators must be a list")
            accounts = [_account(entry, i) for i, entry in enumerate(entries)]
        except FileNotFoundError:
            raise SystemExit(f"the console needs its operators file {path} (OBM_CONSOLE_OPERATORS_FILE)") from None
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise SystemExit(f"the operators file {path} is not valid: {error}") from None
        if len({a.username for a in accounts}) != len(accounts):
            raise SystemExit(f"the operators file {path} names an operator twice")
        return cls(accounts)

    def authenticate(self, username: str, password: str, one_time_code: str) -> OperatorAccount:
        """The operator, when the password and the one-time code both match (never says which failed)."""
        account = self._accounts.get(username)
        if account is not None and self._failures.get(username, 0) >= LOCK_AFTER_FAILURES:
            raise OperatorRefused(locked=True)
        try:
            _HASHER.verify(account.password_hash if account else _DUMMY_HASH, password)
            password_ok = account is not None
        except (VerificationError, InvalidHashError):
            password_ok = False
        step = None
        if account is not None:
            step = totp.matching_step(
                account.totp_seed, one_time_code, self._clock(), last_used_step=self._last_step.get(username)
            )
        if account is None or not password_ok or step is None:
            if account is not None:
                self._failures[username] = self._failures.get(username, 0) + 1
            raise OperatorRefused()
        self._failures.pop(username, None)
        self._last_step[username] = step
        return account


def may(role: str, action: str) -> bool:
    """Whether ``role`` may do ``action``."""
    return action in ROLE_ACTIONS.get(role, frozenset())
