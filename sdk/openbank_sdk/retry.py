"""Retries with exponential backoff and full jitter, on UNAVAILABLE only.

UNAVAILABLE is the one status the mesh documents as transient (a restarting service, the
rate-limit store down for a fail-closed class). Every other status is an answer: retrying
INVALID_ARGUMENT or FAILED_PRECONDITION unchanged cannot succeed, and RESOURCE_EXHAUSTED
carries its own ``retry_after`` for the caller to honour. Mutating calls keep their
``request_id`` across attempts, so a retry can never do the work twice.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import grpc

from openbank_sdk.errors import OpenBankError

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry UNAVAILABLE.

    Attempt ``n`` (1-based) waits a uniformly random time in ``[0, min(max_backoff,
    initial_backoff * multiplier ** (n - 1))]`` (AWS "full jitter"), and never less than the
    mesh's ``RetryInfo`` delay when it sent one.
    """

    max_attempts: int = 4
    initial_backoff: float = 0.1
    max_backoff: float = 2.0
    multiplier: float = 2.0

    def backoff(self, attempt: int, hint: float | None = None, rng: Callable[[], float] = random.random) -> float:
        """Seconds to wait after failed attempt number ``attempt``."""
        ceiling = min(self.max_backoff, self.initial_backoff * self.multiplier ** max(0, attempt - 1))
        delay = ceiling * rng()
        return max(delay, hint or 0.0)


DEFAULT_RETRY = RetryPolicy()
NO_RETRY = RetryPolicy(max_attempts=1)


def is_retryable(error: OpenBankError) -> bool:
    """UNAVAILABLE, and nothing else."""
    return error.code == grpc.StatusCode.UNAVAILABLE


async def call_with_retry(
    operation: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """Run ``operation`` (which raises :class:`OpenBankError`), retrying UNAVAILABLE per ``policy``."""
    attempt = 1
    while True:
        try:
            return await operation()
        except OpenBankError as error:
            if not is_retryable(error) or attempt >= policy.max_attempts:
                raise
            await sleep(policy.backoff(attempt, error.retry_after))
            attempt += 1
