"""OpenBank Mesh partner SDK.

Talks to the mesh's gateway over gRPC with only ``grpcio``, ``protobuf``,
``googleapis-common-protos`` and the generated contract (``openbank.<service>.v1``):

- :func:`insecure_channel`, :func:`secure_channel` (TLS, mutual TLS);
- :class:`OpenBankClient`: client-credentials tokens, consents, the resumable payment stream,
  settlement reads; :class:`PartnerEvents`: the partner's event log as a stream that keeps its
  cursor, and aggregated polling; :class:`ConsentSession`: accounts, balances, transactions, funds
  confirmation and payments under one consent (authorization code + PKCE, or the decoupled
  flow's poll; refresh rotation);
- automatic idempotency keys, retries with jittered backoff on UNAVAILABLE only;
- typed errors (:class:`OpenBankError` and one subclass per status code) with reason, domain,
  metadata, ``retry_after``, quota and field violations;
- async iterators over every List rpc.
"""

from openbank_sdk.auth import (
    ClientCredentials,
    ClientCredentialsTokens,
    ConsentTokens,
    Pkce,
    TokenSet,
    TokenSource,
    challenge_for,
)
from openbank_sdk.channels import insecure_channel, open_channel, secure_channel, tls_credentials
from openbank_sdk.client import (
    ALL_PERMISSIONS,
    CONFIRM_FUNDS,
    INITIATE_PAYMENTS,
    PARTNER_WIDE_SCOPES,
    READ_ACCOUNTS,
    READ_BALANCES,
    READ_TRANSACTIONS,
    SCHEDULE_PAYMENTS,
    ConsentSession,
    Invoker,
    OpenBankClient,
    PendingConsent,
    PushedAuthorization,
    money,
    new_request_id,
)
from openbank_sdk.decoupled import DecoupledAuthorization
from openbank_sdk.errors import (
    Aborted,
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    Internal,
    InvalidArgument,
    NotFound,
    OpenBankError,
    OutOfRange,
    PermissionDenied,
    QuotaViolation,
    RateLimited,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    from_rpc_error,
)
from openbank_sdk.events import CursorStore, FileCursorStore, MemoryCursorStore, PartnerEvents
from openbank_sdk.pagination import collect, paginate
from openbank_sdk.retry import NO_RETRY, RetryPolicy, call_with_retry
from openbank_sdk.scheduling import DAILY, MONTHLY, WEEKLY

__version__ = "0.1.0"

__all__ = [
    "ALL_PERMISSIONS",
    "CONFIRM_FUNDS",
    "DAILY",
    "INITIATE_PAYMENTS",
    "MONTHLY",
    "NO_RETRY",
    "PARTNER_WIDE_SCOPES",
    "READ_ACCOUNTS",
    "READ_BALANCES",
    "READ_TRANSACTIONS",
    "SCHEDULE_PAYMENTS",
    "WEEKLY",
    "Aborted",
    "AlreadyExists",
    "ClientCredentials",
    "ClientCredentialsTokens",
    "ConsentSession",
    "ConsentTokens",
    "CursorStore",
    "DeadlineExceeded",
    "DecoupledAuthorization",
    "FailedPrecondition",
    "FieldViolation",
    "FileCursorStore",
    "Internal",
    "InvalidArgument",
    "Invoker",
    "MemoryCursorStore",
    "NotFound",
    "OpenBankClient",
    "OpenBankError",
    "OutOfRange",
    "PartnerEvents",
    "PendingConsent",
    "PermissionDenied",
    "Pkce",
    "PushedAuthorization",
    "QuotaViolation",
    "RateLimited",
    "RetryPolicy",
    "TokenSet",
    "TokenSource",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "call_with_retry",
    "challenge_for",
    "collect",
    "from_rpc_error",
    "insecure_channel",
    "money",
    "new_request_id",
    "open_channel",
    "paginate",
    "secure_channel",
    "tls_credentials",
]
