"""Client authentication is cheap and guarded: keyed hashes for the bank's random client
secrets (Argon2id ones from before still verify), and a per-client failure lock-out."""

from __future__ import annotations

import time

import pytest

from meshlib.errors import ResourceExhausted
from services.identity.domain.client_throttle import ClientAuthThrottle
from services.identity.domain.secrets import ClientSecretHasher, SecretHasher, new_secret

ARGON2 = SecretHasher(time_cost=1, memory_cost_kib=1024, parallelism=1)
HASHER = ClientSecretHasher(b"a-deployment-passphrase-for-tests", legacy=ARGON2)


def test_a_keyed_hash_verifies_its_secret_only() -> None:
    secret = new_secret()
    stored = HASHER.hash(secret)
    assert stored.startswith("hmac-sha256$") and secret not in stored
    assert not HASHER.is_legacy(stored)
    assert HASHER.verify(stored, secret)
    assert not HASHER.verify(stored, secret[:-1] + ("A" if secret[-1] != "A" else "B"))
    assert not HASHER.verify(None, secret)  # unknown client: same work, no


def test_the_key_is_the_deployments_own() -> None:
    secret = new_secret()
    other = ClientSecretHasher(b"another-deployment-passphrase", legacy=ARGON2)
    assert other.hash(secret) != HASHER.hash(secret)
    assert not other.verify(HASHER.hash(secret), secret)  # a copied table is useless elsewhere


def test_argon2_hashes_from_before_still_verify() -> None:
    secret = new_secret()
    legacy = ARGON2.hash(secret)
    assert HASHER.is_legacy(legacy)
    assert HASHER.verify(legacy, secret)
    assert not HASHER.verify(legacy, "wrong")


def test_client_authentication_costs_well_under_a_millisecond() -> None:
    secret = new_secret()
    stored = HASHER.hash(secret)
    rounds = 2000
    started = time.process_time()
    for _ in range(rounds):
        HASHER.verify(stored, secret)
        HASHER.verify(stored, "wrong")
    per_check = (time.process_time() - started) / (2 * rounds)
    assert per_check < 0.0002, f"{per_check * 1e6:.0f} µs of CPU per check"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _locked(throttle: ClientAuthThrottle, client_id: str) -> float | None:
    remaining = throttle.locked_for(client_id)
    if not remaining:
        return None
    refusal = throttle.refusal(remaining)
    assert isinstance(refusal, ResourceExhausted) and refusal.reason == "RATE_LIMIT_EXCEEDED"
    return refusal.retry_after_seconds


def test_failures_lock_a_client_out_for_longer_each_time() -> None:
    clock = Clock()
    throttle = ClientAuthThrottle(max_failures=3, window_seconds=60, base_lockout_seconds=1, clock=clock)
    for _ in range(2):
        throttle.failed("c1")
    assert _locked(throttle, "c1") is None
    throttle.failed("c1")
    assert _locked(throttle, "c1") == pytest.approx(1.0)
    assert _locked(throttle, "c2") is None  # other clients are untouched
    clock.now += 1.01
    assert _locked(throttle, "c1") is None
    for _ in range(3):
        throttle.failed("c1")
    assert _locked(throttle, "c1") == pytest.approx(2.0)  # doubled
    clock.now += 2.01
    throttle.succeeded("c1")
    for _ in range(2):
        throttle.failed("c1")
    assert _locked(throttle, "c1") is None  # a success starts afresh


def test_failures_spread_wider_than_the_window_never_lock() -> None:
    clock = Clock()
    throttle = ClientAuthThrottle(max_failures=3, window_seconds=10, clock=clock)
    for _ in range(10):
        throttle.failed("c1")
        clock.now += 6
    assert _locked(throttle, "c1") is None


def test_the_memory_stays_bounded() -> None:
    throttle = ClientAuthThrottle(max_clients=100)
    for n in range(1000):
        throttle.failed(f"made-up-{n}")
    assert len(throttle._records) == 100
