"""Typed exceptions for the mesh's rich gRPC errors.

Every error the mesh sends is a ``google.rpc.Status`` carried in the ``grpc-status-details-bin``
trailer, with an ``ErrorInfo`` (a stable ``reason`` such as ``"INSUFFICIENT_FUNDS"``, the
``domain`` and string ``metadata``) and, where they fit, ``RetryInfo``, ``QuotaFailure`` and
``BadRequest``. :func:`from_rpc_error` decodes all of it into one :class:`OpenBankError`
subclass per status code, so partners write ``except NotFound`` and read ``error.reason``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

STATUS_DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True)
class FieldViolation:
    """One bad request field (``google.rpc.BadRequest.FieldViolation``)."""

    field: str
    description: str


@dataclass(frozen=True)
class QuotaViolation:
    """One exhausted quota (``google.rpc.QuotaFailure.Violation``)."""

    subject: str
    description: str


class OpenBankError(Exception):
    """An rpc failed; the mesh's structured error details, decoded.

    Attributes:
        code: the gRPC status code.
        message: the human-readable status message (never parse it; use ``reason``).
        reason: the ``ErrorInfo.reason`` (an ``ErrorReason`` name without its prefix), or "".
        domain: the ``ErrorInfo.domain``, e.g. ``"identity.openbank"``, or "".
        metadata: the ``ErrorInfo.metadata`` (e.g. ``resource_name``, ``required_scopes``).
        retry_after: seconds to wait before retrying, from ``RetryInfo`` (or the
            ``ratelimit-reset`` trailer), or None when the mesh gave no delay.
        quota_violations: the ``QuotaFailure`` violations.
        field_violations: the ``BadRequest`` field violations.
        trailers: the response's trailing metadata (text values only), e.g. ``ratelimit-*``.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str = "",
        domain: str = "",
        metadata: dict[str, str] | None = None,
        retry_after: float | None = None,
        quota_violations: tuple[QuotaViolation, ...] = (),
        field_violations: tuple[FieldViolation, ...] = (),
        trailers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{code.name} {reason or '-'}: {message}")
        self.code = code
        self.message = message
        self.reason = reason
        self.domain = domain
        self.metadata = dict(metadata or {})
        self.retry_after = retry_after
        self.quota_violations = quota_violations
        self.field_violations = field_violations
        self.trailers = dict(trailers or {})

    @property
    def retryable(self) -> bool:
        """Whether the SDK retries this error on its own (UNAVAILABLE only)."""
        return self.code == grpc.StatusCode.UNAVAILABLE


class InvalidArgument(OpenBankError):
    """INVALID_ARGUMENT: fix the request (see ``field_violations``); do not retry it unchanged."""


class NotFound(OpenBankError):
    """NOT_FOUND: the resource does not exist or is outside the caller's consent."""


class AlreadyExists(OpenBankError):
    """ALREADY_EXISTS, e.g. REQUEST_ID_REUSED: the idempotency key was used with another payload."""


class PermissionDenied(OpenBankError):
    """PERMISSION_DENIED: scope, partner status, consent state or permission."""


class Unauthenticated(OpenBankError):
    """UNAUTHENTICATED: missing, invalid, expired or revoked token, or bad client credentials."""


class FailedPrecondition(OpenBankError):
    """FAILED_PRECONDITION: a business rule refused the call (limits, funds, state)."""


class RateLimited(OpenBankError):
    """RESOURCE_EXHAUSTED: a rate limit, the consent's daily reads or the stream cap.

    ``retry_after`` says when to try again; ``quota_violations`` name the quota.
    """


class Unavailable(OpenBankError):
    """UNAVAILABLE: transient; the SDK already retried with backoff before raising this."""


class OutOfRange(OpenBankError):
    """OUT_OF_RANGE, e.g. CURSOR_EXPIRED for a WatchPayments resume cursor."""


class Unimplemented(OpenBankError):
    """UNIMPLEMENTED: the rpc does not exist at this endpoint (or is internal to the mesh)."""


class DeadlineExceeded(OpenBankError):
    """DEADLINE_EXCEEDED: the call's deadline passed before an answer arrived."""


class Aborted(OpenBankError):
    """ABORTED: a concurrency conflict; retry the whole operation."""


class Internal(OpenBankError):
    """INTERNAL or UNKNOWN: a failure inside the mesh; ``metadata['trace_id']`` helps support."""


_CLASSES: dict[grpc.StatusCode, type[OpenBankError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.RESOURCE_EXHAUSTED: RateLimited,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.OUT_OF_RANGE: OutOfRange,
    grpc.StatusCode.UNIMPLEMENTED: Unimplemented,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.ABORTED: Aborted,
    grpc.StatusCode.INTERNAL: Internal,
    grpc.StatusCode.UNKNOWN: Internal,
}


def error_class(code: grpc.StatusCode) -> type[OpenBankError]:
    """The exception class the SDK raises for a status code."""
    return _CLASSES.get(code, OpenBankError)


def _duration_seconds(duration: Any) -> float:
    return duration.seconds + duration.nanos / 1e9


def decode_status(code: grpc.StatusCode, message: str, trailing: Any) -> OpenBankError:
    """Build the typed error from a status code, its message and the trailing metadata."""
    details: dict[str, Any] = {}
    texts: dict[str, str] = {}
    for key, value in trailing or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            details["status"] = value
        elif isinstance(value, str):
            texts[key] = value
    fields: dict[str, Any] = {"trailers": texts}
    if "status" in details:
        status = status_pb2.Status.FromString(details["status"])
        message = status.message or message
        quota: list[QuotaViolation] = []
        bad: list[FieldViolation] = []
        for packed in status.details:
            if packed.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                packed.Unpack(info)
                fields.update(reason=info.reason, domain=info.domain, metadata=dict(info.metadata))
            elif packed.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry = error_details_pb2.RetryInfo()
                packed.Unpack(retry)
                fields["retry_after"] = _duration_seconds(retry.retry_delay)
            elif packed.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
                failure = error_details_pb2.QuotaFailure()
                packed.Unpack(failure)
                quota.extend(QuotaViolation(v.subject, v.description) for v in failure.violations)
            elif packed.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                request = error_details_pb2.BadRequest()
                packed.Unpack(request)
                bad.extend(FieldViolation(v.field, v.description) for v in request.field_violations)
        fields["quota_violations"] = tuple(quota)
        fields["field_violations"] = tuple(bad)
    if "retry_after" not in fields and texts.get("ratelimit-reset", "").isdigit():
        fields["retry_after"] = float(texts["ratelimit-reset"])
    return error_class(code)(code, message, **fields)


def from_rpc_error(error: grpc.RpcError) -> OpenBankError:
    """Decode a failed call (``grpc.aio.AioRpcError`` or a sync ``grpc.RpcError``)."""
    code = error.code() if callable(getattr(error, "code", None)) else grpc.StatusCode.UNKNOWN
    details = error.details() if callable(getattr(error, "details", None)) else ""
    trailing = error.trailing_metadata() if callable(getattr(error, "trailing_metadata", None)) else ()
    decoded = decode_status(code, details or "", trailing)
    decoded.__cause__ = error
    return decoded
