"""The generic cell rate algorithm, in integer microseconds (the Lua script is the same).

A limit of ``rate`` per ``period`` with a ``burst`` lets ``burst`` calls through at once and
then one per ``period / rate``. State is one number per key: the theoretical arrival time.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Decision:
    """The answer for one call, with what the ``ratelimit-*`` headers report."""

    allowed: bool
    limit: int  # the burst: how many calls fit at once
    remaining: int  # calls still allowed right now
    retry_after_us: int  # 0 when allowed
    reset_us: int  # until the bucket is full again
    degraded: bool = False  # decided by a fallback because the backend failed

    @property
    def retry_after_seconds(self) -> float:
        """Seconds to wait before retrying a denied call."""
        return self.retry_after_us / 1_000_000

    @property
    def reset_seconds(self) -> int:
        """Whole seconds until the bucket is full (rounded up)."""
        return -(-self.reset_us // 1_000_000)


def gcra(stored_tat_us: int | None, now_us: int, emission_us: int, burst: int) -> tuple[Decision, int | None]:
    """Decide one call; returns the decision and the new TAT to store (None when denied)."""
    capacity_us = emission_us * burst
    tat = max(stored_tat_us if stored_tat_us is not None else now_us, now_us)
    new_tat = tat + emission_us
    diff = new_tat - now_us
    if diff > capacity_us:
        return Decision(False, burst, 0, diff - capacity_us, tat - now_us), None
    remaining = (capacity_us - diff) // emission_us
    return Decision(True, burst, remaining, 0, diff), new_tat


# KEYS[1] = bucket; ARGV = emission_us, burst, now_us ("" = use the Redis clock).
# Returns {allowed, remaining, retry_after_us, reset_us}; sets the key with an expiry so
# idle buckets disappear.
LUA_GCRA = """
local emission = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local capacity = emission * burst
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat or tat < now then tat = now end
local new_tat = tat + emission
local diff = new_tat - now
if diff > capacity then
  return {0, 0, diff - capacity, tat - now}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil(diff / 1000) + 1000)
return {1, math.floor((capacity - diff) / emission), 0, diff}
"""
