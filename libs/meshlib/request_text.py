"""Every string field of every request, checked as it enters a service.

A store cannot hold every string a caller can send: PostgreSQL refuses NUL in text (asyncpg
raises, the caller would see INTERNAL) while SQLite keeps it, and a value longer than its
``VARCHAR`` column fails on PostgreSQL and is kept whole by SQLite. So every service refuses
such input before any use, the same way on every store and deployment: INVALID_ARGUMENT,
reason FIELD_INVALID, a ``BadRequest`` naming each bad field (``amount.currency_code``,
``net_debit_caps[0].currency_code``).

The check walks the request by its descriptor, recursively, so no string field is forgotten:
a field's rule is looked up by ``message.field`` first, then by field name (the tables
below); a field no table names gets :data:`DEFAULT_RULE`, and a test fails the build for it
so that a new field is classified on purpose. The rules only bound what may reach a store;
each service's converters still apply their exact patterns (resource names, request ids,
currencies) and domain rules.

:class:`RequestTextInterceptor` applies it once per call in every service (see
:class:`meshlib.server.MeshServer`). The items of a batch are not checked there: each fails
alone, exactly as its single rpc would, so the batch's converter calls
:func:`check_request_text` per item (see :data:`PER_ITEM_FIELDS`).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import descriptor
from google.protobuf.message import Message

from meshlib.errors import FieldViolation, InvalidArgument
from meshlib.grpc_errors import WrappingInterceptor, wrap_handler


class TextKind(enum.Enum):
    """Which characters a string field may hold."""

    # Visible ASCII, no spaces: identifiers, resource names, codes, secrets, tokens, cursors.
    TOKEN = "token"
    # Printable Unicode on one line: names, descriptions, references, reasons, passwords.
    LINE = "line"
    # As LINE, plus tab and line breaks: documents such as a PEM public key.
    LINES = "lines"


@dataclass(frozen=True)
class TextRule:
    """A string field's characters and its longest value (in characters, as VARCHAR counts)."""

    kind: TextKind
    max_length: int


def _token(max_length: int) -> TextRule:
    return TextRule(TextKind.TOKEN, max_length)


def _line(max_length: int) -> TextRule:
    return TextRule(TextKind.LINE, max_length)


# A resource name: ``collection/{id}`` with an id of at most 64 characters.
_NAME = _token(128)

# By field name, wherever the field appears. Lengths are the columns' sizes in each
# service's tables.py where the value is stored, else the converters' own bounds.
FIELD_RULES: dict[str, TextRule] = {
    # Identifiers and resource names (the converters check their exact shapes).
    "request_id": _token(64),
    "name": _NAME,
    "parent": _NAME,
    "account": _NAME,
    "accounts": _NAME,
    "names": _NAME,
    "debit_account": _NAME,
    "credit_account": _NAME,
    "debtor_account": _NAME,
    "creditor_account": _NAME,
    "creditor_wallet": _NAME,
    "settlement_account": _NAME,
    "customer": _NAME,
    "partner": _NAME,
    "participant": _NAME,
    "payment": _NAME,
    "payer": _NAME,
    "payee": _NAME,
    "window": _NAME,
    "consent": _NAME,
    "actor": _NAME,
    "action_prefix": _token(64),
    "anchor_hash": _token(64),
    "currency_code": _token(3),
    "rate_limit_tier": _token(64),
    "allowed_scopes": _token(64),
    "scopes": _token(64),
    "tls_client_certificate_sha256": _token(64),
    "username": _token(64),
    "one_time_code": _token(16),
    "totp_secret": _token(128),
    "page_token": _token(1024),
    "after_cursor": _token(64),
    # The partner event log (openbank.events.v1).
    "ack_cursor": _token(64),
    "cursor": _token(64),
    "delivered_cursor": _token(64),
    "event_id": _token(64),
    "source_key": _token(128),
    "resource": _NAME,
    "consents": _NAME,
    "previous_state": _token(64),
    "status_reason": _token(64),
    "last_error": _token(64),
    "target": _token(255),
    "signed_event": _token(16384),
    "masked_account_number": _line(32),
    # Credit offers and lines (openbank.credit.v1) and their partner events.
    "credit_line": _NAME,
    "related": _NAME,
    # Account opening through a partner (openbank.identity.v1.OnboardingService): the
    # applicant is stored as JSON text; the bounds are the onboarding domain's own.
    "application": _NAME,
    "activation_code": _token(64),
    "customer_code": _token(16),  # the code the bank sent the applicant (8 digits today)
    "given_name": _line(100),
    "family_name": _line(100),
    "birth_date": _token(10),  # YYYY-MM-DD; the domain parses it
    "document_expiry_date": _token(10),  # YYYY-MM-DD; the domain parses it
    "email": _token(254),
    "country_code": _token(2),
    "document_type": _token(32),
    "document_number": _line(64),
    "method": _line(64),
    "terms_version": _token(64),
    "username_prefix": _token(64),
    # Payments' risk holds, disputes and kill switch (services/payment tables.py, converters).
    "note": _line(500),
    "authentication_code": _token(16),
    "capability": _token(32),
    "ip_address": _token(45),
    "device_id": _token(128),
    "user_agent": _line(256),
    # OAuth: client authentication, grants and tokens (RFC 6749, 7009, 7521, 7636).
    "client_id": _token(64),
    "client_secret": _token(256),
    "client_assertion": _token(8192),
    "client_assertion_type": _token(128),
    "code": _token(256),
    "code_verifier": _token(128),
    "code_challenge": _token(64),
    "code_challenge_method": _token(16),
    "refresh_token": _token(512),
    "token": _token(8192),
    "tokens": _token(8192),  # CheckTokenStatuses: a list of access tokens
    # The redirect flow (RFC 9126 PAR, RFC 6749 state): identity's authorization_requests.
    "redirect_uri": _token(512),
    "redirect_uris": _token(512),
    "request_uri": _token(128),
    "state": _token(256),
    # The decoupled flow (CIBA): identity's decoupled_authorizations.
    "login_hint": _token(64),
    "auth_req_id": _token(128),
    # The interbank clearing scheme (openbank.scheme.v1): pacs.008 identifiers and parties.
    "message_id": _token(35),
    "iban": _token(34),
    "scheme_account_id": _token(34),
    "debtor_agent": _token(11),
    "creditor_agent": _token(11),
    "agent_bic": _token(11),
    # Free text: printable Unicode, never NUL or other control characters.
    "display_name": _line(200),
    "password": _line(1024),
    "reason": _line(500),
    "description": _line(140),
    "reference": _line(128),
    "remittance_information": _line(140),
    "end_to_end_id": _line(35),
    "settlement_reference": _line(128),
    "binding_message": _line(64),
    "debtor_name": _line(140),
    "creditor_name": _line(140),
    # A PEM document has line breaks.
    "public_key_pem": TextRule(TextKind.LINES, 8192),
}

# Where one message's field is tighter than the name's rule elsewhere.
MESSAGE_FIELD_RULES: dict[str, TextRule] = {
    "openbank.account.v1.OpenAccountRequest.display_name": _line(100),
    "openbank.identity.v1.RegisterPartnerRequest.display_name": _line(100),
    "openbank.identity.v1.UpdatePartnerRequest.display_name": _line(100),
    # A partner's creditor at another bank: an IBAN may come in groups of four (its print
    # format, 42 characters at most), a scheme's account id may hold spaces, a name is free text.
    "openbank.payment.v1.ExternalCreditor.iban": _line(42),
    "openbank.payment.v1.ExternalCreditor.scheme_account_id": _line(34),
    "openbank.payment.v1.ExternalCreditor.name": _line(140),
    # Dynamic isolation's partner event: a CustomerCapabilityStatus name.
    "openbank.events.v1.CustomerCapabilityChange.status": _token(64),
}

# The items of a batch: each is checked by the batch's converter as its single rpc's request
# (its own error, naming the field as the single rpc would), so one bad item never fails the
# batch of other callers' items.
PER_ITEM_FIELDS: frozenset[str] = frozenset(
    {
        "openbank.account.v1.BatchCreateTransfersRequest.requests",
        "openbank.account.v1.BatchPostTransfersRequest.requests",
        "openbank.account.v1.BatchGetLedgerAccountsRequest.names",
        "openbank.settlement.v1.BatchReserveObligationsRequest.requests",
        "openbank.settlement.v1.BatchCommitObligationsRequest.requests",
    }
)

# The contract's requests are checked; standard services' (health) are not.
CONTRACT_PACKAGE_PREFIX = "openbank."

# A field no table names: still no control characters and a bounded length.
DEFAULT_RULE = _line(256)

_FORBIDDEN = {
    # C0 and C1 controls and DEL; line and paragraph separators; the bidirectional embedding,
    # override and isolate controls (they reorder what a person reads); byte order mark and
    # noncharacters; surrogates (a lone one cannot be stored as UTF-8).
    TextKind.LINE: re.compile(
        "[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff\ufffe\uffff\ud800-\udfff]"
    ),
    TextKind.LINES: re.compile(
        "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff\ufffe\uffff\ud800-\udfff]"
    ),
    TextKind.TOKEN: re.compile("[^\x21-\x7e]"),
}
_ALLOWED = {
    TextKind.TOKEN: "printable ASCII without spaces",
    TextKind.LINE: "printable text on one line",
    TextKind.LINES: "printable text",
}


def rule_of(field: descriptor.FieldDescriptor) -> TextRule:
    """The rule of one string field of the contract."""
    return MESSAGE_FIELD_RULES.get(field.full_name) or FIELD_RULES.get(field.name) or DEFAULT_RULE


def is_classified(field: descriptor.FieldDescriptor) -> bool:
    """Whether a table names the field (else it falls back to :data:`DEFAULT_RULE`)."""
    return field.full_name in MESSAGE_FIELD_RULES or field.name in FIELD_RULES


def string_problem(value: str, rule: TextRule) -> str | None:
    """What is wrong with ``value`` under ``rule``, or None when nothing is."""
    if len(value) > rule.max_length:
        return f"must be at most {rule.max_length} characters"
    if value.isascii() and value.isprintable() and (rule.kind is not TextKind.TOKEN or " " not in value):
        return None  # the common case, without a regex
    found = _FORBIDDEN[rule.kind].search(value)
    if found is None:
        return None
    return f"must hold {_ALLOWED[rule.kind]} only: character U+{ord(found.group()):04X} at position {found.start()}"


@dataclass(frozen=True)
class _Strings:
    name: str
    rule: TextRule
    repeated: bool


@dataclass(frozen=True)
class _Messages:
    name: str
    plan: _Plan
    repeated: bool


@dataclass
class _Plan:
    """What to read from one message type: its string fields and the messages that hold some."""

    strings: tuple[_Strings, ...] = ()
    messages: tuple[_Messages, ...] = ()
    empty: bool = False  # no string field at any depth: nothing to check


_PLANS: dict[str, _Plan] = {}


def _plan(message_type: descriptor.Descriptor) -> _Plan:
    known = _PLANS.get(message_type.full_name)
    if known is not None:
        return known
    plan = _Plan()
    _PLANS[message_type.full_name] = plan  # before the fields: a recursive type finds itself
    strings: list[_Strings] = []
    messages: list[_Messages] = []
    for field in message_type.fields:
        if field.full_name in PER_ITEM_FIELDS:
            continue
        repeated = field.is_repeated
        if field.type == descriptor.FieldDescriptor.TYPE_STRING:
            strings.append(_Strings(field.name, rule_of(field), repeated))
        elif field.type == descriptor.FieldDescriptor.TYPE_MESSAGE:
            if field.message_type.GetOptions().map_entry:
                raise NotImplementedError(f"{field.full_name}: map fields are not checked; use a repeated message")
            inner = _plan(field.message_type)
            if inner is plan or not inner.empty:
                messages.append(_Messages(field.name, inner, repeated))
    plan.strings, plan.messages = tuple(strings), tuple(messages)
    plan.empty = not strings and not messages
    return plan


def _walk(message: Any, plan: _Plan, prefix: str, found: list[FieldViolation]) -> None:
    for field in plan.strings:
        value = getattr(message, field.name)
        if not value:
            continue
        if field.repeated:
            for index, item in enumerate(value):
                problem = string_problem(item, field.rule)
                if problem:
                    found.append(FieldViolation(f"{prefix}{field.name}[{index}]", problem))
        else:
            problem = string_problem(value, field.rule)
            if problem:
                found.append(FieldViolation(f"{prefix}{field.name}", problem))
    for inner in plan.messages:
        if inner.repeated:
            for index, item in enumerate(getattr(message, inner.name)):
                _walk(item, inner.plan, f"{prefix}{inner.name}[{index}].", found)
        elif message.HasField(inner.name):
            _walk(getattr(message, inner.name), inner.plan, f"{prefix}{inner.name}.", found)


def text_violations(message: Message) -> list[FieldViolation]:
    """Every string field of ``message`` (recursively) that breaks its rule."""
    plan = _plan(message.DESCRIPTOR)
    if plan.empty:
        return []
    found: list[FieldViolation] = []
    _walk(message, plan, "", found)
    return found


def check_request_text(message: Message) -> None:
    """Raise INVALID_ARGUMENT (FIELD_INVALID) naming every string field that breaks its rule."""
    found = text_violations(message)
    if found:
        raise InvalidArgument(found)


def check_text(value: str, field: str) -> None:
    """Check one value of the field named ``field`` (a batch's repeated string items)."""
    problem = string_problem(value, FIELD_RULES.get(field, DEFAULT_RULE))
    if problem:
        raise InvalidArgument.field(field, problem)


class RequestTextInterceptor(WrappingInterceptor):
    """Checks the text of every request before the servicer sees it.

    Installed innermost, after authentication: a caller without a valid token learns nothing
    about its input. Handlers that take raw bytes (the gateway's proxy, which forwards them
    unread to the service that checks them) are left alone.
    """

    def wrap(
        self, handler: grpc.RpcMethodHandler | None, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        """Check the request of a unary-request rpc whose request is a protobuf message."""
        if handler is None or not (handler.unary_unary or handler.unary_stream):
            return handler
        message_type = getattr(handler.request_deserializer, "__self__", None)
        if not (isinstance(message_type, type) and issubclass(message_type, Message)):
            return handler
        if not message_type.DESCRIPTOR.full_name.startswith(CONTRACT_PACKAGE_PREFIX):
            return handler  # health and other standard services: nothing of theirs is stored
        if _plan(message_type.DESCRIPTOR).empty:
            return handler
        return wrap_handler(handler, _checking)


def _checking(behavior: Callable[..., Any]) -> Callable[..., Any]:
    if getattr(behavior, "_meshlib_streaming", False):

        async def streaming(request: Any, context: grpc.aio.ServicerContext) -> Any:
            check_request_text(request)
            async for item in behavior(request, context):
                yield item

        streaming._meshlib_streaming = True  # type: ignore[attr-defined]
        return streaming

    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        check_request_text(request)
        return await behavior(request, context)

    return unary
