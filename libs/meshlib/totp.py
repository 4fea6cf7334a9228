"""Time-based one-time passwords (RFC 6238 over RFC 4226 HOTP): SHA-1, 6 digits, 30 s, for
identity's customers and the operator console's operators.

A code is accepted in the current step or one step either side (clock drift), and only
for a step later than the last one accepted, so a code can never be used twice.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
import urllib.parse

STEP_SECONDS = 30
DIGITS = 6
DRIFT_STEPS = 1


def new_totp_secret() -> bytes:
    """A 160-bit random seed (RFC 4226 recommends at least 128 bits)."""
    return secrets.token_bytes(20)


def to_base32(seed: bytes) -> str:
    """The seed as authenticator apps expect it: base32 without padding."""
    return base64.b32encode(seed).decode().rstrip("=")


def from_base32(text: str) -> bytes:
    """Decode a base32 seed, padding optional, case-insensitive."""
    cleaned = text.strip().replace(" ", "").upper()
    return base64.b32decode(cleaned + "=" * (-len(cleaned) % 8))


def hotp(seed: bytes, counter: int, digits: int = DIGITS) -> str:
    """RFC 4226 HOTP value for ``counter``."""
    mac = hmac.new(seed, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    number = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(number % 10**digits).zfill(digits)


def time_step(unix_time: float) -> int:
    """The RFC 6238 counter for a moment."""
    return int(unix_time // STEP_SECONDS)


def totp(seed: bytes, unix_time: float) -> str:
    """The code valid at ``unix_time``."""
    return hotp(seed, time_step(unix_time))


def matching_step(seed: bytes, code: str, unix_time: float, *, last_used_step: int | None) -> int | None:
    """The step ``code`` belongs to (within the drift window, after ``last_used_step``), or None."""
    if len(code) != DIGITS or not code.isdigit():
        return None
    current = time_step(unix_time)
    found = None
    # Check every candidate step (no early exit) so timing says nothing about which matched.
    for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1):
        if hmac.compare_digest(hotp(seed, step), code) and (last_used_step is None or step > last_used_step):
            found = step if found is None else found
    return found


def otpauth_uri(seed: bytes, account: str, issuer: str = "OpenBank") -> str:
    """``otpauth://totp/...`` URI for authenticator apps (Key Uri Format)."""
    label = urllib.parse.quote(f"{issuer}:{account}")
    query = urllib.parse.urlencode(
        {"secret": to_base32(seed), "issuer": issuer, "algorithm": "SHA1", "digits": DIGITS, "period": STEP_SECONDS}
    )
    return f"otpauth://totp/{label}?{query}"
