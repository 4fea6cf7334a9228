"""Rate-limit configuration: tiers of per-class limits, per-class failure policy, and the
per-consent daily allowance for unattended reads; loaded from YAML, reloadable."""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger("gateway.ratelimit")

PERIODS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


class FailurePolicy(enum.Enum):
    """What a class does when the shared store cannot be reached."""

    FAIL_OPEN = "fail_open"  # decide with this replica's local limiter
    FAIL_CLOSED = "fail_closed"  # refuse with UNAVAILABLE


@dataclass(frozen=True)
class Limit:
    """``rate`` calls per ``period_seconds``, up to ``burst`` at once."""

    rate: int
    period_seconds: int
    burst: int

    @property
    def emission_us(self) -> int:
        """Microseconds between two calls at the sustained rate."""
        return max(1, (self.period_seconds * 1_000_000) // self.rate)

    def describe(self) -> str:
        """Human form for QuotaFailure: ``10 per second, burst 20``."""
        period = next((k for k, v in PERIODS.items() if v == self.period_seconds), f"{self.period_seconds}s")
        return f"{self.rate} per {period}, burst {self.burst}"


@dataclass(frozen=True)
class ClassPolicy:
    """Per-class behaviour that does not depend on the tier."""

    on_backend_failure: FailurePolicy = FailurePolicy.FAIL_OPEN


@dataclass(frozen=True)
class RateLimitConfig:
    """The whole file: tiers -> class -> limit, class policies, read allowance, stream cap."""

    tiers: dict[str, dict[str, Limit]]
    classes: dict[str, ClassPolicy] = field(default_factory=dict)
    default_tier: str = "default"
    unattended_reads_per_day: int = 4
    max_streams_per_partner: int = 10

    def limit_for(self, tier: str | None, rate_class: str) -> Limit | None:
        """The limit of a class for a tier (falling back to the default tier); None = unlimited."""
        limits = self.tiers.get(tier or self.default_tier) or self.tiers.get(self.default_tier, {})
        return limits.get(rate_class)

    def policy_for(self, rate_class: str) -> ClassPolicy:
        """The failure policy of a class (fail open unless configured)."""
        return self.classes.get(rate_class, ClassPolicy())


def _limit(raw: Any, where: str) -> Limit:
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a mapping with rate, per and burst")
    rate, per, burst = raw.get("rate"), raw.get("per", "second"), raw.get("burst", raw.get("rate"))
    if not isinstance(rate, int) or rate <= 0:
        raise ValueError(f"{where}.rate: must be a positive integer")
    if per not in PERIODS:
        raise ValueError(f"{where}.per: must be one of {', '.join(PERIODS)}")
    if not isinstance(burst, int) or burst <= 0:
        raise ValueError(f"{where}.burst: must be a positive integer")
    return Limit(rate=rate, period_seconds=PERIODS[per], burst=burst)


def parse_config(raw: Any) -> RateLimitConfig:
    """Validate a parsed YAML document into a config; ValueError names the bad entry."""
    if not isinstance(raw, dict) or not isinstance(raw.get("tiers"), dict) or not raw["tiers"]:
        raise ValueError("tiers: required, a mapping of tier name -> class -> limit")
    tiers = {
        str(tier): {str(cls): _limit(limit, f"tiers.{tier}.{cls}") for cls, limit in (classes or {}).items()}
        for tier, classes in raw["tiers"].items()
    }
    classes: dict[str, ClassPolicy] = {}
    for name, entry in (raw.get("classes") or {}).items():
        policy = (entry or {}).get("on_backend_failure", "fail_open")
        try:
            classes[str(name)] = ClassPolicy(FailurePolicy(policy))
        except ValueError:
            raise ValueError(f"classes.{name}.on_backend_failure: fail_open or fail_closed") from None
    default_tier = str(raw.get("default_tier", "default"))
    if default_tier not in tiers:
        raise ValueError(f"default_tier: {default_tier!r} is not a tier")
    reads = raw.get("unattended_reads_per_day", 4)
    streams = raw.get("max_streams_per_partner", 10)
    if not isinstance(reads, int) or reads < 0:
        raise ValueError("unattended_reads_per_day: a non-negative integer (0 = no allowance check)")
    if not isinstance(streams, int) or streams <= 0:
        raise ValueError("max_streams_per_partner: a positive integer")
    return RateLimitConfig(tiers, classes, default_tier, reads, streams)


def load_config(path: Path) -> RateLimitConfig:
    """Read and validate a YAML file."""
    return parse_config(yaml.safe_load(path.read_text()))


class ReloadingConfig:
    """The current config; ``maybe_reload`` swaps in a changed file, keeping the old one if
    the new one is invalid (so a typo never takes the limits away)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.current = load_config(path)
        self._mtime = path.stat().st_mtime_ns

    def maybe_reload(self) -> bool:
        """Reload if the file changed; True when a new config took effect."""
        try:
            mtime = self.path.stat().st_mtime_ns
        except OSError:
            log.error("rate-limit config file vanished; keeping the current limits")
            return False
        if mtime == self._mtime:
            return False
        self._mtime = mtime
        try:
            self.current = load_config(self.path)
        except (ValueError, yaml.YAMLError) as error:
            log.error("invalid rate-limit config; keeping the current limits", extra={"error": str(error)})
            return False
        log.info("rate-limit config reloaded", extra={"path": str(self.path)})
        return True
