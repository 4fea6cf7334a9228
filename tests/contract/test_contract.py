"""Contract tests: the generated openbank.*.v1 descriptors obey the contract's rules.

No network, no servers. The descriptors come from the generated ``*_pb2`` modules under
``gen/openbank`` (what the runtime and the gateway read) and, for doc comments, from
``gen/openbank_descriptor_set.binpb`` (written by ``scripts/gen_protos.py`` with source info).
Each rule lives in ``contract_rules.py`` and is checked by its own test; the last tests feed
deliberately broken descriptors to the same rules to show they catch what they claim to.
"""

from __future__ import annotations

import importlib
import importlib.resources
import pkgutil
from collections.abc import Callable
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool

import openbank
from openbank.common.v1 import consent_permission_pb2, error_reason_pb2, money_pb2, options_pb2
from tests.contract import contract_rules as rules

ROOT = Path(__file__).resolve().parents[2]
PROTO_ROOT = ROOT / "protos"
DESCRIPTOR_SET = ROOT / "gen" / "openbank_descriptor_set.binpb"
GENERATE_HINT = "run: .venv/bin/python scripts/gen_protos.py"

Rule = Callable[[rules.Contract], list[str]]
FDP = descriptor_pb2.FieldDescriptorProto

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


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def _generated_modules() -> list:
    modules = []
    for info in pkgutil.walk_packages(openbank.__path__, prefix="openbank."):
        parts = info.name.split(".")
        if len(parts) == 4 and parts[2] == "v1" and parts[3].endswith("_pb2"):
            modules.append(importlib.import_module(info.name))
    return modules


def _module_files() -> list[descriptor_pb2.FileDescriptorProto]:
    return [descriptor_pb2.FileDescriptorProto.FromString(m.DESCRIPTOR.serialized_pb) for m in _generated_modules()]


@pytest.fixture(scope="module")
def contract() -> rules.Contract:
    files = _module_files()
    if not files:
        pytest.fail(f"no generated openbank.*.v1 modules under gen/openbank; {GENERATE_HINT}")
    return rules.Contract(files)


@pytest.fixture(scope="module")
def documented_contract() -> rules.Contract:
    if not DESCRIPTOR_SET.is_file():
        pytest.fail(f"{DESCRIPTOR_SET} missing; {GENERATE_HINT}")
    descriptor_set = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR_SET.read_bytes())
    return rules.Contract(list(descriptor_set.file))


def _assert_clean(rule: Rule, contract: rules.Contract) -> None:
    problems = rule(contract)
    assert not problems, f"{rule.__name__} ({(rule.__doc__ or '').strip()}):\n  " + "\n  ".join(problems)


def _normalized(file: descriptor_pb2.FileDescriptorProto) -> descriptor_pb2.FileDescriptorProto:
    """The file without what only descriptor sets carry (source info, json_name)."""
    copy = descriptor_pb2.FileDescriptorProto()
    copy.CopyFrom(file)
    copy.ClearField("source_code_info")

    def strip(messages) -> None:
        for message in messages:
            for f in (*message.field, *message.extension):
                f.ClearField("json_name")
            strip(message.nested_type)

    strip(copy.message_type)
    for f in copy.extension:
        f.ClearField("json_name")
    return copy


def _policies(contract: rules.Contract) -> dict[str, options_pb2.MethodPolicy]:
    return {m.full_name: p for m in contract.methods() if (p := m.policy()) is not None}


# ---------------------------------------------------------------------------------------------
# The generated code is the contract
# ---------------------------------------------------------------------------------------------


def test_every_proto_file_is_generated(contract: rules.Contract) -> None:
    sources = sorted(p.relative_to(PROTO_ROOT).as_posix() for p in (PROTO_ROOT / "openbank").rglob("*.proto"))
    generated = sorted(f.name for f in contract.openbank_files)
    assert generated == sources, f"gen/ does not match protos/; {GENERATE_HINT}"


def test_generated_code_is_up_to_date(contract: rules.Contract, tmp_path: Path) -> None:
    """Compile protos/ now and compare with what the generated modules carry."""
    from grpc_tools import protoc

    wkt = Path(str(importlib.resources.files("grpc_tools") / "_proto"))
    out = tmp_path / "fresh.binpb"
    sources = sorted(p.relative_to(PROTO_ROOT).as_posix() for p in (PROTO_ROOT / "openbank").rglob("*.proto"))
    status = protoc.main(["protoc", f"-I{PROTO_ROOT}", f"-I{wkt}", f"--descriptor_set_out={out}", *sources])
    assert status == 0, "protoc failed on protos/"
    fresh = {f.name: _normalized(f) for f in descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file}
    stale = [f.name for f in contract.openbank_files if fresh.get(f.name) != _normalized(f)]
    assert not stale, f"generated code is stale for {stale}; {GENERATE_HINT}"


def test_descriptor_set_matches_generated_modules(
    contract: rules.Contract, documented_contract: rules.Contract
) -> None:
    modules = {f.name: f for f in contract.openbank_files}
    problems = []
    for file in documented_contract.openbank_files:
        module = modules.get(file.name)
        if module is None or _normalized(module) != _normalized(file):
            problems.append(file.name)
    missing = set(modules) - {f.name for f in documented_contract.openbank_files}
    assert not problems and not missing, f"descriptor set out of date ({problems or sorted(missing)}); {GENERATE_HINT}"


def test_policy_extension_api_for_the_runtime() -> None:
    """libs/meshlib/policy.py reads `options_pb2.policy` from MethodOptions: keep that API stable."""
    extension = options_pb2.policy
    assert extension.full_name == "openbank.common.v1.policy"
    assert extension.number == 51001
    assert extension.containing_type.full_name == "google.protobuf.MethodOptions"
    assert extension.message_type.full_name == "openbank.common.v1.MethodPolicy"
    assert [f.name for f in options_pb2.MethodPolicy.DESCRIPTOR.fields] == [
        "visibility",
        "authentication",
        "scopes",
        "consent_permission",
        "rate_limit_class",
        "idempotency",
    ]


# ---------------------------------------------------------------------------------------------
# One test per rule, over the real contract
# ---------------------------------------------------------------------------------------------


def test_every_rpc_has_a_complete_policy(contract: rules.Contract) -> None:
    _assert_clean(rules.policy_present_and_complete, contract)


def test_scopes_are_known_and_fit_visibility(contract: rules.Contract) -> None:
    _assert_clean(rules.scopes_known_and_fit_visibility, contract)


def test_rate_limit_class_fits_visibility(contract: rules.Contract) -> None:
    _assert_clean(rules.rate_limit_class_fits_visibility, contract)


def test_internal_rpcs_are_not_consent_bound(contract: rules.Contract) -> None:
    _assert_clean(rules.internal_rpcs_not_consent_bound, contract)


def test_request_id_rpcs_have_request_id_field_1(contract: rules.Contract) -> None:
    _assert_clean(rules.request_id_rpcs_have_request_id, contract)


def test_protocol_idempotency_only_in_token_service(contract: rules.Contract) -> None:
    _assert_clean(rules.protocol_idempotency_only_in_token_service, contract)


def test_list_rpcs_paginate(contract: rules.Contract) -> None:
    _assert_clean(rules.list_rpcs_paginate, contract)


def test_enums_have_unspecified_zero_value(contract: rules.Contract) -> None:
    _assert_clean(rules.enums_have_unspecified_zero, contract)


def test_no_floating_point_fields(contract: rules.Contract) -> None:
    _assert_clean(rules.no_floating_point, contract)


def test_amount_limit_cap_fields_are_money(contract: rules.Contract) -> None:
    _assert_clean(rules.money_fields_are_money, contract)


def test_time_fields_are_timestamps(contract: rules.Contract) -> None:
    _assert_clean(rules.time_fields_are_timestamps, contract)


def test_packages_match_directories(contract: rules.Contract) -> None:
    _assert_clean(rules.packages_match_directories, contract)


def test_imports_stay_inside_boundaries(contract: rules.Contract) -> None:
    _assert_clean(rules.imports_stay_inside_boundaries, contract)


def test_every_rpc_has_its_own_request_and_response(contract: rules.Contract) -> None:
    _assert_clean(rules.rpcs_have_own_request_response, contract)


def test_everything_is_documented(documented_contract: rules.Contract) -> None:
    _assert_clean(rules.everything_documented, documented_contract)


# ---------------------------------------------------------------------------------------------
# The public surface and the promised rpcs
# ---------------------------------------------------------------------------------------------


def test_public_rpcs_are_exactly_the_partner_surface(contract: rules.Contract) -> None:
    public = {name for name, p in _policies(contract).items() if p.visibility == options_pb2.VISIBILITY_PUBLIC}
    unexpected = sorted(public - set(PUBLIC_RPCS))
    missing = sorted(set(PUBLIC_RPCS) - public)
    assert not unexpected, f"rpcs PUBLIC that must be INTERNAL: {unexpected}"
    assert not missing, f"partner rpcs missing or not PUBLIC: {missing}"


@pytest.mark.parametrize("rpc", sorted(PUBLIC_RPCS))
def test_public_rpc_policy(contract: rules.Contract, rpc: str) -> None:
    policy = _policies(contract).get(rpc)
    assert policy is not None, f"{rpc}: missing or without policy"
    authentication, scopes, permission, rate_limit_class, idempotency = PUBLIC_RPCS[rpc]
    actual = (
        policy.authentication,
        tuple(sorted(policy.scopes)),
        policy.consent_permission,
        policy.rate_limit_class,
        policy.idempotency,
    )
    assert actual == (authentication, tuple(sorted(scopes)), permission, rate_limit_class, idempotency), (
        f"{rpc}: policy {actual} differs from the partner contract "
        f"{(authentication, scopes, permission, rate_limit_class, idempotency)}"
    )


def test_streaming_rpcs(contract: rules.Contract) -> None:
    problems = []
    for m in contract.methods():
        if m.method.client_streaming:
            problems.append(f"{m.full_name}: client streaming is not part of the contract")
        if m.method.server_streaming != (m.full_name in STREAMING_RPCS):
            kind = "server streaming" if m.full_name in STREAMING_RPCS else "unary"
            problems.append(f"{m.full_name}: must be {kind}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("service", sorted(EXPECTED_RPCS))
def test_promised_rpcs_exist(contract: rules.Contract, service: str) -> None:
    present = {m.method.name for m in contract.methods() if m.service_name == service}
    missing = sorted(EXPECTED_RPCS[service] - present)
    assert not missing, f"{service}: missing rpcs {missing}"


def test_error_reasons(documented_contract: rules.Contract) -> None:
    names = {v.name for v in error_reason_pb2.ErrorReason.DESCRIPTOR.values}
    missing = sorted(r for r in REQUIRED_ERROR_REASONS if f"ERROR_REASON_{r}" not in names)
    assert not missing, f"ErrorReason lacks {missing}"
    assert "ERROR_REASON_ACCOUNT_NOT_IN_CONSENT" not in names, "outside-consent accounts are RESOURCE_NOT_FOUND"
    # Each reason's doc comment names the gRPC code that carries it.
    file = next(f for f in documented_contract.files if f.name == "openbank/common/v1/error_reason.proto")
    enum_index = [e.name for e in file.enum_type].index("ErrorReason")
    comments = {tuple(loc.path): loc.leading_comments for loc in file.source_code_info.location}
    undocumented = [
        value.name
        for index, value in enumerate(file.enum_type[enum_index].value)
        if index > 0 and not any(code in comments.get((5, enum_index, 2, index), "") for code in GRPC_CODES)
    ]
    assert not undocumented, f"ErrorReason values whose comment names no gRPC code: {undocumented}"


# ---------------------------------------------------------------------------------------------
# The checks are honest: broken descriptors, built in memory, are caught
# ---------------------------------------------------------------------------------------------

SAMPLE_FILE = "openbank/sample/v1/sample.proto"


def _policy(**overrides: object) -> options_pb2.MethodPolicy:
    values: dict[str, object] = {
        "visibility": options_pb2.VISIBILITY_INTERNAL,
        "authentication": options_pb2.AUTHENTICATION_ACCESS_TOKEN,
        "scopes": ["ledger:read"],
        "consent_permission": CP.CONSENT_PERMISSION_NONE,
        "rate_limit_class": "internal",
        "idempotency": options_pb2.IDEMPOTENCY_READ_ONLY,
    }
    values.update(overrides)
    return options_pb2.MethodPolicy(**values)  # type: ignore[arg-type]


def _sample_file() -> descriptor_pb2.FileDescriptorProto:
    """A small, valid, fully documented file that passes every rule."""
    fdp = descriptor_pb2.FileDescriptorProto(name=SAMPLE_FILE, package="openbank.sample.v1", syntax="proto3")
    fdp.dependency.extend(["openbank/common/v1/options.proto", "openbank/common/v1/money.proto"])
    request = fdp.message_type.add(name="GetThingRequest")
    request.field.add(name="name", number=1, type=FDP.TYPE_STRING, label=FDP.LABEL_OPTIONAL)
    response = fdp.message_type.add(name="GetThingResponse")
    response.field.add(
        name="amount",
        number=1,
        type=FDP.TYPE_MESSAGE,
        type_name=".openbank.common.v1.Money",
        label=FDP.LABEL_OPTIONAL,
    )
    enum = fdp.enum_type.add(name="ThingState")
    enum.value.add(name="THING_STATE_UNSPECIFIED", number=0)
    enum.value.add(name="THING_STATE_READY", number=1)
    service = fdp.service.add(name="SampleService")
    method = service.method.add(
        name="GetThing",
        input_type=".openbank.sample.v1.GetThingRequest",
        output_type=".openbank.sample.v1.GetThingResponse",
    )
    method.options.Extensions[options_pb2.policy].CopyFrom(_policy())
    _document_everything(fdp)
    return fdp


def _document_everything(fdp: descriptor_pb2.FileDescriptorProto) -> None:
    fdp.ClearField("source_code_info")
    for path, element in rules._documented_elements(fdp):
        location = fdp.source_code_info.location.add()
        location.path.extend(path)
        location.span.extend([0, 0, 0])
        location.leading_comments = f" Doc of {element}.\n"


def _method(fdp: descriptor_pb2.FileDescriptorProto) -> descriptor_pb2.MethodDescriptorProto:
    return fdp.service[0].method[0]


def _through_pool(fdp: descriptor_pb2.FileDescriptorProto) -> rules.Contract:
    """Build the file in a fresh DescriptorPool (proving it is a valid descriptor), then check what
    the pool hands back, with the original source info (pools keep no comments)."""
    pool = descriptor_pool.DescriptorPool()
    for module in (descriptor_pb2, consent_permission_pb2, options_pb2, money_pb2):
        pool.Add(descriptor_pb2.FileDescriptorProto.FromString(module.DESCRIPTOR.serialized_pb))
    for dependency in fdp.dependency:
        if dependency.startswith("google/api/"):
            pool.Add(descriptor_pb2.FileDescriptorProto(name=dependency, package="google.api", syntax="proto3"))
    pool.Add(fdp)
    built = descriptor_pb2.FileDescriptorProto()
    pool.FindFileByName(fdp.name).CopyToProto(built)
    built.source_code_info.CopyFrom(fdp.source_code_info)
    return rules.Contract([built])


def test_sample_file_passes_every_rule() -> None:
    contract = _through_pool(_sample_file())
    for rule in (*rules.ALL_RULES, rules.everything_documented):
        assert rule(contract) == [], rule.__name__


def test_checker_catches_a_missing_policy_option() -> None:
    fdp = _sample_file()
    _method(fdp).ClearField("options")
    contract = _through_pool(fdp)
    # The rpc exists in the pool, without options...
    assert contract.files[0].service[0].method[0].name == "GetThing"
    # ...and the rule names it.
    assert rules.policy_present_and_complete(contract) == [
        "openbank.sample.v1.SampleService.GetThing: no (openbank.common.v1.policy) option"
    ]


def _set_policy(**overrides: object) -> Callable[[descriptor_pb2.FileDescriptorProto], None]:
    def mutate(fdp: descriptor_pb2.FileDescriptorProto) -> None:
        _method(fdp).options.Extensions[options_pb2.policy].CopyFrom(_policy(**overrides))

    return mutate


def _add_field(message: int, **kwargs: object) -> Callable[[descriptor_pb2.FileDescriptorProto], None]:
    def mutate(fdp: descriptor_pb2.FileDescriptorProto) -> None:
        fdp.message_type[message].field.add(label=FDP.LABEL_OPTIONAL, **kwargs)
        _document_everything(fdp)

    return mutate


def _rename_method(name: str) -> Callable[[descriptor_pb2.FileDescriptorProto], None]:
    def mutate(fdp: descriptor_pb2.FileDescriptorProto) -> None:
        _method(fdp).name = name

    return mutate


def _drop_unspecified(fdp: descriptor_pb2.FileDescriptorProto) -> None:
    enum = fdp.enum_type[0]
    enum.value[0].name = "THING_STATE_NEW"
    _document_everything(fdp)


def _drop_a_comment(fdp: descriptor_pb2.FileDescriptorProto) -> None:
    locations = list(fdp.source_code_info.location)
    fdp.source_code_info.ClearField("location")
    fdp.source_code_info.location.extend(loc for loc in locations if list(loc.path) != [4, 1, 2, 0])


def _import_googleapis(fdp: descriptor_pb2.FileDescriptorProto) -> None:
    fdp.dependency.append("google/api/annotations.proto")


BROKEN = {
    "policy without idempotency": (
        _set_policy(idempotency=options_pb2.IDEMPOTENCY_UNSPECIFIED),
        rules.policy_present_and_complete,
        "SampleService.GetThing: policy.idempotency unset",
    ),
    "policy with unknown rate-limit class": (
        _set_policy(rate_limit_class="bulk"),
        rules.policy_present_and_complete,
        "SampleService.GetThing: policy.rate_limit_class 'bulk'",
    ),
    "public rpc in the internal rate-limit class": (
        _set_policy(visibility=options_pb2.VISIBILITY_PUBLIC, scopes=["accounts:read"]),
        rules.rate_limit_class_fits_visibility,
        "SampleService.GetThing: PUBLIC rpc with rate_limit_class 'internal'",
    ),
    "internal rpc outside the internal rate-limit class": (
        _set_policy(rate_limit_class="reads"),
        rules.rate_limit_class_fits_visibility,
        "SampleService.GetThing: INTERNAL rpc with rate_limit_class 'reads'",
    ),
    "internal scope on a public rpc": (
        _set_policy(visibility=options_pb2.VISIBILITY_PUBLIC, rate_limit_class="reads"),
        rules.scopes_known_and_fit_visibility,
        "SampleService.GetThing: scope 'ledger:read' does not fit visibility VISIBILITY_PUBLIC",
    ),
    "REQUEST_ID without request_id": (
        _set_policy(idempotency=options_pb2.IDEMPOTENCY_REQUEST_ID),
        rules.request_id_rpcs_have_request_id,
        "GetThing: IDEMPOTENCY_REQUEST_ID but openbank.sample.v1.GetThingRequest has no request_id",
    ),
    "PROTOCOL outside TokenService": (
        _set_policy(idempotency=options_pb2.IDEMPOTENCY_PROTOCOL),
        rules.protocol_idempotency_only_in_token_service,
        "SampleService.GetThing: IDEMPOTENCY_PROTOCOL outside",
    ),
    "List rpc without pagination": (
        _rename_method("ListThings"),
        rules.list_rpcs_paginate,
        "SampleService.ListThings: openbank.sample.v1.GetThingRequest lacks page_size",
    ),
    "enum without UNSPECIFIED zero": (
        _drop_unspecified,
        rules.enums_have_unspecified_zero,
        "openbank.sample.v1.ThingState: first value must be THING_STATE_UNSPECIFIED = 0",
    ),
    "double field": (
        _add_field(1, name="ratio", number=2, type=FDP.TYPE_DOUBLE),
        rules.no_floating_point,
        "openbank.sample.v1.GetThingResponse.ratio: TYPE_DOUBLE field",
    ),
    "amount as an integer": (
        _add_field(1, name="fee_amount", number=3, type=FDP.TYPE_INT64),
        rules.money_fields_are_money,
        "openbank.sample.v1.GetThingResponse.fee_amount: must be a singular openbank.common.v1.Money",
    ),
    "time as a string": (
        _add_field(1, name="create_time", number=4, type=FDP.TYPE_STRING),
        rules.time_fields_are_timestamps,
        "openbank.sample.v1.GetThingResponse.create_time: must be a google.protobuf.Timestamp",
    ),
    "googleapis import": (
        _import_googleapis,
        rules.imports_stay_inside_boundaries,
        "openbank/sample/v1/sample.proto: imports google/api/annotations.proto",
    ),
    "rpc with a foreign request type": (
        _rename_method("FindThing"),
        rules.rpcs_have_own_request_response,
        "SampleService.FindThing: uses openbank.sample.v1.GetThingRequest, expected",
    ),
    "field without doc comment": (
        _drop_a_comment,
        rules.everything_documented,
        "field openbank.sample.v1.GetThingResponse.amount has no leading doc comment",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_checker_catches(case: str) -> None:
    mutate, rule, expected = BROKEN[case]
    fdp = _sample_file()
    mutate(fdp)
    problems = rule(_through_pool(fdp))
    assert any(expected in p for p in problems), f"{rule.__name__} missed {case!r}: {problems}"
