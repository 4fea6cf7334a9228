"""Rate-limit backends and the limiter that applies the per-class failure policy.

``RedisBackend`` runs the GCRA Lua script with EVALSHA; every decision asked for during one
event-loop tick goes to Redis in one pipeline, so under load the round trips are shared.
``InProcessBackend`` runs the same algorithm on a dict (the embedded default, and the local
fallback of fail-open classes). Both take an injectable clock so tests assert exact
allow/deny sequences.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Protocol

from meshlib.errors import QuotaViolation, ResourceExhausted, Unavailable
from meshlib.ratelimit.config import FailurePolicy, Limit, RateLimitConfig
from meshlib.ratelimit.gcra import LUA_GCRA, Decision, gcra

log = logging.getLogger("meshlib.ratelimit")

Clock = Callable[[], int]  # microseconds


def wall_clock_us() -> int:
    """Now, in microseconds since the epoch."""
    return time.time_ns() // 1000


class BackendUnavailable(Exception):
    """The shared store did not answer."""


class Backend(Protocol):
    """Decides calls for keys."""

    async def decide(self, key: str, limit: Limit) -> Decision:
        """Consume one call from ``key``'s bucket if it has room."""


class InProcessBackend:
    """GCRA on a bounded dict; exact, fast, but per process."""

    def __init__(self, clock: Clock = wall_clock_us, max_keys: int = 100_000) -> None:
        self._clock = clock
        self._max_keys = max_keys
        self._tats: OrderedDict[str, int] = OrderedDict()

    async def decide(self, key: str, limit: Limit) -> Decision:
        """Decide without I/O."""
        return self.decide_now(key, limit)

    def decide_now(self, key: str, limit: Limit) -> Decision:
        """The synchronous decision (used by the fail-open fallback too)."""
        now = self._clock()
        decision, new_tat = gcra(self._tats.get(key), now, limit.emission_us, limit.burst)
        if new_tat is not None:
            self._tats[key] = new_tat
            self._tats.move_to_end(key)
            while len(self._tats) > self._max_keys:
                self._tats.popitem(last=False)  # the least recently used bucket is the idlest
        return decision


class RedisBackend:
    """GCRA in Redis: one Lua call per decision, pipelined per event-loop tick."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "rl:",
        clock: Clock | None = None,
        timeout_seconds: float = 0.25,
    ) -> None:
        import redis.asyncio as redis

        self._redis = redis.Redis.from_url(
            url, socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds, max_connections=64
        )
        self._prefix = prefix
        self._clock = clock  # None: Redis' own clock, shared by every gateway replica
        self._sha: str | None = None
        self._pending: list[tuple[str, Limit, asyncio.Future[Decision]]] = []
        self._flush_scheduled = False

    async def decide(self, key: str, limit: Limit) -> Decision:
        """Queue the decision for this tick's pipeline and wait for it."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Decision] = loop.create_future()
        self._pending.append((key, limit, future))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(lambda: asyncio.ensure_future(self._flush()))
        return await future

    async def _flush(self) -> None:
        batch, self._pending, self._flush_scheduled = self._pending, [], False
        if not batch:
            return
        try:
            results = await self._run_batch(batch)
            decisions = [
                Decision(bool(allowed), limit.burst, int(remaining), int(retry_after), int(reset))
                for (_, limit, _), (allowed, remaining, retry_after, reset) in zip(batch, results, strict=True)
            ]
        except Exception as error:  # connection refused, timeout, a bad reply: the store is not usable
            failure = BackendUnavailable(f"{type(error).__name__}: {error}")
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(failure)
            return
        for (_, _, future), decision in zip(batch, decisions, strict=True):
            if not future.done():
                future.set_result(decision)

    async def _run_batch(self, batch: list[tuple[str, Limit, asyncio.Future[Decision]]]) -> list[Any]:
        """One pipelined write of EVALSHA calls; loads the script once (again after a Redis restart)."""
        from redis.exceptions import NoScriptError

        now = "" if self._clock is None else str(self._clock())
        for attempt in range(2):
            if self._sha is None:
                self._sha = await self._redis.script_load(LUA_GCRA)
            sha = self._sha
            results = await self._pipelined(
                [
                    ("EVALSHA", sha, 1, self._prefix + key, limit.emission_us, limit.burst, now)
                    for key, limit, _ in batch
                ]
            )
            if attempt == 0 and any(isinstance(r, NoScriptError) for r in results):
                self._sha = None
                continue
            for result in results:
                if isinstance(result, Exception):
                    raise result
            return results
        raise AssertionError("unreachable")

    async def _pipelined(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send ``commands`` in one write on a pooled connection and read each reply in order.

        What redis-py's ``Pipeline`` does, without its per-command bookkeeping and retry
        wrapper (a third of the gateway's rate-limit CPU): an error reply comes back as its
        exception, in its place; a connection failure raises, and the connection is dropped.
        """
        from redis.exceptions import ResponseError

        pool = self._redis.connection_pool
        connection = await pool.get_connection()
        try:
            await connection.send_packed_command(connection.pack_commands(commands), check_health=False)
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(await connection.read_response())
                except ResponseError as error:
                    replies.append(error)
            return replies
        except BaseException:
            await connection.disconnect()
            raise
        finally:
            await pool.release(connection)

    async def ping(self) -> bool:
        """True when Redis answers."""
        try:
            return bool(await self._redis.ping())
        except Exception:
            return False

    async def close(self) -> None:
        """Release the connection pool."""
        await self._redis.aclose()


class RateLimiter:
    """Applies the configuration: which limit, which backend, and the failure policy."""

    def __init__(
        self,
        config: Callable[[], RateLimitConfig],
        backend: Backend,
        *,
        fallback: InProcessBackend | None = None,
        on_decision: Callable[[str, str], None] | None = None,
    ) -> None:
        self._config = config
        self._backend = backend
        self._fallback = fallback or InProcessBackend()
        self._on_decision = on_decision or (lambda _cls, _outcome: None)

    async def check(self, subject: str, tier: str | None, rate_class: str) -> Decision | None:
        """Decide one call of ``subject`` (a partner) in ``rate_class``; None = unlimited class.

        Raises ResourceExhausted over the limit, Unavailable for a fail-closed class whose
        store is down.
        """
        config = self._config()
        limit = config.limit_for(tier, rate_class)
        if limit is None:
            return None
        # The tier is part of the key: a bucket only makes sense with the limit that filled it.
        key = f"{rate_class}:{tier or config.default_tier}:{subject}"
        decision = await self._decide(key, limit, rate_class, config)
        self._enforce(decision, subject, rate_class, limit)
        return decision

    async def check_allowance(self, key: str, per_day: int, rate_class: str) -> Decision | None:
        """A daily allowance (e.g. unattended reads of one consent): ``per_day`` calls a day."""
        if per_day <= 0:
            return None
        limit = Limit(rate=per_day, period_seconds=86_400, burst=per_day)
        decision = await self._decide(f"allowance:{key}", limit, rate_class, self._config())
        if not decision.allowed:
            self._on_decision(rate_class, "denied_allowance")
            raise ResourceExhausted(
                "the consent's daily allowance of unattended reads is used up",
                reason="CONSENT_READS_EXHAUSTED",
                retry_after_seconds=decision.retry_after_seconds,
                metadata={"allowance_per_day": str(per_day)},
            )
        return decision

    async def _decide(self, key: str, limit: Limit, rate_class: str, config: RateLimitConfig) -> Decision:
        try:
            return await self._backend.decide(key, limit)
        except BackendUnavailable:
            policy = config.policy_for(rate_class).on_backend_failure
            self._on_decision(rate_class, f"backend_down_{policy.value}")
            log.warning("rate-limit store unavailable", extra={"rate_class": rate_class, "policy": policy.value})
            if policy is FailurePolicy.FAIL_CLOSED:
                raise Unavailable(
                    "rate limiting is unavailable; retry shortly",
                    reason="RATE_LIMITER_UNAVAILABLE",
                    retry_after_seconds=1.0,
                ) from None
            return replace(self._fallback.decide_now(key, limit), degraded=True)

    def _enforce(self, decision: Decision, subject: str, rate_class: str, limit: Limit) -> None:
        if decision.allowed:
            self._on_decision(rate_class, "allowed")
            return
        self._on_decision(rate_class, "denied")
        raise ResourceExhausted(
            f"rate limit exceeded for {rate_class}",
            reason="RATE_LIMIT_EXCEEDED",
            retry_after_seconds=decision.retry_after_seconds,
            violations=[QuotaViolation(subject=f"partners/{subject}", description=f"{rate_class}: {limit.describe()}")],
            metadata={"rate_limit_class": rate_class},
        )


def headers(decision: Decision | None) -> tuple[tuple[str, str], ...]:
    """The ``ratelimit-*`` metadata for an answer."""
    if decision is None:
        return ()
    return (
        ("ratelimit-limit", str(decision.limit)),
        ("ratelimit-remaining", str(decision.remaining)),
        ("ratelimit-reset", str(decision.reset_seconds)),
    )
