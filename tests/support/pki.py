"""Throwaway certificate authorities for tests with real TLS: a CA, certificates it signs
(with DNS and IP subject alternative names), PEM files and SHA-256 thumbprints."""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class Issued:
    """A certificate and its key, as PEM bytes and files."""

    key_pem: bytes
    cert_pem: bytes
    key_file: Path
    cert_file: Path
    sha256: str  # lower-case hex SHA-256 of the DER (RFC 8705 x5t#S256 in hex)


class TestCa:
    """A CA that writes what it issues into ``folder``."""

    __test__ = False  # not a pytest class

    def __init__(self, name: str, folder: Path) -> None:
        self.name = name
        self.folder = folder
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.certificate = self._build(self._subject, self._key.public_key(), ca=True, names=())
        self.cert_pem = self.certificate.public_bytes(serialization.Encoding.PEM)
        self.cert_file = folder / f"{name}.ca.crt"
        self.cert_file.write_bytes(self.cert_pem)

    def _build(self, subject: x509.Name, public_key, *, ca: bool, names: tuple[str, ...]) -> x509.Certificate:  # type: ignore[no-untyped-def]
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self._subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(hours=2))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if names:
            alternative: list[x509.GeneralName] = []
            for name in names:
                try:
                    alternative.append(x509.IPAddress(ipaddress.ip_address(name)))
                except ValueError:
                    alternative.append(x509.DNSName(name))
            builder = builder.add_extension(x509.SubjectAlternativeName(alternative), critical=False)
        return builder.sign(self._key, hashes.SHA256())

    def issue(self, common_name: str, *names: str) -> Issued:
        """A leaf certificate for ``common_name`` with ``names`` (DNS names or IPs) as SANs."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        certificate = self._build(subject, key.public_key(), ca=False, names=names)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        cert_pem = certificate.public_bytes(serialization.Encoding.PEM)
        key_file = self.folder / f"{self.name}.{common_name}.key"
        cert_file = self.folder / f"{self.name}.{common_name}.crt"
        key_file.write_bytes(key_pem)
        cert_file.write_bytes(cert_pem)
        sha256 = hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()
        return Issued(key_pem, cert_pem, key_file, cert_file, sha256)
