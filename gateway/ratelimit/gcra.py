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


# One call decides a batch of buckets (all of one hash slot on a Redis Cluster), so a pipeline
# of many decisions is one script run and one reply. KEYS[i] = bucket i; ARGV[1] = now_us (""
# = the Redis clock, read once for the batch); ARGV[3i-1], ARGV[3i], ARGV[3i+1] = bucket i's
# emission_us, burst and units. units > 0: take up to that many units at once (a caller's calls
# plus a lease, see limiter.RedisBackend); units < 0: give unused units back. Returns
# {granted_1, diff_us_1, granted_2, diff_us_2, ...}, where diff_us is how far the bucket's
# theoretical arrival time now lies ahead of now: the caller derives remaining, retry-after
# and reset from it (``Limit``-free arithmetic, see ``units_outcome``). A bucket named twice is
# decided twice, in order. The key expires once the bucket is full again, so idle buckets
# disappear.
LUA_GCRA = """
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local out = {}
for i = 1, #KEYS do
  local emission = tonumber(ARGV[3 * i - 1])
  local burst = tonumber(ARGV[3 * i])
  local units = tonumber(ARGV[3 * i + 1])
  local tat = tonumber(redis.call('GET', KEYS[i]))
  if not tat or tat < now then tat = now end
  if units < 0 then
    tat = tat + units * emission
    if tat <= now then
      redis.call('DEL', KEYS[i])
    else
      redis.call('SET', KEYS[i], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
    end
    out[2 * i - 1] = 0
    out[2 * i] = 0
  else
    local fit = math.floor((emission * burst - (tat - now)) / emission)
    local granted = math.max(0, math.min(units, fit))
    if granted > 0 then
      tat = tat + granted * emission
      redis.call('SET', KEYS[i], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
    end
    out[2 * i - 1] = granted
    out[2 * i] = tat - now
  end
end
return out
"""


def units_outcome(diff_us: int, emission_us: int, burst: int) -> tuple[int, int, int]:
    """Remaining units, retry-after of the next unit (0 if one is free) and reset, from ``diff_us``.

    ``diff_us`` is the theoretical arrival time minus now after a decision, as the Lua script
    returns it; the same arithmetic as ``gcra``.
    """
    capacity_us = emission_us * burst
    remaining = max(0, (capacity_us - diff_us) // emission_us)
    retry_after_us = max(0, diff_us + emission_us - capacity_us)
    return remaining, retry_after_us, diff_us
