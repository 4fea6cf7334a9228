"""The local mesh's operators for the operator console: ``up`` creates them once under the
data directory (the console reads ``console-operators.json``: Argon2id hashes and TOTP seeds;
``console-operators-credentials.json``, owner-only, keeps their passwords for you), one per
role: ``rita`` (read-only), ``oscar`` (operator), ``ada`` (admin)."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from bankweb.console.operators import ADMIN, OPERATOR, READ_ONLY, operator_entry
from meshlib import totp

OPERATORS_FILE = "console-operators.json"
CREDENTIALS_FILE = "console-operators-credentials.json"
LOCAL_OPERATORS = (("rita", READ_ONLY), ("oscar", OPERATOR), ("ada", ADMIN))


def _write_private(path: Path, data: object) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2)


def local_operators(data_dir: Path) -> dict[str, dict[str, str]]:
    """The local operators' credentials (username -> role, password, totp_secret), created once."""
    credentials_path = data_dir / CREDENTIALS_FILE
    if credentials_path.exists() and (data_dir / OPERATORS_FILE).exists():
        return json.loads(credentials_path.read_text())
    data_dir.mkdir(parents=True, exist_ok=True)
    credentials = {
        name: {
            "role": role,
            "password": secrets.token_urlsafe(12),
            "totp_secret": totp.to_base32(totp.new_totp_secret()),
        }
        for name, role in LOCAL_OPERATORS
    }
    entries = [operator_entry(name, c["role"], c["password"], c["totp_secret"]) for name, c in credentials.items()]
    _write_private(data_dir / OPERATORS_FILE, {"operators": entries})
    _write_private(credentials_path, credentials)
    return credentials
