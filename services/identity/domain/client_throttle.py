"""Failed client authentications, counted per client_id and slowed down.

After ``max_failures`` failures within ``window_seconds`` a client_id is locked for a
while (doubling with each lock, up to ``max_lockout_seconds``): every authentication of
it is refused at once, before any secret or assertion is looked at, with
RESOURCE_EXHAUSTED RATE_LIMIT_EXCEEDED and the seconds to wait. A success clears the
count. Kept per identity replica, in memory and bounded (client_ids are what callers
send, known or not).

A client_id is not a secret, so a hostile caller can lock a partner out for the lock's
length; the partner's tokens already issued keep working, and the gateway's per-client
limit bounds how fast anyone can fail in its name.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from meshlib.errors import ResourceExhausted


@dataclass
class _Record:
    window_start: float
    failures: int = 0
    lockouts: int = 0
    locked_until: float = float("-inf")


class ClientAuthThrottle:
    """Per-client failure counts and lock-out windows."""

    def __init__(
        self,
        *,
        max_failures: int = 10,
        window_seconds: float = 60.0,
        base_lockout_seconds: float = 1.0,
        max_lockout_seconds: float = 300.0,
        max_clients: int = 50_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_failures = max_failures
        self._window = window_seconds
        self._base = base_lockout_seconds
        self._max_lockout = max_lockout_seconds
        self._max_clients = max_clients
        self._clock = clock
        self._records: OrderedDict[str, _Record] = OrderedDict()

    def check(self, client_id: str) -> None:
        """Refuse at once while ``client_id`` is locked out."""
        record = self._records.get(client_id)
        if record is None:
            return
        remaining = record.locked_until - self._clock()
        if remaining > 0:
            raise ResourceExhausted(
                "too many failed client authentications; retry later",
                reason="RATE_LIMIT_EXCEEDED",
                retry_after_seconds=remaining,
            )

    def failed(self, client_id: str) -> None:
        """Count a failure; lock the client once it has failed too often within the window."""
        now = self._clock()
        record = self._records.get(client_id)
        if record is None or (now - record.window_start > self._window and now > record.locked_until + self._window):
            record = _Record(window_start=now)  # quiet for a window: start over
        elif now - record.window_start > self._window:
            record.window_start, record.failures = now, 0
        record.failures += 1
        if record.failures >= self._max_failures:
            record.lockouts += 1
            lockout = min(self._max_lockout, self._base * 2 ** (record.lockouts - 1))
            record.locked_until = now + lockout
            record.window_start, record.failures = now + lockout, 0
        self._records[client_id] = record
        self._records.move_to_end(client_id)
        while len(self._records) > self._max_clients:
            self._records.popitem(last=False)

    def succeeded(self, client_id: str) -> None:
        """A client that proved who it is starts afresh."""
        self._records.pop(client_id, None)
