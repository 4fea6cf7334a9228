"""Rate limiting: GCRA decisions per partner tier and method class.

Redis in production (one Lua call per key and round trip, pipelined; a busy bucket's calls
admitted from short leases of units; keys expire on their own) and an in-process backend for
the embedded default; what happens when Redis is down is a per-class policy from the
configuration file.
"""

from gateway.ratelimit.config import ClassPolicy, FailurePolicy, Limit, RateLimitConfig, load_config
from gateway.ratelimit.gcra import Decision, gcra
from gateway.ratelimit.limiter import InProcessBackend, RateLimiter, RedisBackend

__all__ = [
    "ClassPolicy",
    "Decision",
    "FailurePolicy",
    "InProcessBackend",
    "Limit",
    "RateLimitConfig",
    "RateLimiter",
    "RedisBackend",
    "gcra",
    "load_config",
]
