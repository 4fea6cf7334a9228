"""Lost dependencies answered as faults: UNAVAILABLE with RetryInfo, never INTERNAL.

A database restarting or stopped, Redis gone, a peer service unreachable: each surfaces as a
driver exception the use case does not catch (asyncpg's ``CannotConnectNowError``, a
``ConnectionRefusedError`` at connect, SQLAlchemy's disconnect errors, redis' ``ConnectionError``,
a peer's ``UNAVAILABLE``). :func:`as_unavailable` recognises them, anywhere in the exception's
cause chain, so the one error mapping (:class:`meshlib.grpc_errors.ErrorMappingInterceptor`)
answers ``UNAVAILABLE`` with a stable reason and a retry delay every client honours: the
caller retries with the same request_id and nothing is done twice.

Only *connection* failures count: a constraint violation, a syntax error or a bad value stays
an INTERNAL bug report, since retrying it cannot help.
"""

from __future__ import annotations

import errno

import grpc

from meshlib.errors import PEER_UNAVAILABLE, STORE_UNAVAILABLE, Unavailable

__all__ = ["PEER_UNAVAILABLE", "STORE_UNAVAILABLE", "as_unavailable"]
# Long enough for a restarting PostgreSQL (sub-second) to accept again; short enough that a
# caller honouring it does not wait much past a brief outage.
STORE_RETRY_SECONDS = 0.5
PEER_RETRY_SECONDS = 0.5

# PostgreSQL SQLSTATEs of a lost or refused connection: class 08 (connection exception),
# 57P01-57P03 (admin/crash shutdown, cannot connect now), 53300 (too many connections).
_PG_CONNECTION_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "53300"})

_CONNECT_ERRNOS = frozenset({errno.ECONNREFUSED, errno.ECONNRESET, errno.EHOSTUNREACH, errno.ENETUNREACH})
_MAX_CHAIN = 8


def _chain(error: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and len(seen) < _MAX_CHAIN and current not in seen:
        seen.append(current)
        orig = getattr(current, "orig", None)  # SQLAlchemy's DBAPIError wraps the driver's
        current = orig if isinstance(orig, BaseException) else (current.__cause__ or current.__context__)
    return seen


def _is_store_failure(error: BaseException) -> bool:
    if isinstance(error, (ConnectionError, TimeoutError)):  # refused, reset, a connect timing out
        return True
    if type(error) is OSError and (error.errno in _CONNECT_ERRNOS or "Multiple exceptions" in str(error)):
        return True  # asyncio's connect to every address of a host failed
    module = type(error).__module__
    name = type(error).__name__
    if module.startswith("sqlalchemy"):
        if getattr(error, "connection_invalidated", False):
            return True
        # The pool could not hand out a connection in time (every one is reconnecting).
        return name == "TimeoutError"
    if module.startswith("asyncpg"):
        sqlstate = getattr(error, "sqlstate", None) or ""
        if sqlstate.startswith("08") or sqlstate in _PG_CONNECTION_SQLSTATES:
            return True
        # Raised by the client itself: the connection closed under a query, or is unusable.
        return name in ("ConnectionDoesNotExistError", "InterfaceError", "ClientCannotConnectError")
    if module.startswith("redis"):
        return name in (
            "ConnectionError",
            "TimeoutError",
            "BusyLoadingError",
            "ClusterDownError",
            "MasterDownError",
            "TryAgainError",
            "RedisClusterUnreachableError",
            "SlotNotCoveredError",
            "MaxConnectionsError",
        )
    return False


def as_unavailable(error: BaseException) -> Unavailable | None:
    """The UNAVAILABLE answer for a lost store or peer behind ``error``; None for anything else."""
    for link in _chain(error):
        if isinstance(link, grpc.aio.AioRpcError) and link.code() in (
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.DEADLINE_EXCEEDED,
        ):
            return Unavailable(
                "a service this call depends on is unreachable; retry shortly",
                reason=PEER_UNAVAILABLE,
                retry_after_seconds=PEER_RETRY_SECONDS,
            )
        if _is_store_failure(link):
            return Unavailable(
                "the service's store is unreachable; retry shortly",
                reason=STORE_UNAVAILABLE,
                retry_after_seconds=STORE_RETRY_SECONDS,
            )
    return None
