"""Session stores: in-process (one replica, the local mesh, tests) and Redis (every replica).

The browser holds only a random 256-bit id; the store keys sessions by its SHA-256, so a
leaked store dump holds no usable cookie.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from bankweb.ports import Session, SessionStore


def new_session_id() -> str:
    """A fresh, unguessable session id."""
    return secrets.token_urlsafe(32)


def _key(session_id: str, namespace: str = "bankweb") -> str:
    return f"{namespace}:session:" + hashlib.sha256(session_id.encode()).hexdigest()


async def rotate_session(store: SessionStore, old: Session | None, data: dict[str, Any], ttl_seconds: int) -> Session:
    """A session under a new id (and a new CSRF token), the old one gone: whenever a session's
    privilege changes (no session fixation)."""
    if old is not None:
        await store.delete(old.session_id)
    data = dict(data, csrf=secrets.token_urlsafe(32))
    session = Session(new_session_id(), data, rotated_from=old.session_id if old else None)
    await store.save(session.session_id, session.data, ttl_seconds)
    return session


def csrf_ok(session: Session | None, submitted: str) -> bool:
    """The form's token is the session's (constant-time)."""
    expected = session.data.get("csrf", "") if session else ""
    return bool(expected) and hmac.compare_digest(expected.encode(), submitted.encode())


class MemorySessionStore:
    """Sessions in this process, expiring after their idle time."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, namespace: str = "bankweb") -> None:
        self._clock = clock
        self._namespace = namespace
        self._items: dict[str, tuple[float, str]] = {}

    async def load(self, session_id: str) -> dict[str, Any] | None:
        """The session's data, or None when unknown or expired."""
        item = self._items.get(_key(session_id, self._namespace))
        if item is None or item[0] <= self._clock():
            self._items.pop(_key(session_id, self._namespace), None)
            return None
        return json.loads(item[1])

    async def save(self, session_id: str, data: dict[str, Any], ttl_seconds: int) -> None:
        """Store (or replace) the session for ``ttl_seconds``."""
        now = self._clock()
        if len(self._items) > 10_000:  # forget the expired ones now and then
            self._items = {k: v for k, v in self._items.items() if v[0] > now}
        self._items[_key(session_id, self._namespace)] = (now + ttl_seconds, json.dumps(data))

    async def delete(self, session_id: str) -> None:
        """Forget the session."""
        self._items.pop(_key(session_id, self._namespace), None)


class RedisSessionStore:
    """Sessions in Redis with their idle time as the key's expiry."""

    def __init__(self, url: str, namespace: str = "bankweb") -> None:
        from meshlib.redis_client import connect

        self._redis = connect(url)  # one server, or a Redis Cluster (redis+cluster://)
        # The customer pages and the operator console keep their sessions apart.
        self._namespace = namespace

    async def load(self, session_id: str) -> dict[str, Any] | None:
        """The session's data, or None."""
        raw = await self._redis.get(_key(session_id, self._namespace))
        return json.loads(raw) if raw else None

    async def save(self, session_id: str, data: dict[str, Any], ttl_seconds: int) -> None:
        """Store with expiry."""
        await self._redis.set(_key(session_id, self._namespace), json.dumps(data), ex=ttl_seconds)

    async def delete(self, session_id: str) -> None:
        """Forget."""
        await self._redis.delete(_key(session_id, self._namespace))

    async def close(self) -> None:
        """Close the connection pool."""
        await self._redis.aclose()


async def load_session(store: SessionStore, session_id: str | None) -> Session | None:
    """The browser's session, if its cookie names a live one."""
    if not session_id:
        return None
    data = await store.load(session_id)
    return Session(session_id, data) if data is not None else None


class AttemptLimiter:
    """Sign-in throttling: at most a number of attempts per key in a sliding window (one limit
    per client address, a tighter one per username). In-process: each replica counts its own,
    and identity's lock-out (five failures in a row) holds across all of them."""

    def __init__(
        self, per_username: int, per_address: int, window_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._limits = {"user": per_username, "address": per_address}
        self._window = window_seconds
        self._clock = clock
        self._attempts: dict[str, deque[float]] = {}

    def allow(self, address: str, username: str) -> bool:
        """Count one attempt for both; False (nothing counted) when either is over its limit."""
        now = self._clock()
        queues = []
        for kind, value in (("address", address), ("user", username.lower()[:64])):
            queue = self._attempts.setdefault(f"{kind}:{value}", deque())
            while queue and queue[0] <= now - self._window:
                queue.popleft()
            if len(queue) >= self._limits[kind]:
                return False
            queues.append(queue)
        for queue in queues:
            queue.append(now)
        if len(self._attempts) > 10_000:
            self._attempts = {k: q for k, q in self._attempts.items() if q and q[-1] > now - self._window}
        return True
