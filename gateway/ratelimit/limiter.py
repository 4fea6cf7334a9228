"""Rate-limit backends and the limiter that applies the per-class failure policy.

``RedisBackend`` runs the GCRA Lua script with EVALSHA, at most two pipelines in flight, so
under load the round trips are shared, and one script call decides every key of a pipeline
(every key of one hash slot, on a Redis Cluster); a busy key admits from a short lease of units taken
from the shared bucket ahead of its calls (never more than the limit, across replicas).
``InProcessBackend`` runs the same algorithm on a dict (the embedded default, and the local
fallback of fail-open classes). Both take an injectable clock so tests assert exact
allow/deny sequences.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Protocol

from gateway.ratelimit.config import FailurePolicy, Limit, RateLimitConfig
from gateway.ratelimit.gcra import LUA_GCRA, Decision, gcra, units_outcome
from meshlib.cache import BoundedMap
from meshlib.errors import QuotaViolation, ResourceExhausted, Unavailable
from meshlib.redis_client import connect, is_cluster

log = logging.getLogger("gateway.ratelimit")

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
        self._tats: BoundedMap[str, int] = BoundedMap(max_keys)  # the least recently used bucket is the idlest

    async def decide(self, key: str, limit: Limit) -> Decision:
        """Decide without I/O."""
        return self.decide_now(key, limit)

    def decide_now(self, key: str, limit: Limit) -> Decision:
        """The synchronous decision (used by the fail-open fallback too)."""
        now = self._clock()
        decision, new_tat = gcra(self._tats.peek(key), now, limit.emission_us, limit.burst)
        if new_tat is not None:
            self._tats.put(key, new_tat)
        return decision


class _Lease:
    """Units of one bucket granted to this process ahead of its calls, and how many to ask next."""

    __slots__ = ("asked_us", "expires_us", "granted_us", "limit", "remaining", "reset_us", "size", "units")

    def __init__(self, limit: Limit) -> None:
        self.limit = limit
        self.units = 0  # granted, not used yet
        self.remaining = 0  # the bucket's remaining units (outside this lease) at the grant
        self.reset_us = 0
        self.granted_us = 0
        self.expires_us = 0
        self.asked_us = -(2**62)  # when Redis was last asked for this key
        self.size = 0  # units asked for beyond the waiting calls (grows while they run out)


def monotonic_us() -> int:
    """A monotonic clock in microseconds (lease expiry never needs wall time)."""
    return time.monotonic_ns() // 1000


class RedisBackend:
    """GCRA in Redis, shared by every gateway replica; at most two pipelines in flight.

    Decisions asked for while both are in flight wait for the next one, so under load a round
    trip carries many; a key's waiting calls are one entry of the batch script asking for that
    many units, and a pipeline's entries are one script call (one per hash slot on a cluster).

    Leases: a key that keeps running out asks Redis for a few units more than its waiting calls
    need (doubling while they run out within ``lease_seconds``, halving when they expire
    unused), and the next calls are admitted from those units without a round trip. Units are
    taken from the shared bucket when granted, so no replica ever admits more than the limit;
    units unused after ``lease_seconds`` go back to the bucket, so what a lease costs other
    replicas is a delay of at most ``lease_seconds`` near an empty bucket. A bucket gets
    leases only when its burst is at least ``LEASE_MIN_BURST``, and a lease holds at most
    1/``LEASE_BURST_SHARE`` of the burst (and ``max_lease`` units): small buckets, such as a
    consent's daily allowance, are decided one call at a time in Redis.
    """

    # Two pipelines in flight: Redis works on one while this process reads the other's replies.
    MAX_IN_FLIGHT = 2
    LEASE_MIN_BURST = 32
    LEASE_BURST_SHARE = 16
    # Keys decided by one script run: Redis serves nothing else while a script runs.
    MAX_KEYS_PER_CALL = 256

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "rl:",
        clock: Clock | None = None,
        timeout_seconds: float = 0.25,
        lease_seconds: float = 0.05,
        max_lease: int = 64,
        max_keys: int = 100_000,
    ) -> None:
        # A Redis Cluster (redis+cluster://): each pipeline is split by the node of each key's
        # slot (every script call touches one key), sent to the nodes at once, and the slot
        # map is read again after a MOVED or a lost node (a failover).
        self._cluster = is_cluster(url)
        self._redis = connect(
            url, socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds, max_connections=64
        )
        self._refreshing: asyncio.Task[None] | None = None
        self._prefix = prefix
        self._clock = clock  # None: Redis' own clock, shared by every gateway replica
        self._local_clock = clock or monotonic_us
        self._lease_us = int(lease_seconds * 1_000_000)
        self._max_lease = max_lease if lease_seconds > 0 else 0
        self._sha: str | None = None
        # The least recently asked leases are the idlest; one pushed out hands its units back.
        self._leases: BoundedMap[str, _Lease] = BoundedMap(
            max_keys, on_evict=lambda key, lease: self._return_units(key, lease, shrink=False)
        )
        self._waiting: dict[tuple[str, Limit], list[asyncio.Future[Decision]]] = {}
        self._refunds: list[tuple[str, Limit, int]] = []
        self._flush_scheduled = False
        self._in_flight = 0
        self._flush_tasks: set[asyncio.Future[None]] = set()  # held: a dropped task may be collected

    async def decide(self, key: str, limit: Limit) -> Decision:
        """Admit from this key's lease, or queue for the next pipeline and wait."""
        lease = self._leases.peek(key)
        if lease is not None and lease.units:
            now = self._local_clock()
            if lease.limit == limit and now < lease.expires_us:
                lease.units -= 1
                elapsed = now - lease.granted_us
                return Decision(True, limit.burst, lease.remaining + lease.units, 0, max(0, lease.reset_us - elapsed))
            self._return_units(key, lease, shrink=True)
        future: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault((key, limit), []).append(future)
        self._schedule_flush()
        return await future

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled and self._in_flight < self.MAX_IN_FLIGHT:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._start_flush)

    def _start_flush(self) -> None:
        self._flush_scheduled = False
        if self._in_flight < self.MAX_IN_FLIGHT and (self._waiting or self._refunds):
            self._in_flight += 1
            task = asyncio.ensure_future(self._flush())
            self._flush_tasks.add(task)
            task.add_done_callback(self._flush_tasks.discard)

    def _return_units(self, key: str, lease: _Lease, *, shrink: bool) -> None:
        """Give a lease's unused units back to the bucket in the next pipeline."""
        if lease.units:
            self._refunds.append((key, lease.limit, lease.units))
            lease.units = 0
            if shrink:
                lease.size //= 2

    def _expire(self, key: str, lease: _Lease, granted_us: int) -> None:
        # A lease still holding units when its time is up returns them, busy or idle.
        if self._leases.peek(key) is lease and lease.granted_us == granted_us and lease.units:
            self._return_units(key, lease, shrink=True)
            self._schedule_flush()

    def _lease_size(self, key: str, limit: Limit, now: int) -> tuple[_Lease | None, int]:
        """The lease to fill for ``key`` and how many extra units to ask for."""
        if self._max_lease == 0 or limit.burst < self.LEASE_MIN_BURST:
            return None, 0
        lease = self._leases.get(key)  # an ask counts as a use
        if lease is None or lease.limit != limit:
            if lease is not None:
                self._return_units(key, lease, shrink=False)
            lease = _Lease(limit)
            self._leases.put(key, lease)
        elif now - lease.asked_us < self._lease_us:
            # Asked again within a lease's time: the calls come faster than the lease lasts.
            lease.size = min(max(1, lease.size * 2), self._max_lease, limit.burst // self.LEASE_BURST_SHARE)
        lease.asked_us = now
        return lease, lease.size

    async def _flush(self) -> None:
        try:
            while self._waiting or self._refunds:
                waiting, self._waiting = self._waiting, {}
                refunds, self._refunds = self._refunds, []
                await self._decide_batch(waiting, refunds)
        finally:
            self._in_flight -= 1

    async def _decide_batch(
        self,
        waiting: dict[tuple[str, Limit], list[asyncio.Future[Decision]]],
        refunds: list[tuple[str, Limit, int]],
    ) -> None:
        now = self._local_clock()
        asks: list[tuple[str, Limit, list[asyncio.Future[Decision]], _Lease | None, int]] = []
        for (key, limit), futures in waiting.items():
            lease, extra = self._lease_size(key, limit, now)
            asks.append((key, limit, futures, lease, len(futures) + extra))
        commands = [(key, limit, -units) for key, limit, units in refunds]
        commands += [(key, limit, units) for key, limit, _, _, units in asks]
        try:
            replies = (await self._run_batch(commands))[len(refunds) :]
        except Exception as error:  # connection refused, timeout, a bad reply: the store is not usable
            failure = BackendUnavailable(f"{type(error).__name__}: {error}")
            for _, _, futures, _, _ in asks:
                for future in futures:
                    if not future.done():
                        future.set_exception(failure)
            return
        for (key, limit, futures, lease, _), (granted, diff_us) in zip(asks, replies, strict=True):
            remaining, retry_after_us, reset_us = units_outcome(diff_us, limit.emission_us, limit.burst)
            for index, future in enumerate(futures):
                if index < granted:
                    decision = Decision(True, limit.burst, remaining + granted - index - 1, 0, reset_us)
                else:
                    decision = Decision(False, limit.burst, 0, retry_after_us, reset_us)
                if not future.done():
                    future.set_result(decision)
            spare = granted - len(futures)
            if spare <= 0 or lease is None:
                continue
            if self._leases.peek(key) is not lease or lease.units:  # evicted or replaced meanwhile
                self._refunds.append((key, limit, spare))
                continue
            lease.units, lease.remaining, lease.reset_us = spare, remaining, reset_us
            lease.granted_us, lease.expires_us = now, now + self._lease_us
            asyncio.get_running_loop().call_later(self._lease_us / 1_000_000, self._expire, key, lease, now)

    async def _run_batch(self, commands: list[tuple[str, Limit, int]]) -> list[tuple[int, int]]:
        """Decide ``commands`` (key, limit, units) in one pipelined write: one script call per
        batch of keys sharing a hash slot (all of them on a single server). Loads the script
        once, and again after a Redis restart; returns (granted, diff_us) per command, in order."""
        from redis.exceptions import NoScriptError

        now = "" if self._clock is None else str(self._clock())
        batches = self._slot_batches(commands)
        for attempt in range(2):
            if self._sha is None:
                self._sha = await self._redis.script_load(LUA_GCRA)
            sha = self._sha
            calls = []
            for indexes in batches:
                arguments: list[Any] = [now]
                for index in indexes:
                    _, limit, units = commands[index]
                    arguments += (limit.emission_us, limit.burst, units)
                keys = [self._prefix + commands[index][0] for index in indexes]
                calls.append(("EVALSHA", sha, len(keys), *keys, *arguments))
            results = await self._pipelined(calls)
            if attempt == 0 and any(isinstance(r, NoScriptError) for r in results):
                self._sha = None
                continue
            replies: list[tuple[int, int]] = [(0, 0)] * len(commands)
            for indexes, result in zip(batches, results, strict=True):
                if isinstance(result, Exception):
                    raise result
                for position, index in enumerate(indexes):
                    replies[index] = (int(result[2 * position]), int(result[2 * position + 1]))
            return replies
        raise AssertionError("unreachable")

    def _slot_batches(self, commands: list[tuple[str, Limit, int]]) -> list[list[int]]:
        """The commands' indexes, batched by their keys' hash slot (one batch on a single server),
        each batch at most ``MAX_KEYS_PER_CALL`` long so one script run never holds Redis long."""
        groups: dict[int, list[int]] = {}
        for index, (key, _, _) in enumerate(commands):
            slot = self._redis.keyslot(self._prefix + key) if self._cluster else 0
            groups.setdefault(slot, []).append(index)
        return [
            indexes[start : start + self.MAX_KEYS_PER_CALL]
            for indexes in groups.values()
            for start in range(0, len(indexes), self.MAX_KEYS_PER_CALL)
        ]

    async def _pipelined(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send ``commands`` in one write per node and read each reply in order."""
        if not self._cluster:
            return await self._pipelined_to(self._redis.connection_pool, commands)
        try:
            replies = await self._pipelined_cluster(commands)
            moved = [i for i, reply in enumerate(replies) if _is_redirect(reply)]
            if moved:  # the slot map changed (a failover, a reshard): read it again, resend those
                await self._redis.nodes_manager.initialize()
                again = await self._pipelined_cluster([commands[i] for i in moved])
                for index, reply in zip(moved, again, strict=True):
                    replies[index] = reply
            return replies
        except Exception:
            self._refresh_slots()
            raise

    def _refresh_slots(self) -> None:
        """Read the slot map again in the background (a node was lost: its replica takes over)."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self._redis.nodes_manager.initialize())
            self._refreshing.add_done_callback(lambda task: task.cancelled() or task.exception())

    async def _pipelined_cluster(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Each command to the node of its key's slot, the nodes in parallel, replies in order."""
        from redis.exceptions import ResponseError

        if not self._redis.nodes_manager.slots_cache:
            await self._redis.initialize()
        groups: dict[Any, list[int]] = {}
        for index, command in enumerate(commands):
            groups.setdefault(self._redis.get_node_from_key(command[3]), []).append(index)
        replies: list[Any] = [None] * len(commands)

        async def send(node: Any, indexes: list[int]) -> None:
            connection = node.acquire_connection()
            try:
                batch = [commands[i] for i in indexes]
                await connection.send_packed_command(connection.pack_commands(batch), check_health=False)
                for index in indexes:
                    try:
                        replies[index] = await connection.read_response()
                    except ResponseError as error:
                        replies[index] = error
            except BaseException:
                await connection.disconnect()
                raise
            finally:
                node.release(connection)

        await asyncio.gather(*(send(node, indexes) for node, indexes in groups.items()))
        return replies

    async def _pipelined_to(self, pool: Any, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send ``commands`` in one write on a pooled connection and read each reply in order.

        What redis-py's ``Pipeline`` does, without its per-command bookkeeping and retry
        wrapper (a third of the gateway's rate-limit CPU): an error reply comes back as its
        exception, in its place; a connection failure raises, and the connection is dropped.
        """
        from redis.exceptions import ResponseError

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
        """Give every lease's unused units back, then release the connection pool."""
        for key, lease in self._leases.items():
            self._return_units(key, lease, shrink=False)
        refunds, self._refunds = self._refunds, []
        if refunds:
            try:
                await self._run_batch([(key, limit, -units) for key, limit, units in refunds])
            except Exception as error:  # the units come back on their own as the bucket drips
                log.warning("could not return leased rate-limit units", extra={"error": type(error).__name__})
        await self._redis.aclose()


def _is_redirect(reply: Any) -> bool:
    """A MOVED or ASK error: the key's slot is served elsewhere now."""
    from redis.exceptions import ResponseError

    return isinstance(reply, ResponseError) and str(reply).split(" ", 1)[0] in ("MOVED", "ASK")


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
