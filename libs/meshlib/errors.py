"""Domain errors: plain Python, no gRPC.

A service raises one of these with a stable UPPER_SNAKE ``reason`` (see
``openbank.common.v1.ErrorReason``) and a message that is safe to show a partner. The
mapping to gRPC status codes and ``google.rpc.Status`` details lives in
:mod:`meshlib.grpc_errors`, the one place that knows about transport.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class ErrorKind(enum.Enum):
    """The category of a failure; the transport maps each to its own status code."""

    INVALID_ARGUMENT = "invalid_argument"
    NOT_FOUND = "not_found"
    ALREADY_EXISTS = "already_exists"
    FAILED_PRECONDITION = "failed_precondition"
    OUT_OF_RANGE = "out_of_range"
    PERMISSION_DENIED = "permission_denied"
    UNAUTHENTICATED = "unauthenticated"
    RESOURCE_EXHAUSTED = "resource_exhausted"
    UNAVAILABLE = "unavailable"
    ABORTED = "aborted"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    INTERNAL = "internal"


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request: its path (``amount.minor_units``) and what is wrong."""

    field: str
    description: str


@dataclass(frozen=True)
class QuotaViolation:
    """One exhausted quota: whose (``partners/p1``) and which (``reads: 10/s``)."""

    subject: str
    description: str


class MeshError(Exception):
    """Base of every expected failure; carries a stable reason and partner-safe text."""

    kind: ErrorKind = ErrorKind.INTERNAL
    default_reason: str = "INTERNAL_ERROR"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata: dict[str, str] = dict(metadata or {})
        # Extra trailing metadata for the answer (e.g. the gateway's ratelimit-* headers).
        self.trailers: tuple[tuple[str, str], ...] = ()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reason={self.reason!r}, message={self.message!r})"


class InvalidArgument(MeshError):
    """The request is malformed; names every offending field."""

    kind = ErrorKind.INVALID_ARGUMENT
    default_reason = "FIELD_INVALID"

    def __init__(
        self,
        violations: list[FieldViolation] | FieldViolation,
        *,
        reason: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        self.violations = [violations] if isinstance(violations, FieldViolation) else list(violations)
        text = "; ".join(f"{v.field}: {v.description}" for v in self.violations)
        meta = {"field": self.violations[0].field} if self.violations else {}
        meta.update(metadata or {})
        super().__init__(f"invalid request: {text}", reason=reason, metadata=meta)

    @classmethod
    def field(cls, name: str, description: str, *, reason: str | None = None) -> InvalidArgument:
        """Shortcut for a single bad field."""
        return cls(FieldViolation(name, description), reason=reason)


class NotFound(MeshError):
    """The resource does not exist, or the caller may not know that it does."""

    kind = ErrorKind.NOT_FOUND
    default_reason = "RESOURCE_NOT_FOUND"


class AlreadyExists(MeshError):
    """A key was reused with different content (idempotency conflicts)."""

    kind = ErrorKind.ALREADY_EXISTS
    default_reason = "REQUEST_ID_REUSED"


class FailedPrecondition(MeshError):
    """The system is not in a state that allows the operation."""

    kind = ErrorKind.FAILED_PRECONDITION
    default_reason = "FAILED_PRECONDITION"


class OutOfRange(MeshError):
    """A position past what is kept (a stream cursor older than the retained events)."""

    kind = ErrorKind.OUT_OF_RANGE
    default_reason = "CURSOR_EXPIRED"


class PermissionDenied(MeshError):
    """The caller is known but not allowed to do this."""

    kind = ErrorKind.PERMISSION_DENIED
    default_reason = "INSUFFICIENT_SCOPE"


class Unauthenticated(MeshError):
    """The caller could not be authenticated."""

    kind = ErrorKind.UNAUTHENTICATED
    default_reason = "TOKEN_INVALID"


class ResourceExhausted(MeshError):
    """A quota or rate limit is exhausted; says when to retry."""

    kind = ErrorKind.RESOURCE_EXHAUSTED
    default_reason = "RATE_LIMIT_EXCEEDED"

    def __init__(
        self,
        message: str,
        *,
        retry_after_seconds: float | None = None,
        violations: list[QuotaViolation] | None = None,
        reason: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.retry_after_seconds = retry_after_seconds
        self.violations = list(violations or [])


# The reasons of UNAVAILABLE answers that say a store, a peer or an upstream did not answer:
# nothing is known of the call's outcome, and the same request may be sent again.
STORE_UNAVAILABLE = "STORE_UNAVAILABLE"
PEER_UNAVAILABLE = "PEER_UNAVAILABLE"
FAULT_REASONS = frozenset(
    {"SERVICE_UNAVAILABLE", STORE_UNAVAILABLE, PEER_UNAVAILABLE, "UPSTREAM_UNAVAILABLE", "UPSTREAM_TIMEOUT"}
)


class Unavailable(MeshError):
    """A dependency is down; the call may be retried later."""

    kind = ErrorKind.UNAVAILABLE
    default_reason = "SERVICE_UNAVAILABLE"

    def __init__(
        self,
        message: str,
        *,
        retry_after_seconds: float | None = None,
        reason: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.retry_after_seconds = retry_after_seconds


class Aborted(MeshError):
    """A concurrency conflict; the whole operation may be retried."""

    kind = ErrorKind.ABORTED
    default_reason = "CONCURRENT_MODIFICATION"


@dataclass
class FieldCollector:
    """Collects field violations and raises them together (AIP-193 ``BadRequest``)."""

    violations: list[FieldViolation] = field(default_factory=list)

    def add(self, name: str, description: str) -> None:
        """Record one bad field."""
        self.violations.append(FieldViolation(name, description))

    def check(self, condition: bool, name: str, description: str) -> bool:
        """Record a violation unless ``condition`` holds; returns ``condition``."""
        if not condition:
            self.add(name, description)
        return condition

    def raise_if_any(self) -> None:
        """Raise :class:`InvalidArgument` naming every recorded field."""
        if self.violations:
            raise InvalidArgument(self.violations)
