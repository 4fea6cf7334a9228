"""RFC 4226 / RFC 6238 test vectors and the one-use, +-1 step acceptance window."""

from __future__ import annotations

import pytest

from meshlib import totp

RFC_SEED = b"12345678901234567890"


@pytest.mark.parametrize(
    ("counter", "expected"),
    list(
        enumerate(["755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583", "399871", "520489"])
    ),
)
def test_hotp_matches_rfc_4226(counter: int, expected: str) -> None:
    assert totp.hotp(RFC_SEED, counter) == expected


@pytest.mark.parametrize(
    ("unix_time", "expected"),
    [
        (59, "94287082"),
        (1111111109, "07081804"),
        (1111111111, "14050471"),
        (1234567890, "89005924"),
        (2000000000, "69279037"),
        (20000000000, "65353130"),
    ],
)
def test_totp_matches_rfc_6238_sha1(unix_time: int, expected: str) -> None:
    assert totp.hotp(RFC_SEED, totp.time_step(unix_time), digits=8) == expected
    assert totp.totp(RFC_SEED, unix_time) == expected[-6:]


def test_window_is_one_step_either_side_and_codes_are_single_use() -> None:
    now = 1_700_000_000.0
    step = totp.time_step(now)
    for offset in (-1, 0, 1):
        code = totp.hotp(RFC_SEED, step + offset)
        assert totp.matching_step(RFC_SEED, code, now, last_used_step=None) == step + offset
    for offset in (-2, 2):
        assert totp.matching_step(RFC_SEED, totp.hotp(RFC_SEED, step + offset), now, last_used_step=None) is None
    current = totp.hotp(RFC_SEED, step)
    assert totp.matching_step(RFC_SEED, current, now, last_used_step=step) is None
    assert totp.matching_step(RFC_SEED, totp.hotp(RFC_SEED, step - 1), now, last_used_step=step) is None
    assert totp.matching_step(RFC_SEED, totp.hotp(RFC_SEED, step + 1), now, last_used_step=step) == step + 1


@pytest.mark.parametrize("code", ["", "12345", "1234567", "abcdef", "12 345"])
def test_malformed_codes_never_match(code: str) -> None:
    assert totp.matching_step(RFC_SEED, code, 1_700_000_000, last_used_step=None) is None


def test_base32_round_trip_and_uri() -> None:
    seed = totp.new_totp_secret()
    assert totp.from_base32(totp.to_base32(seed).lower()) == seed
    uri = totp.otpauth_uri(seed, "ada")
    assert uri.startswith("otpauth://totp/OpenBank%3Aada?") and f"secret={totp.to_base32(seed)}" in uri
