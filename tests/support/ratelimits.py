"""Rate-limit files for tests that must not be slowed by the gateway's limits."""

from __future__ import annotations

CLASSES = ("token", "consents", "reads", "payments", "streams", "settlement")


def generous_limits(*, unattended_reads_per_day: int | None = None, max_streams_per_partner: int | None = None) -> str:
    """One gold tier allowing 1,000 calls a second in every class, as the gateway's YAML."""
    lines = ["default_tier: gold", "tiers:", "  gold:"]
    lines += [f"    {name}: {{rate: 1000, per: second, burst: 1000}}" for name in CLASSES]
    if unattended_reads_per_day is not None:
        lines.append(f"unattended_reads_per_day: {unattended_reads_per_day}")
    if max_streams_per_partner is not None:
        lines.append(f"max_streams_per_partner: {max_streams_per_partner}")
    return "\n".join(lines) + "\n"
