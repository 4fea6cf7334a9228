"""Secrets at rest: Argon2id hashes for what people choose (customer passwords), keyed
hashes for the client secrets the bank generates, SHA-256 digests for random high-entropy
tokens, and authenticated encryption for what we must read back (TOTP seeds).

No database, no gRPC: plain functions and small classes the service layer composes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

# Fixed salt for deriving the TOTP encryption key from the deployment passphrase; the
# passphrase itself is the secret (a mounted Kubernetes secret).
_TOTP_KEY_SALT = b"openbank-mesh/identity/totp-seeds/v1"
_CLIENT_SECRET_KEY_INFO = b"openbank-mesh/identity/client-secrets/v1"
CLIENT_SECRET_SCHEME = "hmac-sha256$"


class SecretHasher:
    """Argon2id hashing of customer passwords (and of client secrets stored before keyed hashes)."""

    def __init__(self, *, time_cost: int = 3, memory_cost_kib: int = 65536, parallelism: int = 4) -> None:
        self._hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_cost_kib, parallelism=parallelism)
        # Verified against when the account is unknown, so both answers take as long.
        self._decoy = self._hasher.hash(secrets.token_urlsafe(16))

    def hash(self, secret: str) -> str:
        """An Argon2id PHC string (salt and parameters included)."""
        return self._hasher.hash(secret)

    def verify(self, stored_hash: str | None, candidate: str) -> bool:
        """True when ``candidate`` matches; with no stored hash, spend the same time and say no."""
        try:
            if stored_hash is None:
                self._hasher.verify(self._decoy, candidate + "\x00unknown")
                return False
            return self._hasher.verify(stored_hash, candidate)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False


class ClientSecretHasher:
    """Client secrets: HMAC-SHA256 under a server-side key derived from the deployment
    passphrase, compared in constant time.

    The bank generates every client secret with 256 bits of entropy, so nothing can be
    guessed and a slow password hash buys nothing: it only made each token request (wrong
    secrets included) cost ~170 ms of CPU. The key means a copy of the table alone does not
    even let anyone check a candidate. Argon2id hashes stored before stay valid (``legacy``):
    verified the slow way, then replaced with the keyed hash (``TokenService``).
    """

    def __init__(self, passphrase: bytes, legacy: SecretHasher) -> None:
        self._key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_CLIENT_SECRET_KEY_INFO).derive(
            passphrase
        )
        self._legacy = legacy
        self._decoy = self.hash(secrets.token_urlsafe(32))

    def hash(self, secret: str) -> str:
        """``hmac-sha256$<hex>`` of the secret."""
        mac = hmac.new(self._key, secret.encode(), hashlib.sha256).hexdigest()
        return CLIENT_SECRET_SCHEME + mac

    @staticmethod
    def is_legacy(stored_hash: str | None) -> bool:
        """An Argon2id hash from before keyed hashes (slow to verify: run it off the loop)."""
        return stored_hash is not None and not stored_hash.startswith(CLIENT_SECRET_SCHEME)

    def verify(self, stored_hash: str | None, candidate: str) -> bool:
        """True when ``candidate`` matches; with no stored hash, do the same work and say no."""
        if self.is_legacy(stored_hash):
            return self._legacy.verify(stored_hash, candidate)
        expected = self._decoy if stored_hash is None else stored_hash
        matches = hmac.compare_digest(expected.encode(), self.hash(candidate).encode())
        return matches and stored_hash is not None


def new_secret(nbytes: int = 32) -> str:
    """A random URL-safe secret (client secrets, refresh tokens, authorization codes)."""
    return secrets.token_urlsafe(nbytes)


def digest(token: str) -> str:
    """SHA-256 hex of a random token: enough for high-entropy values, and indexable."""
    return hashlib.sha256(token.encode()).hexdigest()


def constant_time_equal(left: str, right: str) -> bool:
    """Compare two strings without leaking where they differ."""
    return hmac.compare_digest(left.encode(), right.encode())


class SecretBox:
    """AES-256-GCM with a key derived from the deployment passphrase (TOTP seeds at rest)."""

    def __init__(self, passphrase: bytes) -> None:
        key = hashlib.scrypt(passphrase, salt=_TOTP_KEY_SALT, n=2**14, r=8, p=1, dklen=32)
        self._aead = AESGCM(key)

    def seal(self, plaintext: bytes, *, context: bytes) -> bytes:
        """Encrypt and bind to ``context`` (e.g. the customer id) so rows cannot be swapped."""
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, plaintext, context)

    def open(self, sealed: bytes, *, context: bytes) -> bytes:
        """Decrypt what :meth:`seal` produced for the same context."""
        return self._aead.decrypt(sealed[:12], sealed[12:], context)


def b64url_sha256(value: str) -> str:
    """BASE64URL(SHA256(value)) without padding (PKCE S256)."""
    return base64.urlsafe_b64encode(hashlib.sha256(value.encode("ascii")).digest()).decode().rstrip("=")
