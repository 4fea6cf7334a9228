"""Failed client authentications, counted per client_id and slowed down.

After ``max_failures`` failures within ``window_seconds`` a client_id is locked for a
while (doubling with each lock, up to ``max_lockout_seconds``). While locked, every
*failed* authentication in its name is answered RESOURCE_EXHAUSTED RATE_LIMIT_EXCEEDED with
the seconds to wait, and the failures go on counting; the right credentials still pass.

A client_id is not a secret: were the lock to refuse the right credentials too, anyone
could lock a partner out of its tokens with a few wrong guesses in its name. Letting the
right ones through gives a guesser nothing, since client secrets are bank-generated 256-bit
values (a keyed hash checks one in microseconds) and assertions are signed; a secret
still stored as Argon2id from before is not verified while locked (that costs 170 ms of
CPU), so its client waits the lock out. A success clears the count. Kept per identity
replica, in memory and bounded (client_ids are what callers send, known or not).
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

    def locked_for(self, client_id: str) -> float:
        """Seconds ``client_id`` stays locked (0 when it is not)."""
        record = self._records.get(client_id)
        return 0.0 if record is None else max(0.0, record.locked_until - self._clock())

    @staticmethod
    def refusal(remaining_seconds: float) -> ResourceExhausted:
        """The answer to a failed authentication of a locked client."""
        return ResourceExhausted(
            "too many failed client authentications; retry later",
            reason="RATE_LIMIT_EXCEEDED",
            retry_after_seconds=remaining_seconds,
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
