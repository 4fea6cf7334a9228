"""Messages the bank sends a customer directly, never through a partner (port and adapters).

The activation code of a new customer goes to the applicant's own contact (the application's
e-mail address). Production wires a real sender (e-mail or SMS gateway) behind
``CustomerNotifier``; the local mesh, development and tests use ``FileNotifier``, which appends
each message as one JSON line to a file in the data directory (``openbank-mesh up`` sets
OBM_CUSTOMER_NOTIFICATIONS_FILE).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

log = logging.getLogger("identity.notifier")


@dataclass(frozen=True)
class CustomerMessage:
    """One message to a customer (``code`` kept apart so a sender can format it its own way)."""

    to_email: str
    kind: str
    application_id: str
    subject: str
    body: str
    code: str
    time: dt.datetime


class CustomerNotifier(Protocol):
    """Sends a message to the customer's own contact."""

    async def send(self, message: CustomerMessage) -> None: ...


class FileNotifier:
    """Local and test sender: one JSON line per message, appended to ``path`` (mode 0600)."""

    def __init__(self, path: Path) -> None:
        self._path = path

    async def send(self, message: CustomerMessage) -> None:
        record = asdict(message) | {"time": message.time.isoformat()}
        await asyncio.to_thread(self._append, json.dumps(record, sort_keys=True) + "\n")

    def _append(self, line: str) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as out:
            out.write(line)


class UndeliveredNotifier:
    """No sender configured (a deployment that has not wired one): nothing reaches the
    customer, so say so loudly; an operator re-issues the code once a sender exists."""

    async def send(self, message: CustomerMessage) -> None:
        log.error(
            "no customer notification sender configured: the activation code was not delivered",
            extra={"application_id": message.application_id, "kind": message.kind},
        )


def customer_notifier(path: Path | None) -> CustomerNotifier:
    """The configured sender: the file of the local mesh and tests, or none (logged loudly)."""
    if path is None:
        log.warning("OBM_CUSTOMER_NOTIFICATIONS_FILE is not set: activation codes will not be delivered")
        return UndeliveredNotifier()
    return FileNotifier(path)
