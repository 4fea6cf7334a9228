"""Messages the bank sends a customer directly, never through a partner (port and adapters).

The activation code of a new customer goes to the applicant's own contact (the application's
e-mail address). Production sends it by e-mail through the bank's mail relay (``SmtpNotifier``:
OBM_CUSTOMER_NOTIFICATIONS_SMTP_HOST and friends, the password a mounted file); the local mesh,
development and tests use ``FileNotifier``, which appends each message as one JSON line to a
file in the data directory (``openbank-mesh up`` sets OBM_CUSTOMER_NOTIFICATIONS_FILE).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import ipaddress
import json
import logging
import os
import smtplib
import ssl
from dataclasses import asdict, dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Literal, Protocol

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


SmtpSecurity = Literal["starttls", "tls", "none"]


class MailRelayRefused(ValueError):
    """A relay identity will not start with: no sender address, or plaintext to another host
    (the codes would cross the network in clear)."""


@dataclass(frozen=True)
class SmtpRelay:
    """Where and how identity hands its e-mail over: the bank's mail relay."""

    host: str
    port: int
    sender: str
    security: SmtpSecurity = "starttls"
    username: str | None = None
    password_file: Path | None = None
    ca_file: Path | None = None  # the relay's private CA; else the system's
    timeout_seconds: float = 10.0
    attempts: int = 3

    def check(self, *, allow_plaintext_anywhere: bool = False) -> None:
        """Refuse what would lose or leak a code: no sender address, plaintext to another host."""
        if not self.sender:
            raise MailRelayRefused("OBM_CUSTOMER_NOTIFICATIONS_FROM is required with an SMTP relay")
        if self.security == "none" and not allow_plaintext_anywhere and not _loopback(self.host):
            raise MailRelayRefused(
                f"a plaintext SMTP relay must be on this host (a sidecar), not {self.host}: use starttls or tls"
            )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class SmtpNotifier:
    """Production sender: one e-mail per message through the bank's relay (STARTTLS or TLS,
    with the relay's certificate checked), sent again on a relay's transient refusal (4xx or a
    lost connection), never on a permanent one (5xx: a bad address stays bad)."""

    def __init__(self, relay: SmtpRelay, *, backoff_seconds: float = 1.0) -> None:
        self._relay = relay
        self._backoff = backoff_seconds
        # Read once at start: a rotated password takes a restart, like the other mounted secrets.
        self._password = relay.password_file.read_text().strip() if relay.password_file is not None else None
        self._tls = ssl.create_default_context(cafile=str(relay.ca_file) if relay.ca_file else None)

    async def send(self, message: CustomerMessage) -> None:
        mail = self._mail(message)
        for attempt in range(1, self._relay.attempts + 1):
            try:
                await asyncio.to_thread(self._deliver, mail)
                return
            except smtplib.SMTPResponseException as error:  # 4xx: for now; 5xx: for good
                if not 400 <= error.smtp_code < 500:
                    raise
                transient: BaseException = error
            except smtplib.SMTPRecipientsRefused as error:
                if not all(400 <= code < 500 for code, _ in error.recipients.values()):
                    raise
                transient = error
            except (smtplib.SMTPNotSupportedError, ssl.SSLError):
                raise  # the relay's TLS or certificate: configuration, not a moment's trouble
            except OSError as error:  # no connection, or lost (smtplib's errors are OSErrors too)
                transient = error
            if attempt == self._relay.attempts:
                raise transient
            log.warning(
                "mail relay refused for now, sending again",
                extra={"application_id": message.application_id, "attempt": attempt, "error": str(transient)},
            )
            await asyncio.sleep(self._backoff * 2 ** (attempt - 1))

    def _mail(self, message: CustomerMessage) -> EmailMessage:
        mail = EmailMessage()
        mail["From"] = self._relay.sender
        mail["To"] = message.to_email
        mail["Subject"] = message.subject
        mail["Date"] = email.utils.format_datetime(message.time)
        # The same id when sent again after a lost answer: mail clients show one message.
        domain = self._relay.sender.rstrip(">").rpartition("@")[2] or "openbank.invalid"
        mail["Message-ID"] = f"<{message.kind}.{message.application_id}.{int(message.time.timestamp())}@{domain}>"
        mail.set_content(message.body)
        return mail

    def _deliver(self, mail: EmailMessage) -> None:
        relay = self._relay
        smtp: smtplib.SMTP
        if relay.security == "tls":
            smtp = smtplib.SMTP_SSL(relay.host, relay.port, timeout=relay.timeout_seconds, context=self._tls)
        else:
            smtp = smtplib.SMTP(relay.host, relay.port, timeout=relay.timeout_seconds)
        with smtp:
            if relay.security == "starttls":
                smtp.starttls(context=self._tls)
            if relay.username:
                smtp.login(relay.username, self._password or "")
            smtp.send_message(mail)


def customer_notifier(path: Path | None, relay: SmtpRelay | None = None) -> CustomerNotifier:
    """The configured sender: the bank's mail relay, else the file of the local mesh and
    tests, else none (logged loudly)."""
    if relay is not None:
        return SmtpNotifier(relay)
    if path is None:
        log.warning(
            "neither OBM_CUSTOMER_NOTIFICATIONS_SMTP_HOST nor OBM_CUSTOMER_NOTIFICATIONS_FILE is set: "
            "activation codes will not be delivered"
        )
        return UndeliveredNotifier()
    return FileNotifier(path)
