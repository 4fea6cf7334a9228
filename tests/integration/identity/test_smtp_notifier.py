"""Production's sender of customer messages against a real SMTP server (aiosmtpd) on a free
port: the activation code arrives by e-mail over STARTTLS or TLS with the relay's certificate
checked and a login; a relay's 4xx is sent again, a 5xx or a certificate it cannot trust is
not; identity refuses to start with a relay that would leak or lose the codes."""

from __future__ import annotations

import datetime as dt
import email
import ipaddress
import smtplib
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from services.identity.notifier import CustomerMessage, SmtpNotifier, SmtpRelay, customer_notifier
from services.identity.settings import IdentitySettings, InsecureSettings
from tests.support.servers import free_port

SENDER = "OpenBank <no-reply@bank.example>"
USER, PASSWORD = "identity", "relay-password-from-a-mounted-secret"
NOW = dt.datetime(2026, 12, 7, 22, 0, tzinfo=dt.UTC)
# With implicit TLS the connection is encrypted from the start; aiosmtpd cannot tell.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


@dataclass
class Relay:
    """The test's mail relay: what it received, and the answers it gives first."""

    refusals: list[str] = field(default_factory=list)  # e.g. "451 ...": answered to DATA, in order
    received: list[Message] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    data_commands: int = 0
    logins: list[tuple[bytes, bytes]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.data_commands += 1
        if self.refusals:
            return self.refusals.pop(0)
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        self.received.append(email.message_from_bytes(envelope.original_content))
        return "250 OK"

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (USER.encode(), PASSWORD.encode())
        if isinstance(data, LoginPassword):
            self.logins.append((data.login, data.password))
        return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535


@dataclass(frozen=True)
class Pki:
    ca_file: Path
    server_context: ssl.SSLContext
    other_ca_file: Path


def _ca(name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
        .not_valid_after(dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A private CA that issued the relay's certificate for 127.0.0.1, and an unrelated CA."""
    where = tmp_path_factory.mktemp("smtp-pki")
    ca_key, ca_cert = _ca("bank mail CA")
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mail relay")]))
        .issuer_name(ca_cert.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
        .not_valid_after(dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (where / "ca.pem").write_bytes(ca_cert.public_bytes(pem))
    (where / "other-ca.pem").write_bytes(_ca("someone else")[1].public_bytes(pem))
    (where / "server.pem").write_bytes(server_cert.public_bytes(pem))
    (where / "server.key").write_bytes(
        server_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(where / "server.pem", where / "server.key")
    return Pki(where / "ca.pem", context, where / "other-ca.pem")


def _serve(relay: Relay, pki: Pki, *, implicit_tls: bool) -> Iterator[int]:
    port = free_port()
    # PLAIN only: aiosmtpd's LOGIN does not answer smtplib's fallback after a refused PLAIN.
    options: dict[str, Any] = {
        "authenticator": relay.authenticate,
        "auth_required": True,
        "auth_exclude_mechanism": ["LOGIN"],
    }
    if implicit_tls:
        options |= {"ssl_context": pki.server_context, "auth_require_tls": False}
    else:
        options |= {"tls_context": pki.server_context, "require_starttls": True}
    controller = Controller(relay, hostname="127.0.0.1", port=port, **options)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


@pytest.fixture
def relay() -> Relay:
    return Relay()


@pytest.fixture
def starttls_port(relay: Relay, pki: Pki) -> Iterator[int]:
    yield from _serve(relay, pki, implicit_tls=False)


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "smtp-password"
    path.write_text(PASSWORD + "\n")
    return path


def _message() -> CustomerMessage:
    return CustomerMessage(
        to_email="ada@example.org",
        kind="activation_code",
        application_id="app-123",
        subject="Your activation code",
        body="Your code to activate your new account is 12345678.",
        code="12345678",
        time=NOW,
    )


def _notifier(port: int, pki: Pki, password_file: Path, **overrides: Any) -> SmtpNotifier:
    relay = SmtpRelay(
        **(
            {
                "host": "127.0.0.1",
                "port": port,
                "sender": SENDER,
                "username": USER,
                "password_file": password_file,
                "ca_file": pki.ca_file,
                "timeout_seconds": 5.0,
            }
            | overrides
        )
    )
    relay.check()
    return SmtpNotifier(relay, backoff_seconds=0.01)


async def test_the_code_arrives_by_mail_over_starttls_with_a_login(
    relay: Relay, starttls_port: int, pki: Pki, password_file: Path
) -> None:
    await _notifier(starttls_port, pki, password_file).send(_message())

    assert relay.envelopes == [("no-reply@bank.example", ["ada@example.org"])]
    (mail,) = relay.received
    assert mail["To"] == "ada@example.org" and mail["From"] == SENDER
    assert mail["Subject"] == "Your activation code"
    assert "12345678" in mail.get_payload(decode=True).decode()
    assert mail["Message-ID"].endswith("@bank.example>") and "app-123" in mail["Message-ID"]
    assert relay.logins == [(USER.encode(), PASSWORD.encode())]


async def test_implicit_tls_works_too(relay: Relay, pki: Pki, password_file: Path) -> None:
    for port in _serve(relay, pki, implicit_tls=True):
        await _notifier(port, pki, password_file, security="tls").send(_message())
    assert len(relay.received) == 1


async def test_a_relay_certificate_from_another_ca_is_refused_at_once(
    relay: Relay, starttls_port: int, pki: Pki, password_file: Path
) -> None:
    with pytest.raises(ssl.SSLError):
        await _notifier(starttls_port, pki, password_file, ca_file=pki.other_ca_file).send(_message())
    assert relay.received == [] and relay.logins == []  # the password never left


async def test_a_wrong_password_is_not_sent_again(relay: Relay, starttls_port: int, pki: Pki, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("not-it")
    with pytest.raises(smtplib.SMTPAuthenticationError):
        await _notifier(starttls_port, pki, wrong).send(_message())
    assert len(relay.logins) == 1 and relay.received == []


async def test_a_transient_refusal_is_sent_again_and_delivered(
    relay: Relay, starttls_port: int, pki: Pki, password_file: Path
) -> None:
    relay.refusals = ["451 4.3.0 try again later", "421 4.3.2 shutting down"]
    await _notifier(starttls_port, pki, password_file).send(_message())
    assert relay.data_commands == 3 and len(relay.received) == 1


async def test_a_permanent_refusal_is_not_sent_again(
    relay: Relay, starttls_port: int, pki: Pki, password_file: Path
) -> None:
    relay.refusals = ["550 5.1.1 no such mailbox"]
    with pytest.raises(smtplib.SMTPDataError):
        await _notifier(starttls_port, pki, password_file).send(_message())
    assert relay.data_commands == 1 and relay.received == []


async def test_transient_refusals_give_up_after_the_attempts(
    relay: Relay, starttls_port: int, pki: Pki, password_file: Path
) -> None:
    relay.refusals = ["451 4.3.0 try again later"] * 5
    with pytest.raises(smtplib.SMTPDataError):
        await _notifier(starttls_port, pki, password_file).send(_message())
    assert relay.data_commands == 3


async def test_no_relay_listening_is_transient_then_raised(pki: Pki, password_file: Path) -> None:
    with pytest.raises(OSError):
        await _notifier(free_port(), pki, password_file).send(_message())


def _identity(**values: Any) -> IdentitySettings:
    return IdentitySettings(**({"customer_notifications_from": SENDER} | values))


def test_identity_wires_the_relay_when_configured(pki: Pki, password_file: Path) -> None:
    settings = _identity(
        customer_notifications_smtp_host="mail.bank.example",
        customer_notifications_smtp_username=USER,
        customer_notifications_smtp_password_file=password_file,
        customer_notifications_smtp_ca_file=pki.ca_file,
    )
    relay = settings.mail_relay()
    assert relay is not None and (relay.port, relay.security) == (587, "starttls")
    assert isinstance(customer_notifier(Path("unused.jsonl"), relay), SmtpNotifier)
    assert settings.model_copy(update={"customer_notifications_smtp_host": None}).mail_relay() is None


def test_identity_refuses_a_relay_that_would_leak_or_lose_codes() -> None:
    with pytest.raises(InsecureSettings, match="plaintext"):
        _identity(
            customer_notifications_smtp_host="mail.bank.example", customer_notifications_smtp_security="none"
        ).mail_relay()
    with pytest.raises(InsecureSettings, match="FROM"):
        _identity(customer_notifications_smtp_host="mail.bank.example", customer_notifications_from="").mail_relay()
    # A sidecar on the pod's loopback, or a development mesh, may speak plaintext.
    assert _identity(
        customer_notifications_smtp_host="127.0.0.1", customer_notifications_smtp_security="none"
    ).mail_relay()
    assert _identity(
        customer_notifications_smtp_host="mailpit", customer_notifications_smtp_security="none", allow_dev_secrets=True
    ).mail_relay()
