"""What the contract promises, as data the contract tests check it against: the partner-facing
rpcs with their policies, the streaming rpcs, the rpcs each service must have, the error reasons
that must exist, and the gRPC codes a reason's comment may name."""

from __future__ import annotations

from openbank.common.v1 import consent_permission_pb2, options_pb2

NONE_AUTH = options_pb2.AUTHENTICATION_NONE
TOKEN_AUTH = options_pb2.AUTHENTICATION_ACCESS_TOKEN
CP = consent_permission_pb2
READ_ONLY = options_pb2.IDEMPOTENCY_READ_ONLY
REQUEST_ID = options_pb2.IDEMPOTENCY_REQUEST_ID
PROTOCOL = options_pb2.IDEMPOTENCY_PROTOCOL

# The partner-facing surface: rpc -> (authentication, scopes, consent permission, rate-limit
# class, idempotency). Exactly these rpcs are VISIBILITY_PUBLIC; the gateway routes nothing else.
PUBLIC_RPCS: dict[str, tuple[int, tuple[str, ...], int, str, int]] = {
    "openbank.identity.v1.TokenService.IssueToken": (
        NONE_AUTH,
        (),
        CP.CONSENT_PERMISSION_NONE,
        "token",
        PROTOCOL,
    ),
    "openbank.identity.v1.TokenService.RevokeToken": (
        NONE_AUTH,
        (),
        CP.CONSENT_PERMISSION_NONE,
        "token",
        PROTOCOL,
    ),
    "openbank.identity.v1.TokenService.GetJwks": (
        NONE_AUTH,
        (),
        CP.CONSENT_PERMISSION_NONE,
        "token",
        READ_ONLY,
    ),
    "openbank.identity.v1.ConsentService.CreateConsent": (
        TOKEN_AUTH,
        ("consents:write",),
        CP.CONSENT_PERMISSION_NONE,
        "consents",
        REQUEST_ID,
    ),
    "openbank.identity.v1.AuthorizationService.PushAuthorizationRequest": (
        TOKEN_AUTH,
        ("consents:write",),
        CP.CONSENT_PERMISSION_NONE,
        "consents",
        REQUEST_ID,
    ),
    "openbank.identity.v1.AuthorizationService.StartDecoupledAuthorization": (
        TOKEN_AUTH,
        ("consents:write",),
        CP.CONSENT_PERMISSION_NONE,
        "consents",
        REQUEST_ID,
    ),
    "openbank.identity.v1.ConsentService.GetConsent": (
        TOKEN_AUTH,
        ("consents:read",),
        CP.CONSENT_PERMISSION_NONE,
        "consents",
        READ_ONLY,
    ),
    "openbank.identity.v1.ConsentService.RevokeConsent": (
        TOKEN_AUTH,
        ("consents:write",),
        CP.CONSENT_PERMISSION_NONE,
        "consents",
        REQUEST_ID,
    ),
    "openbank.account.v1.AccountService.ListAccounts": (
        TOKEN_AUTH,
        ("accounts:read",),
        CP.CONSENT_PERMISSION_READ_ACCOUNTS,
        "reads",
        READ_ONLY,
    ),
    "openbank.account.v1.AccountService.GetAccount": (
        TOKEN_AUTH,
        ("accounts:read",),
        CP.CONSENT_PERMISSION_READ_ACCOUNTS,
        "reads",
        READ_ONLY,
    ),
    "openbank.account.v1.AccountService.GetBalance": (
        TOKEN_AUTH,
        ("accounts:read",),
        CP.CONSENT_PERMISSION_READ_BALANCES,
        "reads",
        READ_ONLY,
    ),
    "openbank.account.v1.AccountService.ListTransactions": (
        TOKEN_AUTH,
        ("accounts:read",),
        CP.CONSENT_PERMISSION_READ_TRANSACTIONS,
        "reads",
        READ_ONLY,
    ),
    "openbank.account.v1.AccountService.ConfirmFunds": (
        TOKEN_AUTH,
        ("funds:confirm",),
        CP.CONSENT_PERMISSION_CONFIRM_FUNDS,
        "reads",
        READ_ONLY,
    ),
    "openbank.payment.v1.PaymentService.CreatePayment": (
        TOKEN_AUTH,
        ("payments:write",),
        CP.CONSENT_PERMISSION_INITIATE_PAYMENTS,
        "payments",
        REQUEST_ID,
    ),
    "openbank.payment.v1.PaymentService.GetPayment": (
        TOKEN_AUTH,
        ("payments:read",),
        CP.CONSENT_PERMISSION_INITIATE_PAYMENTS,
        "reads",
        READ_ONLY,
    ),
    "openbank.payment.v1.PaymentService.ListPayments": (
        TOKEN_AUTH,
        ("payments:read",),
        CP.CONSENT_PERMISSION_INITIATE_PAYMENTS,
        "reads",
        READ_ONLY,
    ),
    "openbank.payment.v1.PaymentService.CancelPayment": (
        TOKEN_AUTH,
        ("payments:write",),
        CP.CONSENT_PERMISSION_INITIATE_PAYMENTS,
        "payments",
        REQUEST_ID,
    ),
    "openbank.payment.v1.PaymentService.CreateStandingOrder": (
        TOKEN_AUTH,
        ("payments:write",),
        CP.CONSENT_PERMISSION_INITIATE_PAYMENTS,
        "payments",
        REQUEST_ID,
    ),
    "openbank.payment.v1.PaymentService.GetStandingOrder": (
        TOKEN_AUTH,
        ("payments:read",),
        CP.CONSENT_PERMISSION_INITIATE_PAYMENTS,
        "reads",
        READ_ONLY,
    ),
    "openbank.payment.v1.PaymentService.ListStandingOrders": (
        TOKEN_AUTH,
        ("payments:read",),
        CP.CONSENT_PERMISSION_INITIATE_PAYMENTS,
        "reads",
        READ_ONLY,
    ),
    "openbank.payment.v1.PaymentService.CancelStandingOrder": (
        TOKEN_AUTH,
        ("payments:write",),
        CP.CONSENT_PERMISSION_INITIATE_PAYMENTS,
        "payments",
        REQUEST_ID,
    ),
    "openbank.payment.v1.MandateService.GetMandateUsage": (
        TOKEN_AUTH,
        ("payments:read",),
        CP.CONSENT_PERMISSION_INITIATE_PAYMENTS,
        "reads",
        READ_ONLY,
    ),
    "openbank.payment.v1.PaymentService.RefundPayment": (
        TOKEN_AUTH,
        ("payments:write",),
        CP.CONSENT_PERMISSION_NONE,
        "payments",
        REQUEST_ID,
    ),
    "openbank.payment.v1.PaymentService.WatchPayments": (
        TOKEN_AUTH,
        ("payments:read",),
        CP.CONSENT_PERMISSION_NONE,
        "streams",
        READ_ONLY,
    ),
    "openbank.payment.v1.DisputeService.ListDisputes": (
        TOKEN_AUTH,
        ("payments:read",),
        CP.CONSENT_PERMISSION_NONE,
        "reads",
        READ_ONLY,
    ),
    "openbank.payment.v1.DisputeService.GetDispute": (
        TOKEN_AUTH,
        ("payments:read",),
        CP.CONSENT_PERMISSION_NONE,
        "reads",
        READ_ONLY,
    ),
    "openbank.settlement.v1.SettlementService.GetPosition": (
        TOKEN_AUTH,
        ("settlement:read",),
        CP.CONSENT_PERMISSION_NONE,
        "settlement",
        READ_ONLY,
    ),
    "openbank.settlement.v1.SettlementService.ListSettlementWindows": (
        TOKEN_AUTH,
        ("settlement:read",),
        CP.CONSENT_PERMISSION_NONE,
        "settlement",
        READ_ONLY,
    ),
    "openbank.settlement.v1.SettlementService.GetSettlementReport": (
        TOKEN_AUTH,
        ("settlement:read",),
        CP.CONSENT_PERMISSION_NONE,
        "settlement",
        READ_ONLY,
    ),
    "openbank.events.v1.EventService.StreamEvents": (
        TOKEN_AUTH,
        ("events:read",),
        CP.CONSENT_PERMISSION_NONE,
        "streams",
        READ_ONLY,
    ),
    "openbank.events.v1.EventService.PollEvents": (
        TOKEN_AUTH,
        ("events:read",),
        CP.CONSENT_PERMISSION_NONE,
        "reads",
        REQUEST_ID,
    ),
    "openbank.events.v1.EventService.SetEventEndpoint": (
        TOKEN_AUTH,
        ("events:read",),
        CP.CONSENT_PERMISSION_NONE,
        "reads",
        REQUEST_ID,
    ),
    "openbank.events.v1.EventService.GetEventEndpoint": (
        TOKEN_AUTH,
        ("events:read",),
        CP.CONSENT_PERMISSION_NONE,
        "reads",
        READ_ONLY,
    ),
    "openbank.identity.v1.OnboardingService.SubmitApplication": (
        TOKEN_AUTH,
        ("customers:onboard",),
        CP.CONSENT_PERMISSION_NONE,
        "consents",
        REQUEST_ID,
    ),
    "openbank.identity.v1.OnboardingService.GetApplication": (
        TOKEN_AUTH,
        ("customers:onboard",),
        CP.CONSENT_PERMISSION_NONE,
        "consents",
        READ_ONLY,
    ),
    "openbank.credit.v1.CreditService.RequestCreditOffer": (
        TOKEN_AUTH,
        ("credit:offer",),
        CP.CONSENT_PERMISSION_CREDIT,
        "consents",
        REQUEST_ID,
    ),
    "openbank.credit.v1.CreditService.GetCreditOffer": (
        TOKEN_AUTH,
        ("credit:offer",),
        CP.CONSENT_PERMISSION_CREDIT,
        "reads",
        READ_ONLY,
    ),
    "openbank.credit.v1.CreditService.GetCreditLine": (
        TOKEN_AUTH,
        ("credit:offer",),
        CP.CONSENT_PERMISSION_CREDIT,
        "reads",
        READ_ONLY,
    ),
    "openbank.credit.v1.CreditService.GetCreditStatement": (
        TOKEN_AUTH,
        ("credit:offer",),
        CP.CONSENT_PERMISSION_CREDIT,
        "reads",
        READ_ONLY,
    ),
}

# Server streaming only.
STREAMING_RPCS = {"openbank.payment.v1.PaymentService.WatchPayments", "openbank.events.v1.EventService.StreamEvents"}

# Every rpc the first version of the contract promises (more may be added, none dropped).
EXPECTED_RPCS: dict[str, set[str]] = {
    "openbank.identity.v1.TokenService": {"IssueToken", "RevokeToken", "GetJwks", "IntrospectToken"},
    "openbank.identity.v1.ConsentService": {
        "CreateConsent",
        "GetConsent",
        "RevokeConsent",
        "AuthoriseConsent",
        "RejectConsent",
        "ListCustomerConsents",
        "PauseConsent",
        "ResumeConsent",
        "UpdateConsentLimits",
        "CustomerRevokeConsent",
    },
    "openbank.identity.v1.PartnerService": {
        "RegisterPartner",
        "GetPartner",
        "ListPartners",
        "UpdatePartner",
        "SuspendPartner",
        "ReactivatePartner",
        "RotateClientSecret",
    },
    "openbank.identity.v1.CustomerService": {
        "CreateCustomer",
        "GetCustomer",
        "AuthenticateCustomer",
        "UnlockCustomer",
    },
    "openbank.identity.v1.SigningKeyService": {"RotateSigningKey", "ListSigningKeys"},
    "openbank.identity.v1.AuthorizationService": {
        "PushAuthorizationRequest",
        "OpenAuthorizationRequest",
        "DecideAuthorizationRequest",
        "StartDecoupledAuthorization",
        "ListDecoupledAuthorizations",
        "DecideDecoupledAuthorization",
    },
    "openbank.account.v1.CustomerAccountService": {"ListCustomerAccounts", "GetConsentReadActivity"},
    "openbank.account.v1.AccountService": {
        "ListAccounts",
        "GetAccount",
        "GetBalance",
        "ListTransactions",
        "ConfirmFunds",
    },
    "openbank.account.v1.LedgerService": {
        "CreateTransfer",
        "PostTransfer",
        "VoidTransfer",
        "GetTransfer",
        "ListTransfers",
        "BatchCreateTransfers",
        "CreateLinkedTransfers",
        "PostLinkedTransfers",
        "VoidLinkedTransfers",
        "BatchPostTransfers",
        "BatchGetLedgerAccounts",
    },
    "openbank.account.v1.AccountAdminService": {
        "OpenAccount",
        "FundAccount",
        "FreezeAccount",
        "UnfreezeAccount",
        "GetLedgerTotals",
    },
    "openbank.payment.v1.PaymentService": {
        "CreatePayment",
        "GetPayment",
        "ListPayments",
        "CancelPayment",
        "CreateStandingOrder",
        "GetStandingOrder",
        "ListStandingOrders",
        "CancelStandingOrder",
        "RefundPayment",
        "WatchPayments",
    },
    "openbank.payment.v1.MandateService": {"GetMandateUsage", "GetCustomerMandateUsage"},
    "openbank.payment.v1.DisputeService": {"ListDisputes", "GetDispute", "OpenCustomerDispute"},
    "openbank.payment.v1.DisputeAdminService": {"OpenDispute", "DecideDispute", "SearchDisputes"},
    "openbank.payment.v1.CapabilityAdminService": {"SetCapability", "GetCapabilitySwitches"},
    "openbank.events.v1.EventService": {"StreamEvents", "PollEvents", "SetEventEndpoint", "GetEventEndpoint"},
    "openbank.events.v1.EventReceiverService": {"ReceiveEvent"},
    "openbank.events.v1.EventIntakeService": {"AppendEvents"},
    "openbank.payment.v1.PaymentAdminService": {
        "GetPaymentAuditTrail",
        "ListStuckPayments",
        "RecoverPayments",
        "SearchPayments",
        "OperatorRefundPayment",
    },
    "openbank.settlement.v1.SettlementService": {
        "GetPosition",
        "ListSettlementWindows",
        "GetSettlementReport",
    },
    "openbank.settlement.v1.PositionService": {
        "ReserveObligation",
        "CommitObligation",
        "ReleaseObligation",
        "GetObligation",
        "BatchReserveObligations",
        "BatchCommitObligations",
    },
    "openbank.settlement.v1.SettlementAdminService": {
        "RegisterParticipant",
        "UpdateNetDebitCap",
        "GetParticipant",
        "ListParticipants",
        "CloseSettlementWindow",
        "SettleSettlementWindow",
        "ReconcileSettlementWindow",
        "ExportSettlementReport",
    },
    "openbank.scheme.v1.ClearingService": {
        "SubmitCreditTransfer",
        "GetCreditTransferStatus",
        "ListReturns",
    },
}

REQUIRED_ERROR_REASONS = """
FIELD_INVALID REQUEST_ID_REUSED RESOURCE_NOT_FOUND PAGE_TOKEN_INVALID INTERNAL_ERROR SERVICE_UNAVAILABLE
DEADLINE_TOO_LONG TOKEN_MISSING TOKEN_INVALID TOKEN_EXPIRED TOKEN_REVOKED INVALID_CLIENT INVALID_GRANT
UNSUPPORTED_GRANT_TYPE INVALID_SCOPE INSUFFICIENT_SCOPE PARTNER_SUSPENDED CONSENT_REQUIRED
CONSENT_NOT_AUTHORISED CONSENT_EXPIRED CONSENT_REVOKED CONSENT_PAUSED CONSENT_PERMISSION_MISSING
CONSENT_READS_EXHAUSTED SCA_FAILED CUSTOMER_LOCKED PKCE_VERIFICATION_FAILED REFRESH_TOKEN_REUSED
CLIENT_CERTIFICATE_MISMATCH SIGNING_KEY_UNKNOWN INSUFFICIENT_FUNDS TRANSFER_EXISTS_WITH_DIFFERENT_FIELDS
CURRENCY_MISMATCH ACCOUNT_NOT_ACTIVE TRANSFER_NOT_PENDING TRANSFER_ALREADY_POSTED TRANSFER_ALREADY_VOIDED
TRANSFER_EXPIRED SAME_ACCOUNT NET_DEBIT_CAP_EXCEEDED OBLIGATION_EXISTS_WITH_DIFFERENT_FIELDS
OBLIGATION_NOT_RESERVED OBLIGATION_ALREADY_RELEASED OBLIGATION_ALREADY_COMMITTED WINDOW_NOT_OPEN
WINDOW_NOT_CLOSED WINDOW_ALREADY_SETTLED PARTICIPANT_NOT_ACTIVE PAYMENT_LIMIT_EXCEEDED CONSENT_LIMIT_EXCEEDED
PARTNER_LIMIT_EXCEEDED VELOCITY_RULE_TRIGGERED PAYMENT_NOT_CANCELLABLE BENEFICIARY_INVALID PAYMENT_NOT_REFUNDABLE
REFUND_AMOUNT_EXCEEDED EXECUTION_WINDOW_MISSED RATE_LIMIT_EXCEEDED
RATE_LIMITER_UNAVAILABLE MESSAGE_TOO_LARGE TOO_MANY_STREAMS METADATA_INVALID
REDIRECT_URI_NOT_REGISTERED REQUEST_URI_INVALID AUTHORIZATION_REQUEST_EXPIRED
AUTHORIZATION_PENDING SLOW_DOWN ACCESS_DENIED EXPIRED_TOKEN
""".split()

GRPC_CODES = (
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
)
