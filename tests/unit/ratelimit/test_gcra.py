"""GCRA and the limiter's rules, with an injected clock: exact allow/deny sequences."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.ratelimit import InProcessBackend, Limit, RateLimiter, gcra
from gateway.ratelimit.config import FailurePolicy, ReloadingConfig, parse_config
from meshlib.errors import ResourceExhausted

TEN_PER_SECOND_BURST_3 = Limit(rate=10, period_seconds=1, burst=3)


def test_burst_then_one_per_emission_interval() -> None:
    tat, now, pattern = None, 1_000_000, []
    for _ in range(5):
        decision, new_tat = gcra(tat, now, TEN_PER_SECOND_BURST_3.emission_us, 3)
        tat = new_tat if new_tat is not None else tat
        pattern.append((decision.allowed, decision.remaining))
    assert pattern == [(True, 2), (True, 1), (True, 0), (False, 0), (False, 0)]
    denied, _ = gcra(tat, now, 100_000, 3)
    assert denied.retry_after_us == 100_000  # exactly one emission interval
    # At the boundary: 99,999 us later still denied, 100,000 us later allowed.
    assert not gcra(tat, now + 99_999, 100_000, 3)[0].allowed
    assert gcra(tat, now + 100_000, 100_000, 3)[0].allowed


@settings(max_examples=200)
@given(
    rate=st.integers(1, 50),
    burst=st.integers(1, 20),
    gaps=st.lists(st.integers(0, 300_000), min_size=1, max_size=200),
)
def test_never_more_than_burst_plus_refill_in_any_run(rate: int, burst: int, gaps: list[int]) -> None:
    limit = Limit(rate=rate, period_seconds=1, burst=burst)
    now, tat, allowed_times = 0, None, []
    for gap in gaps:
        now += gap
        decision, new_tat = gcra(tat, now, limit.emission_us, burst)
        if decision.allowed:
            tat = new_tat
            allowed_times.append(now)
        assert 0 <= decision.remaining <= burst
    # In any interval [a, b], at most burst + (b - a) / emission calls get through.
    for i, start in enumerate(allowed_times):
        for j in range(i, len(allowed_times)):
            elapsed = allowed_times[j] - start
            assert j - i + 1 <= burst + elapsed // limit.emission_us


CONFIG = parse_config(
    {
        "tiers": {
            "default": {"reads": {"rate": 2, "per": "second", "burst": 2}},
            "gold": {"reads": {"rate": 100, "per": "second", "burst": 100}},
        },
        "classes": {"payments": {"on_backend_failure": "fail_closed"}},
        "unattended_reads_per_day": 4,
    }
)


async def test_limiter_denies_with_retry_info_and_quota_failure() -> None:
    clock = [5_000_000]
    limiter = RateLimiter(lambda: CONFIG, InProcessBackend(clock=lambda: clock[0]))
    assert (await limiter.check("p1", None, "reads")).remaining == 1
    assert (await limiter.check("p1", None, "reads")).remaining == 0
    with pytest.raises(ResourceExhausted) as raised:
        await limiter.check("p1", None, "reads")
    assert raised.value.reason == "RATE_LIMIT_EXCEEDED"
    assert raised.value.retry_after_seconds == 0.5
    assert raised.value.violations[0].subject == "partners/p1"
    # Another partner and another tier have their own buckets; unknown classes are unlimited.
    assert (await limiter.check("p2", None, "reads")).allowed
    assert (await limiter.check("p1", "gold", "reads")).remaining == 99
    assert await limiter.check("p1", None, "no-such-class") is None
    clock[0] += 500_000
    assert (await limiter.check("p1", None, "reads")).allowed


async def test_daily_allowance_of_unattended_reads() -> None:
    limiter = RateLimiter(lambda: CONFIG, InProcessBackend(clock=lambda: 0))
    for _ in range(4):
        await limiter.check_allowance("consent:c1", 4, "reads")
    with pytest.raises(ResourceExhausted) as raised:
        await limiter.check_allowance("consent:c1", 4, "reads")
    assert raised.value.reason == "CONSENT_READS_EXHAUSTED"


def test_config_validation_names_the_bad_entry() -> None:
    for bad, where in [
        ({}, "tiers"),
        ({"tiers": {"default": {"reads": {"rate": 0}}}}, "tiers.default.reads.rate"),
        ({"tiers": {"default": {"reads": {"rate": 1, "per": "fortnight"}}}}, "tiers.default.reads.per"),
        ({"tiers": {"default": {}}, "classes": {"x": {"on_backend_failure": "maybe"}}}, "classes.x"),
    ]:
        with pytest.raises(ValueError, match=where.replace(".", r"\.")):
            parse_config(bad)
    assert CONFIG.policy_for("payments").on_backend_failure is FailurePolicy.FAIL_CLOSED
    assert CONFIG.policy_for("reads").on_backend_failure is FailurePolicy.FAIL_OPEN


def test_config_reloads_without_restart_and_keeps_limits_on_a_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "limits.yaml"
    path.write_text("tiers:\n  default:\n    reads: {rate: 1, per: second, burst: 1}\n")
    config = ReloadingConfig(path)
    assert config.current.limit_for(None, "reads").rate == 1
    path.write_text("tiers:\n  default:\n    reads: {rate: 7, per: minute, burst: 3}\n")
    import os

    os.utime(path, ns=(1, 10**18))
    assert config.maybe_reload()
    assert config.current.limit_for(None, "reads") == Limit(7, 60, 3)
    path.write_text("tiers: [broken")
    os.utime(path, ns=(1, 2 * 10**18))
    assert not config.maybe_reload()
    assert config.current.limit_for(None, "reads") == Limit(7, 60, 3)
